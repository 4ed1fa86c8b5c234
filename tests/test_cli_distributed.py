"""``torchrun --nproc-per-node 2 -m slimship run`` on the CPU (gloo): the package and the metrics, against a
single-process run of the same recipe; only rank 0 writes; a re-run resumes from rank 0's cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import make_images, tiny_recipe


def _slimship(*args: str, procs: int = 1, retry_abort_in: Path | None = None) -> subprocess.CompletedProcess:
    # --standalone: torchrun picks a free port itself (other test runs may share this machine). A process that
    # aborts prints its Python stack (faulthandler).
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}"] \
        if procs > 1 else [sys.executable]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", "SLIMSHIP_THREADS": "1",
           "PYTHONFAULTHANDLER": "1"}
    p = subprocess.run([*launch, "-m", "slimship", *args], capture_output=True, text=True, env=env, timeout=900)
    if procs > 1 and p.returncode != 0 and "SIGABRT" in p.stderr and retry_abort_in is not None:
        # Seen once in CI (stop 18), never in 48 runs here: rank 0 aborted ("terminate called without an
        # active exception", a C++ thread object destroyed while running) with no Python error. One retry from
        # an empty folder, saying so; a second abort fails the test.
        warnings.warn(f"a torchrun process aborted; retrying once. Its output:\n{p.stderr[-4000:]}", stacklevel=2)
        shutil.rmtree(retry_abort_in, ignore_errors=True)
        p = subprocess.run([*launch, "-m", "slimship", *args], capture_output=True, text=True, env=env, timeout=900)
    return p


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    x, y = make_images(40, seed=0)
    xt, yt = make_images(12, seed=1)
    np.savez(root / "tiny.npz", x_train=x, y_train=y, x_test=xt, y_test=yt,
             class_names=np.array(["top", "middle", "bottom"]))
    r = tiny_recipe(str(root / "tiny.npz"))
    # frozen BatchNorm statistics: the two processes then see exactly the single-process batches (with `bn:
    # train` each process normalises with its own half batch, as DDP without SyncBatchNorm does)
    r["transfer"].update(bn="frozen", scratch_baseline=False)
    r["evaluate"]["batch_sizes"] = [1]
    r["refit"] = True  # after rank 0's decision, every process trains the refit (api/refit.py)
    (root / "recipe.yaml").write_text(yaml.safe_dump(r))
    one = _slimship("run", str(root / "recipe.yaml"), "--out", str(root / "one"), "--quiet", "--device", "cpu")
    assert one.returncode == 0, one.stderr[-3000:]
    two = _slimship("run", str(root / "recipe.yaml"), "--out", str(root / "two"), "--quiet", procs=2,
                    retry_abort_in=root / "two")
    assert two.returncode == 0, two.stderr[-3000:]
    return root


def _metrics(path) -> dict:
    return json.loads((path / "metrics.json").read_text())


def test_two_processes_record_the_world_and_match_one_process(runs):
    one, two = _metrics(runs / "one"), _metrics(runs / "two")
    assert one["device"]["world_size"] == 1 and one["device"]["device"] == "cpu"
    assert two["device"]["world_size"] == 2 and two["device"]["backend"] == "gloo"
    assert len(two["device"]["devices"]) == 2
    by1, by2 = ({m["name"]: m for m in d["models"]} for d in (one, two))
    assert set(by1) == set(by2) == {"probe", "finetuned", "int8", "pruned"}
    assert by2["finetuned"]["notes"]["device"]["world_size"] == 2  # where each model trained is recorded
    for name in by1:  # the same batches: the same models up to float rounding, so the same predictions
        assert abs(by1[name]["accuracy"] - by2[name]["accuracy"]) <= 1 / 36 + 1e-9, name
    h1, h2 = ([h["val_accuracy"] for h in d["finetuned"]["notes"]["history"]] for d in (by1, by2))
    assert h1 == h2
    assert by2["finetuned"]["accuracy"] > 0.6
    # the refit: the same shipped model trained again on train + validation, alike in one and two processes
    r1, r2 = one["refit"], two["refit"]
    assert r1["source"] == r2["source"] == two["selected"] and r2["shipped"] == two["selected"] + "-refit"
    assert r2["train_examples"] == two["dataset"]["sizes"]["train"] + two["dataset"]["sizes"]["val"]
    for a, b in zip(r1["models"], r2["models"]):
        assert a["name"] == b["name"] and abs(a["accuracy"] - b["accuracy"]) <= 1 / 36 + 1e-9, a["name"]
    assert r2["models"][0]["notes"]["device"]["world_size"] == 2


def test_only_rank_zero_wrote_and_the_package_verifies(runs):
    out = runs / "two"
    log = (out / "run.log").read_text()
    assert log.count("device: cpu") == 1 and "2 processes (gloo)" in log  # one writer
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    p = _slimship("verify", str(out / "model.slim"))
    assert p.returncode == 0, p.stderr
    m = _metrics(out)
    shipped = next(e for e in m["refit"]["models"] if e["name"] == m["refit"]["shipped"])  # model.slim is the refit
    p = _slimship("eval", str(out / "model.slim"), "--data", str(runs / "tiny.npz"), "--json")
    assert p.returncode == 0, p.stderr
    assert abs(json.loads(p.stdout)["accuracy"] - shipped["accuracy"]) <= 0.002


def test_a_rerun_resumes_from_rank_zeros_cache(runs):
    before = _metrics(runs / "two")
    p = _slimship("run", str(runs / "recipe.yaml"), "--out", str(runs / "two"), "--quiet", procs=2)
    assert p.returncode == 0, p.stderr[-3000:]
    log = (runs / "two" / "run.log").read_text().split("device: cpu")[-1]
    assert "restored from cache" in log and "recovery round" not in log  # nothing trained again
    after = _metrics(runs / "two")
    assert [(m["name"], m["accuracy"]) for m in after["models"]] == [(m["name"], m["accuracy"]) for m in before["models"]]
    assert [m["accuracy"] for m in after["refit"]["models"]] == [m["accuracy"] for m in before["refit"]["models"]]
