"""Damaged stores and existing files (issue 11): ``store check`` names damage, ``store list`` and ``store stats``
go on past it, and ``pull -o`` / ``export`` never replace a file they did not write unless told to."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from slimship.cli.main import main
from slimship.package.format import sha256_file, write_package
from slimship.package.store import Store
from tests.package.conftest import manifest, tiny_graph


@pytest.fixture
def store(tmp_path) -> Path:
    """A folder store holding a@1, a@2 and b@1 (three different tiny packages)."""
    graph = tiny_graph()
    for name, version, tag in (("a", "1", "x"), ("a", "2", "y"), ("b", "1", "z")):
        m = manifest()
        m["model"]["class_names"] = [f"{tag}{k}" for k in range(3)]
        write_package(tmp_path / f"{name}{version}.slim", m, {"model.onnx": graph})
        Store(tmp_path / "store").push(tmp_path / f"{name}{version}.slim", name=name, version=version)
    return tmp_path / "store"


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _record(store: Path, ref: str) -> Path:
    return store / "packages" / f"{(store / 'refs' / ref).read_text().strip()}.json"


def test_one_bad_ref_does_not_hide_the_rest_of_the_list(capsys, store):
    (store / "refs" / "a" / "2").write_text("not a package id\n")
    code, out, err = run(capsys, "store", "list", store)
    assert code == 1 and "a@1" in out and "b@1" in out and "a@2" not in out  # before: nothing but an error
    assert len(err.strip().splitlines()) == 1 and "warning: skipped damaged entries: ref a@2 is damaged" in err
    assert "slimship store check" in err
    code, out, _ = run(capsys, "store", "list", store, "--json")
    assert code == 1 and [e["name"] + "@" + e["version"] for e in json.loads(out)] == ["a@1", "b@1"]


def test_stats_names_damage_instead_of_reporting_a_healthy_store(capsys, store):
    blob = json.loads(_record(store, "b/1").read_text())["parts"][0]["blob"]
    record = json.loads(_record(store, "a/1").read_text())
    (store / "blobs" / "sha256" / record["header"]["blob"]).unlink()  # a@1 lost its header blob
    code, out, err = run(capsys, "store", "stats", store)
    assert code == 1 and "DAMAGED: 1 problem," in out and "is missing" in out, out
    stats = json.loads(run(capsys, "store", "stats", store, "--json")[1])
    assert stats["problems"] == [f"package sha256:{record['package'][:16]}…: blob "
                                 f"sha256:{record['header']['blob'][:16]}… is missing"]
    assert blob  # the shared graph blob is still there


def test_store_check_names_every_kind_of_damage(capsys, store, tmp_path):
    code, out, _ = run(capsys, "store", "check", store)
    assert code == 0 and "intact (3 versions, 3 packages" in out
    a1, a2, b1 = (json.loads(_record(store, r).read_text()) for r in ("a/1", "a/2", "b/1"))
    blobs = store / "blobs" / "sha256"
    corrupt = blobs / a1["header"]["blob"]  # same size, one bit flipped: only re-hashing finds it
    raw = bytearray(corrupt.read_bytes())
    raw[20] ^= 1
    corrupt.write_bytes(bytes(raw))
    (blobs / a2["header"]["blob"]).write_bytes(b"short")  # wrong size
    b1["base"] = "f" * 64  # a delta whose base is not in the store
    _record(store, "b/1").write_text(json.dumps(b1))
    (store / "refs" / "c").mkdir()
    (store / "refs" / "c" / "1").write_text("e" * 64 + "\n")  # a ref to a package that is not there
    (store / "refs" / "c" / "2").write_text("\x1b[31mgarbage")
    code, out, err = run(capsys, "store", "check", store)
    assert code == 1 and "\x1b" not in out, out
    lines = out.strip().splitlines()
    assert lines[0].endswith("blobs checked; 0 packages without a ref, 0 unused blobs)") and "5 problems" in lines[0]
    problems = "\n".join(lines[1:])
    for phrase in (f"sha256:{a1['package'][:16]}…: blob sha256:{a1['header']['blob'][:16]}… does not hash to its name",
                   f"sha256:{a2['package'][:16]}…: blob sha256:{a2['header']['blob'][:16]}… has 5 bytes instead of",
                   f"sha256:{b1['package'][:16]}…: a delta whose base sha256:ffffffffffffffff… is not in the store "
                   "(dangling delta)",
                   "ref c@1 points at package sha256:eeeeeeeeeeeeeeee…, whose record is missing or damaged",
                   "ref c@2 is damaged (it does not hold a package id)"):
        assert phrase in problems, problems
    assert "push each damaged package again" in err
    report = json.loads(run(capsys, "store", "check", store, "--json")[1])
    assert len(report["problems"]) == 5


def test_a_damaged_ref_is_repaired_by_pushing_again(capsys, store, tmp_path):
    (store / "refs" / "a" / "1").write_text("garbage")
    Store(store).push(tmp_path / "a1.slim", name="a", version="1")
    assert run(capsys, "store", "check", store)[0] == 0


# ------------------------------------------------------------------------------- existing files (item 5)


def test_pull_never_replaces_an_unrelated_file_unless_forced(capsys, store, tmp_path):
    mine = tmp_path / "mine.slim"
    mine.write_text("my notes, not a package")
    code, _, err = run(capsys, "pull", "a@1", store, "-o", mine)
    assert code == 2 and "already exists and holds something else: pass --force" in err and len(err.splitlines()) == 1
    assert mine.read_text() == "my notes, not a package"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
    assert run(capsys, "pull", "a@1", store, "-o", mine, "--force")[0] == 0
    assert sha256_file(mine) == sha256_file(tmp_path / "a1.slim")
    assert run(capsys, "pull", "a@1", store, "-o", mine)[0] == 0  # the same package again: nothing to refuse
    code, _, err = run(capsys, "pull", "a@2", store, "-o", mine)
    assert code == 2 and "pass --force" in err


def test_export_never_replaces_an_unrelated_file_unless_forced(capsys, tmp_path):
    pkg = tmp_path / "p.slim"
    write_package(pkg, manifest(), {"model.onnx": tiny_graph()})
    onnx, st = tmp_path / "model.onnx", tmp_path / "w.safetensors"
    onnx.write_text("precious")
    st.write_text("precious too")
    for flag, target in (("--onnx", onnx), ("--safetensors", st)):
        code, _, err = run(capsys, "export", pkg, flag, target)
        assert code == 2 and "already exists and holds something else: pass --force" in err, err
    assert onnx.read_text() == "precious" and st.read_text() == "precious too"
    assert run(capsys, "export", pkg, "--onnx", onnx, "--safetensors", st, "--force")[0] == 0
    assert onnx.read_bytes() == tiny_graph()
    assert run(capsys, "export", pkg, "--onnx", onnx)[0] == 0  # same bytes: fine without --force


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_special_files_are_never_replaced_even_with_force(capsys, store, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    pkg = tmp_path / "a1.slim"
    for argv in (["pull", "a@1", store, "-o", fifo, "--force"], ["export", pkg, "--onnx", fifo, "--force"]):
        code, _, err = run(capsys, *argv)
        assert code == 2 and "is not a regular file" in err and len(err.splitlines()) == 1, err
    assert Path(fifo).is_fifo()


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_export_into_proc_is_one_line(capsys, tmp_path):
    pkg = tmp_path / "p.slim"
    write_package(pkg, manifest(), {"model.onnx": tiny_graph()})
    code, _, err = run(capsys, "export", pkg, "--onnx", "/proc/x")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "cannot write /proc/x" in err, err
