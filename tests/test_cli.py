"""The CLI end to end on a tiny model and data set, and every bad input a user can cause."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from slimship.cli.main import main
from slimship.core.runtime import available_runtimes
from slimship.package.format import read_package
from tests.conftest import make_images, tiny_recipe


def _cli(*args: str) -> subprocess.CompletedProcess:
    """Run the real console entry point in a subprocess (as a user would)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "slimship.cli.main", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def _one_line_error(p: subprocess.CompletedProcess, phrase: str) -> None:
    assert p.returncode == 2, p.stderr
    err = p.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert phrase in err, err


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    x, y = make_images(40, seed=0)
    xt, yt = make_images(12, seed=1)
    data = root / "tiny.npz"
    np.savez(data, x_train=x, y_train=y, x_test=xt, y_test=yt, class_names=np.array(["top", "middle", "bottom"]))
    recipe = root / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(str(data))))
    out = root / "out"
    p = _cli("run", str(recipe), "--out", str(out), "--quiet")
    assert p.returncode == 0, p.stderr
    return root, data, out


def test_run_writes_complete_outputs(finished_run):
    _, _, out = finished_run
    names = {p.name for p in out.iterdir()}
    assert {"metrics.json", "report.md", "run.log", "model.slim", "packages", ".work"} <= names
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]  # nothing half-written
    m = json.loads((out / "metrics.json").read_text())
    by = {e["name"]: e for e in m["models"]}
    assert {"probe", "finetuned", "scratch", "int8", "pruned"} <= set(by)
    for e in m["models"]:
        assert 0 <= e["accuracy"] <= 1
        assert e["size_bytes"] == os.path.getsize(e["package"])
        assert e["params"] >= e["nonzero_params"] > 0 and e["macs"] > 0
        # measured in every installed runtime; each batch size ships (and is recorded) in the one it was fastest
        # in there, the largest batch size's being the main runtime
        assert list(e["runtimes"]) == available_runtimes() and e["runtime"] in e["runtimes"]
        assert all(set(f["latency_ms"]) == {"batch1", "batch64"} for f in e["runtimes"].values())
        assert set(e["runtime_by_batch"]) == {"batch1", "batch64"} and e["runtime"] == e["runtime_by_batch"]["batch64"]
        assert e["latency_ms"] == {k: e["runtimes"][rt]["latency_ms"][k] for k, rt in e["runtime_by_batch"].items()}
        model = read_package(e["package"]).manifest["model"]
        assert model["runtime"] == e["runtime"]
        assert model["runtime_by_batch"] == {k.removeprefix("batch"): rt for k, rt in e["runtime_by_batch"].items()}
    assert by["finetuned"]["accuracy"] > 0.6  # learnable task
    assert by["int8"]["size_bytes"] < by["finetuned"]["size_bytes"] / 2.5 and by["int8"]["compressed"]
    assert by["pruned"]["macs"] < by["finetuned"]["macs"]
    report = (out / "report.md").read_text()
    assert m["selected"] in by and "| model |" in report and "## Every model in every runtime" in report
    assert all(f"| {rt} |" in report for rt in available_runtimes())
    # evaluation that carries its conditions, the decision with its uncertainty, epochs actually run
    assert m["conditions"]["machine"]["cpu"] and m["conditions"]["latency"]["batch_sizes"] == [1, 64]
    assert m["reference_choice"]["reference"] == m["reference"] and m["decision"]["shipped"] == m["selected"]
    for e in m["models"]:
        assert set(e["latency_p95_ms"]) == {"batch1", "batch64"} and e["memory"]["peak_rss_mb"] > 0
        assert len(e["test"]["confusion"]) == 3 and e["test"]["accuracy_ci95"][0] <= e["accuracy"] + 1e-9
    assert by["finetuned"]["epochs"] == 3.0 and by["pruned"]["epochs"] > 0
    assert by["pruned"]["notes"]["training"][0]["method"] == "prune_channels"
    assert {"int8", "pruned"} <= set(m["decision"]["judgements"])
    with np.load(out / "predictions.npz", allow_pickle=False) as z:
        assert len(z["test/int8"]) == len(z["test_labels"]) == 36 and len(z["val/int8"]) == len(z["val_labels"])
    html = (out / "report.html").read_text()
    assert "<svg" in html and "src=" not in html and m["selected"] in html


def test_report_command_rewrites_the_html(finished_run, tmp_path):
    _, _, out = finished_run
    p = _cli("report", str(out), "--out", str(tmp_path / "r.html"))
    assert p.returncode == 0, p.stderr
    assert "Accuracy vs package size" in (tmp_path / "r.html").read_text()
    _one_line_error(_cli("report", str(tmp_path)), "metrics.json not found")


