"""`slimship search` end to end on the tiny recipe: outputs measured on the packages written, resume, and two
worker processes sharing one SQLite study."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
import yaml

from tests.conftest import make_images, tiny_recipe

pytest.importorskip("optuna")

# fast chains on the tiny model; every recovery half an epoch
SPACE = {"methods": {"unstructured": {"sparsity": [0.4, 0.5, 0.6], "allocation": ["uniform"], "recovery_epochs": [0.5]},
                     "kmeans": {"bits": [3, 4, 5], "recovery_epochs": [0.5]}, "int8": {"qat_epochs": [0]}},
         "chains": ["int8", "kmeans", "unstructured>kmeans"],
         "seeds": [{"chain": "int8"}, {"chain": "unstructured>kmeans", "kmeans": {"bits": 4}}],
         "sampler": {"startup_trials": 2, "prune_slack": 100}}


def _cli(*args: str, wait: bool = True):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "slimship.cli.main", *args]
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    x, y = make_images(40, seed=0)
    xt, yt = make_images(12, seed=1)
    data = root / "tiny.npz"
    np.savez(data, x_train=x, y_train=y, x_test=xt, y_test=yt, class_names=np.array(["top", "middle", "bottom"]))
    recipe = tiny_recipe(str(data))
    recipe["transfer"].update(scratch_baseline=False, budget={"epochs": 1})
    recipe["compress"]["accuracy_budget"] = 10.0
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    (root / "space.yaml").write_text(yaml.safe_dump(SPACE))
    p = _search(root, root / "transferred", "--trials", "0")  # the transfer once; each test copies its cache
    assert p.returncode == 0, p.stderr
    return root


def _out(inputs, path):
    shutil.copytree(inputs / "transferred" / ".work", path / ".work")
    return path


def _search(inputs, out, *extra, wait=True):
    return _cli("search", str(inputs / "recipe.yaml"), "--out", str(out), "--space", str(inputs / "space.yaml"),
                "--quiet", *extra, wait=wait)


def test_search_writes_measured_trials_and_resumes(inputs, tmp_path):
    import slimship.data.transforms  # noqa: F401 - registers the image preprocessing load_package rebuilds
    from slimship.package.pack import load_package

    out = _out(inputs, tmp_path / "out")
    p = _search(inputs, out, "--trials", "3")
    assert p.returncode == 0, p.stderr
    trials = json.loads((out / "trials.json").read_text())
    assert [t["state"] for t in trials] == ["complete"] * 3 and [t.get("seed_trial") for t in trials[:2]] == [0, 1]
    s = json.loads((out / "search.json").read_text())
    assert {"smallest", "fastest"} <= set(s) and (out / "summary.md").is_file() and (out / "trials.csv").is_file()
    data = np.load(inputs / "tiny.npz")
    for t in trials:  # every figure is the package's: bytes on disk, and the test accuracy of the graph it holds
        assert t["size_bytes"] == os.path.getsize(t["package"])
        pkg = load_package(t["package"])  # verifies every hash
        acc = float((pkg.logits(data["x_test"]).argmax(1) == data["y_test"]).mean())
        assert acc == pytest.approx(t["test_accuracy"])
    smallest = min((t for t in trials if t["within_budget"]), key=lambda t: t["size_bytes"])
    assert s["recommended"]["smallest"] == smallest["number"]
    assert (out / "recommended" / "smallest.slim").read_bytes() == open(smallest["package"], "rb").read()
    # the same command continues the study: one more trial, the first three untouched, nothing trained again
    cached = {p.name: p.stat().st_mtime_ns for p in (out / ".work").iterdir()}
    p = _search(inputs, out, "--trials", "4")
    assert p.returncode == 0, p.stderr
    again = json.loads((out / "trials.json").read_text())
    assert len(again) == 4 and again[:3] == trials
    assert {n: (out / ".work" / n).stat().st_mtime_ns for n in cached} == cached


def test_two_workers_share_one_sqlite_study(inputs, tmp_path):
    """One worker on the default storage (OUT/study.db), the other in its own run folder given that study's URL,
    as a worker on another machine with a shared file system would be."""
    out, other = _out(inputs, tmp_path / "a"), _out(inputs, tmp_path / "b")
    p = _search(inputs, out, "--trials", "0")  # set-up once (reference, the study with its seeds)
    assert p.returncode == 0, p.stderr
    assert json.loads((out / "search.json").read_text())["trials"]["waiting"] == 2  # the seeds, not yet taken
    url = f"sqlite:///{out / 'study.db'}"
    workers = [_search(inputs, out, "--trials", "6", wait=False),
               _search(inputs, other, "--trials", "6", "--storage", url, "--study", "tiny", wait=False)]
    for w in workers:
        _, err = w.communicate(timeout=900)
        assert w.returncode == 0, err
    assert not (other / "study.db").exists()
    db = sqlite3.connect(out / "study.db")
    states = [s for (s,) in db.execute("SELECT state FROM trials ORDER BY number")]
    assert states.count("COMPLETE") >= 6 and "RUNNING" not in states and "WAITING" not in states
    p = _search(inputs, out, "--trials", "6")  # nothing left to do: rewrites the outputs from the whole study
    assert p.returncode == 0, p.stderr
    trials = json.loads((out / "trials.json").read_text())
    numbers = [t["number"] for t in trials]
    assert numbers == sorted(set(numbers)) and len(numbers) == len(states)  # no trial twice
    assert len({t["worker"] for t in trials if t["state"] == "complete"}) == 2  # both workers ran trials
    folders = {}  # each worker writes its packages in its own run folder
    for t in trials:
        if t["state"] == "complete" and "duplicate_of" not in t:
            assert os.path.isfile(t["package"])
            folders.setdefault(t["worker"], set()).add(os.path.dirname(t["package"]))
    assert all(len(f) == 1 for f in folders.values())
    assert set().union(*folders.values()) <= {str(out / "packages"), str(other / "packages")}
    assert sorted(t["seed_trial"] for t in trials if "seed_trial" in t) == [0, 1]  # each seed taken once
    measured = [t for t in trials if t["state"] == "complete" and "duplicate_of" not in t]
    keys = [json.dumps(t["steps"], sort_keys=True) for t in measured]
    assert len(keys) == len(set(keys))  # no chain measured twice: a repeat reuses the first's figures


def test_search_needs_a_stopping_rule_and_valid_inputs(inputs, tmp_path):
    for args, phrase in ((["--out", str(tmp_path / "o")], "--trials N"),
                         (["--out", str(tmp_path / "o"), "--time", "soon"], "is not a duration"),
                         (["--out", str(tmp_path / "o"), "--trials", "1", "--space", str(tmp_path / "none.yaml")],
                          "not found")):
        p = _cli("search", str(inputs / "recipe.yaml"), *args)
        assert p.returncode == 2 and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert phrase in p.stderr
