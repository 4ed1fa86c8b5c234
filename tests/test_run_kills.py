"""A run killed with SIGKILL at each stage boundary leaves its folder consistent, and the next run completes it.

A folder is consistent when either it has no INCOMPLETE marker and every output comes from one run (metrics.json,
report.md, model.slim and exactly the packages metrics.json lists, all made by one recipe), or it has the marker
and every output present comes from the run that was killed. The runs are real CLI processes
(tests/kill_helper.py kills itself at the chosen point); the recipe is tiny, so each resumed run is quick.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from slimship.package.format import read_package
from tests.conftest import make_images

ROOT = Path(__file__).resolve().parents[1]
MARKER = "INCOMPLETE"  # slimship.api.run_folder.MARKER, spelled out: this file also runs against older code


def _recipe(data: Path, name: str, candidate: dict) -> dict:
    return {
        "name": name,
        "model": {"architecture": "test_efficientnet", "weights": "none", "image_size": 32},
        "data": {"source": str(data), "val_fraction": 0.2},
        "transfer": {"strategy": "finetune", "budget": {"epochs": 1}, "batch_size": 16, "evals": 1,
                     "scratch_baseline": False},
        "compress": {"accuracy_budget": 100.0, "candidates": [candidate]},
        "evaluate": {"batch_sizes": [1], "latency_runs": 3},
    }


def _pruned(name: str, ratio: float) -> dict:
    return {"name": name, "steps": [{"method": "prune_channels", "ratio": ratio, "steps": 1,
                                     "recovery": {"epochs": 0.25, "seconds": None}}]}


def _run(recipe: Path, out: Path, kill: tuple[str, int] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join(p for p in [os.environ.get("PYTHONPATH"), str(ROOT / "src"), str(ROOT)] if p)}
    cmd = ([sys.executable, str(ROOT / "tests" / "kill_helper.py"), kill[0], str(kill[1])] if kill else
           [sys.executable, "-m", "slimship.cli.main"])
    return subprocess.run([*cmd, "run", str(recipe), "--out", str(out), "--quiet"], capture_output=True, text=True,
                          env=env, timeout=600)


def _made_by(package: Path) -> str:
    return read_package(package, verify=True).manifest["recipe"]["name"]


def _temp_files(out: Path) -> list[Path]:
    return [p for p in out.rglob(".*.tmp-*") if p.is_file()]


def check_consistent(out: Path) -> str | None:
    """Assert the folder's outputs come from one run; return that run's recipe name (None: no outputs yet)."""
    packages = sorted((out / "packages").glob("*.slim")) if (out / "packages").is_dir() else []
    outputs = [out / n for n in ("metrics.json", "report.md", "model.slim") if (out / n).exists()]
    names = {_made_by(p) for p in packages + [o for o in outputs if o.suffix == ".slim"]}
    if (out / "metrics.json").exists():
        names.add(json.loads((out / "metrics.json").read_text())["recipe"])
    if (out / "report.md").exists():  # its first line: "# slimship report: NAME"
        names.add((out / "report.md").read_text().splitlines()[0].split(": ", 1)[1])
    assert len(names) <= 1, f"outputs of several runs mixed in {out}: {names}"
    if (out / MARKER).exists():
        return next(iter(names), None)
    if not outputs and not packages:
        return None
    # no marker: the outputs of one finished run, all of them
    m = json.loads((out / "metrics.json").read_text())
    assert (out / "report.md").exists() and (out / "model.slim").exists()
    listed = {Path(e["package"]).name for e in m["models"]}
    assert {p.name for p in packages} == listed
    selected = next(e for e in m["models"] if e["name"] == m["selected"])
    assert (out / "model.slim").read_bytes() == Path(selected["package"]).read_bytes()
    return m["recipe"]


@pytest.fixture(scope="module")
def recipes(tmp_path_factory):
    root = tmp_path_factory.mktemp("kills")
    x, y = make_images(16, seed=0)
    xt, yt = make_images(4, seed=1)
    data = root / "tiny.npz"
    np.savez(data, x_train=x, y_train=y, x_test=xt, y_test=yt, class_names=np.array(["top", "middle", "bottom"]))
    a, b = root / "a.yaml", root / "b.yaml"
    a.write_text(yaml.safe_dump(_recipe(data, "run-a", _pruned("pruned", 0.25))))
    b.write_text(yaml.safe_dump(_recipe(data, "run-b", _pruned("pruned-more", 0.5))))
    return root, a, b


def test_killed_runs_leave_consistent_folders_and_a_rerun_completes(recipes):
    root, a, b = recipes
    out = root / "out"
    # Recipe A, killed inside the transfer stage: after a cache commit, then between an entry's weights and its JSON.
    for kill in (("cache-commit", 1), ("cache-weights", 1)):
        p = _run(a, out, kill)
        assert p.returncode == -9, p.stderr
        assert check_consistent(out) is None and not (out / MARKER).exists()
    p = _run(a, out)
    assert p.returncode == 0, p.stderr
    assert "restored from cache" in (out / "run.log").read_text()  # the committed entry survived the kills
    assert check_consistent(out) == "run-a" and not _temp_files(out)

    # Recipe B into the same folder, killed at each boundary of its compression and output stages.
    for kill, state in [(("cache-commit", 1), "run-a"),   # B's new compression step committed; A's outputs untouched
                        (("begin", 1), None),             # marker written, A's outputs gone, nothing of B yet
                        (("package", 1), "run-b"),        # between packages/ and model.slim (the reported case)
                        (("rename", 1), "run-b"),         # model.slim's temporary file written, not renamed
                        (("text", 1), "run-b"),           # after metrics.json
                        (("text", 2), "run-b")]:          # after report.md, before the marker is removed
        p = _run(b, out, kill)
        assert p.returncode == -9, (kill, p.stderr)
        assert check_consistent(out) == state, kill
        assert (out / MARKER).exists() == (state != "run-a"), kill
        if kill[0] == "rename":
            assert _temp_files(out), "the killed writer should have left its temporary file"
    p = _run(b, out)
    assert p.returncode == 0, p.stderr
    assert check_consistent(out) == "run-b"
    assert not (out / MARKER).exists() and not _temp_files(out)
    assert "holds an unfinished run" in (out / "run.log").read_text()
    assert not (out / "packages" / "pruned.slim").exists()  # recipe A's candidate is gone with A's outputs


def test_commands_name_an_incomplete_run_folder(tmp_path):
    from slimship.api.run_folder import incomplete_run

    (tmp_path / "packages").mkdir()
    for name in ("model.slim", "packages/a.slim"):
        (tmp_path / name).write_bytes(b"x")
    assert incomplete_run(tmp_path / "model.slim") is None
    (tmp_path / MARKER).write_text("unfinished")
    assert incomplete_run(tmp_path / "model.slim") == tmp_path
    assert incomplete_run(tmp_path / "packages" / "a.slim") == tmp_path
    assert incomplete_run(tmp_path / "elsewhere" / "a.slim") is None
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    p = subprocess.run([sys.executable, "-m", "slimship.cli.main", "verify", str(tmp_path / "model.slim")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert f"{tmp_path} is marked {MARKER}" in p.stderr and "Traceback" not in p.stderr


def test_orphaned_temp_files_are_removed_only_when_their_writer_is_gone(tmp_path):
    from slimship.api.run_folder import remove_orphaned_temp_files

    (tmp_path / ".work").mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphans = [tmp_path / f".metrics.json.tmp-{dead.pid}-0a1b2c3d", tmp_path / ".work" / f".k.json.tmp-{dead.pid}-ff00ff00"]
    mine = tmp_path / f".report.md.tmp-{os.getpid()}-12345678"  # a live writer's file stays
    other = tmp_path / ".notes.tmp"  # not the atomic writer's pattern
    for f in (*orphans, mine, other):
        f.write_text("x")
    assert remove_orphaned_temp_files(tmp_path) == 2
    assert not any(f.exists() for f in orphans) and mine.exists() and other.exists()


def test_a_reused_pid_does_not_keep_an_orphan(tmp_path):
    """PIDs (and the thread IDs that share their numbers) are reused: a process that started after the temporary
    file was written is not its writer."""
    import time

    from slimship.api.run_folder import remove_orphaned_temp_files

    f = tmp_path / f".model.slim.tmp-{os.getpid()}-0a1b2c3d"  # this live process's number...
    f.write_text("x")
    os.utime(f, (time.time() - 3600 * 24 * 400, time.time() - 3600 * 24 * 400))  # ...but written before it started
    assert remove_orphaned_temp_files(tmp_path) == 1 and not f.exists()