def test_eval_reproduces_recorded_accuracy(finished_run):
    _, data, out = finished_run
    m = json.loads((out / "metrics.json").read_text())
    shipped = next(e for e in m["models"] if e["name"] == m["selected"])
    p = _cli("eval", str(out / "model.slim"), "--data", str(data), "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["images"] == 36 and abs(r["accuracy"] - shipped["accuracy"]) <= 0.002


def test_predict_inspect_verify(finished_run, tmp_path):
    _, _, out = finished_run
    x, y = make_images(1, seed=3)
    img = tmp_path / "a.png"
    Image.fromarray(np.repeat(x[0], 3, axis=2)).resize((50, 40)).save(img)  # colour, other size: converted
    p = _cli("predict", str(out / "model.slim"), str(img), "--json")
    assert p.returncode == 0, p.stderr
    top = json.loads(p.stdout)[0]["top"]
    assert top[0]["class"] in {"top", "middle", "bottom"} and abs(sum(t["probability"] for t in top) - 1) < 1e-3
    p = _cli("inspect", str(out / "model.slim"), "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["parts"][0]["name"] == "model.onnx"
    assert _cli("verify", str(out / "model.slim")).returncode == 0
    # where the bytes go: one row per weight tensor, in text and in JSON
    p = _cli("inspect", str(out / "packages" / "pruned.slim"), "--layers")
    assert p.returncode == 0, p.stderr
    assert "conv_stem" in p.stdout and "share" in p.stdout
    rows = json.loads(_cli("inspect", str(out / "packages" / "pruned.slim"), "--layers", "--json").stdout)["layers"]
    assert rows and all(r["params"] > 0 and r["compressed_bytes"] > 0 for r in rows)
    assert {r["encoding"] for r in rows} <= {"raw", "sparse", "shared", "qint", "in-graph"}


def test_rerun_resumes_from_cache(finished_run):
    root, _, out = finished_run
    before = len((out / "run.log").read_text())  # run.log is appended to: look at the re-run's lines only
    p = _cli("run", str(root / "recipe.yaml"), "--out", str(out), "--quiet")
    assert p.returncode == 0, p.stderr
    log = (out / "run.log").read_text()[before:]
    # Every trained stage comes back from .work: the transfer stages as well as each compression step.
    for stage in ("probe", "finetune", "scratch"):
        assert f"{stage}: restored from cache" in log, log
    for step in ("int8: step 1 (int8)", "pruned: step 1 (prune_channels)"):
        assert f"{step} restored from cache" in log, log


def test_corrupted_and_foreign_packages_are_refused(finished_run, tmp_path):
    _, data, out = finished_run
    raw = bytearray((out / "model.slim").read_bytes())
    raw[len(raw) // 2] ^= 0x40
    bad = tmp_path / "bad.slim"
    bad.write_bytes(bytes(raw))
    _one_line_error(_cli("eval", str(bad), "--data", str(data)), "modified or corrupted")
    short = tmp_path / "short.slim"
    short.write_bytes(bytes(raw[: len(raw) // 3]))
    _one_line_error(_cli("predict", str(short), str(bad)), "truncated")
    txt = tmp_path / "notes.slim"
    txt.write_text("hello")
    _one_line_error(_cli("inspect", str(txt)), "not a slimship package")


def _write(tmp_path: Path, recipe: dict) -> str:
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(recipe))
    return str(p)


def test_bad_inputs_get_one_clear_line(tmp_path, tiny_npz):
    out = str(tmp_path / "o")
    cases = [
        (tiny_recipe(str(tiny_npz), model={"architecture": "tf_efficientnet_lite9", "weights": "none"}), "did you mean"),
        (tiny_recipe(str(tmp_path / "nope")), "does not exist"),
        (tiny_recipe(str(tiny_npz), model={"architecture": "test_efficientnet", "weights": str(tmp_path / "w.pth")}),
         "not found"),
        ({**tiny_recipe(str(tiny_npz)), "compres": {}}, "did you mean 'compress'"),
    ]
    for recipe, phrase in cases:
        _one_line_error(_cli("run", _write(tmp_path, recipe), "--out", out, "--quiet"), phrase)
    one = tmp_path / "one"
    (one / "only").mkdir(parents=True)
    Image.new("L", (8, 8)).save(one / "only" / "a.png")
    _one_line_error(_cli("run", _write(tmp_path, tiny_recipe(str(one))), "--out", out, "--quiet"), "two classes")
    _one_line_error(_cli("run", str(tmp_path / "missing.yaml"), "--out", out), "not found")
    assert not [p for p in (tmp_path / "o").rglob("*") if p.is_file() and p.name != "run.log"] if (tmp_path / "o").exists() else True


def test_list_and_init(capsys, tmp_path, tiny_npz):
    assert main(["list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {"int8", "prune_channels"} <= {e["name"] for e in listed["compression methods"]}
    assert main(["init", "--model", "test_efficientnet", "--data", "fashion-mnist", "--out", str(tmp_path / "r.yaml")]) == 0
    r = yaml.safe_load((tmp_path / "r.yaml").read_text())
    assert r["model"]["architecture"] == "test_efficientnet"
    assert r["transfer"]["budget"] == {"epochs": 1.5} and r["data"]["val_fraction"] == 0.1  # 10k of 60k images
    # a small set: a larger validation share, more epochs (the same images seen)
    assert main(["init", "--model", "test_efficientnet", "--data", str(tiny_npz), "--out", str(tmp_path / "s.yaml")]) == 0
    s = yaml.safe_load((tmp_path / "s.yaml").read_text())
    assert s["data"]["val_fraction"] == 0.2 and s["transfer"]["budget"]["epochs"] == 40


def test_init_checks_its_inputs_at_once(tmp_path, tiny_npz):
    _one_line_error(_cli("init", "--model", "tf_efficientnet_lite9", "--data", str(tiny_npz)), "did you mean")
    _one_line_error(_cli("init", "--model", "test_efficientnet", "--data", str(tmp_path / "nope")), "does not exist")
    _one_line_error(_cli("init", "--model", "test_efficientnet", "--weights", str(tmp_path / "w.pth"),
                         "--data", str(tiny_npz)), "not found")


def test_hostile_recipes_get_one_short_line_before_anything_runs(tmp_path, tiny_npz):
    out = tmp_path / "o"
    laughs = "\n".join(["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"] + [
        f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)])
    cases = [
        (b"name: \xff\nmodel: {}\n", "not UTF-8 text"),
        (laughs.encode(), "aliases (*name) are expanded"),
        (yaml.safe_dump(tiny_recipe(str(tiny_npz))).replace("epochs: 3", "epochs: .inf").encode(), "not a finite number"),
        (yaml.safe_dump(tiny_recipe(str(tiny_npz), evaluate={"batch_sizes": [-5]})).encode(), "evaluate.batch_sizes.0"),
        (yaml.safe_dump(tiny_recipe(str(tiny_npz), seed=10**23)).encode(), "seed"),
    ]
    for text, phrase in cases:
        recipe = tmp_path / "r.yaml"
        recipe.write_bytes(text)
        _one_line_error(_cli("run", str(recipe), "--out", str(out), "--quiet"), phrase)
    assert not out.exists()  # refused while reading the recipe: no folder, no training


def test_cli_errors_are_cut_and_terminal_escapes_shown_escaped(tmp_path):
    from slimship.cli.main import one_line

    assert one_line("a\nb\x1b[2Jc") == "a b\\x1b[2Jc"
    cut = one_line("x" * 100_000)
    assert len(cut) <= 1000 and "characters left out" in cut
    long_path = tmp_path / ("d" * 200) / ("e" * 200) / "\x1b[31mdata"  # does not exist
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(str(long_path) * 40)))
    p = _cli("run", str(recipe), "--out", str(tmp_path / "o"), "--quiet")
    _one_line_error(p, "cannot be used (File name too long)")
    assert len(p.stderr) < 1100 and "\x1b" not in p.stderr and "\\x1b[31m" in p.stderr


def test_init_counts_an_image_folder_without_decoding_it(tmp_path, monkeypatch):
    """init sizes the recipe from the number of images: it must not decode a folder of large photos (it ran out of
    memory on 1,000 phone photos)."""
    from PIL import Image

    import slimship.data.folder as folder
    from slimship.recipe.template import check_init_inputs

    for c in ("cat", "dog"):
        (tmp_path / "d" / c).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (40, 30), (i * 40, 0, 0)).save(tmp_path / "d" / c / f"{i}.png")

    def no_decoding(*args, **kwargs):
        raise AssertionError("init decoded an image")

    monkeypatch.setattr(folder, "_decode", no_decoding)
    monkeypatch.setattr(folder, "_decode_scaled", no_decoding)
    assert check_init_inputs(model="test_efficientnet", weights=None, data=str(tmp_path / "d"), test=None) >= 8


def test_a_missing_optional_package_names_the_extra_to_install(monkeypatch, capsys):
    import builtins

    from slimship.cli.main import main

    real_import = builtins.__import__

    def no_cryptography(name, *args, **kwargs):
        if name.split(".")[0] == "cryptography":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cryptography)
    assert main(["keygen", "/nonexistent-dir/k"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'slimship[sign]'" in err and len(err.strip().splitlines()) == 1
