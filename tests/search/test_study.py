"""The study without training: a fake evaluator stands in for compress-and-measure, so the objective, the budget
constraint, early stopping, duplicates, interruption, resume and the outputs are checked in seconds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from slimship.core.errors import SlimshipError
from slimship.evaluate.measure import Measurement
from slimship.search import space_from_dict
from slimship.search.results import write_outputs
from slimship.search.study import SearchJob, TrialOutcome, open_storage, open_study, run_trials, storage_url

optuna = pytest.importorskip("optuna")

VAL_IMAGES = 1000


def _val_predictions(accuracy: float) -> dict:
    """Per-image validation predictions right on the first ``accuracy`` share of the images (paired: a model
    with lower accuracy is wrong on a superset of the reference's mistakes)."""
    right = round(accuracy * VAL_IMAGES)
    return {"val_predictions": np.array([0] * right + [1] * (VAL_IMAGES - right)),
            "val_labels": np.zeros(VAL_IMAGES, np.int64)}


REF = Measurement(name="finetuned", kind="finetune", accuracy=0.88, val_accuracy=0.90, onnx_bytes=10_000,
                  params=1000, nonzero_params=1000, macs=10_000, compressed=False, size_bytes=10_000,
                  latency_ms={"batch1": 1.0, "batch64": 10.0}, **_val_predictions(0.90))


class FakeEvaluator:
    """k-means at b bits: val 0.90 - 0.02 (5 - b), b kB; int8: val 0.895, 2.5 kB, 2x/3x faster; sparsity s before
    k-means: an intermediate model at val 0.9 - s / 2 (so 0.8 is hopeless)."""

    reference, reference_val_torch = REF, 0.90

    def __init__(self, folder: Path, interrupt_at: int | None = None, fail: bool = False, limit: int = 100):
        self.folder, self.interrupt_at, self.fail, self.limit = folder, interrupt_at, fail, limit
        self.measured, self.prefixes, self.calls = [], [], 0
        (folder / "finetuned.slim").write_bytes(b"dense")
        self.reference.package = str(folder / "finetuned.slim")

    def prefix_accuracy(self, steps, name):
        self.prefixes.append([s.method for s in steps])
        return 0.9 - steps[0].sparsity / 2

    def measure(self, steps, name):
        self.calls += 1
        if self.calls > self.limit:  # a search that should have stopped fails the test instead of running on
            pytest.fail(f"{self.calls} chains measured; the search should have stopped")
        if self.fail:
            raise RuntimeError("pruning graph broke\nsecond line")
        if self.interrupt_at is not None and len(self.measured) == self.interrupt_at:
            self.interrupt_at = None
            raise KeyboardInterrupt
        self.measured.append(name)
        last = steps[-1]
        if last.method == "int8":
            val, size, lat = 0.895, 2500, {"batch1": 0.5, "batch64": 10 / 3}
        else:
            val, size, lat = 0.90 - 0.02 * (5 - last.bits), 1000 * last.bits, {"batch1": 1.0, "batch64": 10.0}
        path = self.folder / f"{name}.slim"
        path.write_bytes(b"x" * size)
        m = Measurement(name=name, kind="compressed", accuracy=val - 0.01, val_accuracy=val, onnx_bytes=size,
                        params=1000, nonzero_params=900, macs=10_000, compressed=True, size_bytes=size,
                        package=str(path), latency_ms=lat, **_val_predictions(val))
        return TrialOutcome(m, {"batch1": 1.0, "batch64": 10.0}, 1.0)


SPACE = {"methods": {"kmeans": {"bits": [3, 4, 5], "recovery_epochs": [0.5]}, "int8": {"qat_epochs": [0]}},
         "seeds": [{"chain": "int8"}, {"chain": "kmeans", "kmeans": {"bits": 5}}, {"chain": "kmeans", "kmeans": {"bits": 3}}],
         "sampler": {"startup_trials": 2}}


def _job(tmp_path, space=SPACE, **kw) -> SearchJob:
    logs = kw.pop("logs", [])
    return SearchJob(out=tmp_path, space=space_from_dict(space), budget_points=1.0, study_name="s", fingerprint={"r": 1},
                     log=logs.append, reference_figures={"name": "finetuned", "val_accuracy": 0.90, "test_accuracy": 0.88,
                                                         "size_bytes": 10_000, "package": str(tmp_path / "finetuned.slim")},
                     **kw)


def _search(job, ev):
    study = open_study(job, open_storage(storage_url(job)))
    run_trials(job, study, ev)
    return study, write_outputs(job.out, study, job)


def test_seeds_objectives_constraint_and_recommendations(tmp_path):
    job = _job(tmp_path, trials=3)
    ev = FakeEvaluator(tmp_path)
    study, summary = _search(job, ev)
    trials = study.get_trials()
    assert [t.params["chain"] for t in trials] == ["int8", "kmeans", "kmeans"]  # the seeds, in order
    assert [t.user_attrs["seed_trial"] for t in trials] == [0, 1, 2]
    int8, k5, k3 = trials
    assert int8.values == [0.895, 2500, 0.5]  # val accuracy, bytes, latency / dense (its slowest batch size)
    assert int8.constraints["accuracy_budget"] <= 0 and k5.constraints["accuracy_budget"] <= 0
    assert k3.constraints["accuracy_budget"] == pytest.approx(3.0)  # 4 points down, 1 allowed
    assert summary["recommended"]["smallest"] == 0 and summary["recommended"]["fastest"] == 0
    assert (tmp_path / "recommended" / "smallest.slim").read_bytes() == Path(ev.folder / "trial-0000.slim").read_bytes()
    records = json.loads((tmp_path / "trials.json").read_text())
    assert [r["within_budget"] for r in records] == [True, True, False]
    assert records[2]["shortfall_points"] == pytest.approx(3.0) and records[0]["speedup"] == {"batch1": 2.0, "batch64": 3.0}
    assert [r["number"] for r in json.loads((tmp_path / "pareto.json").read_text())] == [0, 1]  # k3 is outside
    assert "trial,state" not in (tmp_path / "trials.csv").read_text() and "number,state" in (tmp_path / "trials.csv").read_text()
    md = (tmp_path / "summary.md").read_text()
    assert "Smallest within budget**: trial 0" in md and "No trial is within" not in md


def test_nothing_within_budget_says_so_and_keeps_the_closest(tmp_path):
    space = {**SPACE, "methods": {"kmeans": {"bits": [3, 4], "recovery_epochs": [0.5]}}, "chains": ["kmeans"],
             "seeds": [{"chain": "kmeans", "kmeans": {"bits": 3}}, {"chain": "kmeans", "kmeans": {"bits": 4}}]}
    job = _job(tmp_path, space, trials=2)
    _, summary = _search(job, FakeEvaluator(tmp_path))
    assert summary["nothing_within_budget"] and summary["recommended"]["closest"] == [1, 0]  # 1 point short, then 3
    assert not (tmp_path / "recommended").exists()
    assert sorted(p.name for p in (tmp_path / "closest").iterdir()) == ["trial-0000.slim", "trial-0001.slim"]
    assert (tmp_path / "summary.md").read_text().count("No trial is within the accuracy budget") == 1


def test_a_hopeless_first_step_stops_the_chain(tmp_path):
    space = {"methods": {"unstructured": {"sparsity": [0.8], "allocation": ["uniform"], "recovery_epochs": [1]},
                         "kmeans": {"bits": [5], "recovery_epochs": [0.5]}},
             "chains": ["unstructured>kmeans"], "sampler": {"prune_slack": 1.0}}
    ev = FakeEvaluator(tmp_path)
    study, summary = _search(_job(tmp_path, space, trials=1), ev)
    (t,) = study.get_trials()
    assert t.state == optuna.trial.TrialState.PRUNED and ev.measured == [] and ev.prefixes == [["unstructured"]]
    assert t.user_attrs["stopped_after_step"] == 1
    assert t.constraints["accuracy_budget"] == pytest.approx(100 * (0.89 - 0.5))  # infeasible: samplers learn
    assert summary["trials"]["pruned"] == 1


def test_a_repeated_chain_reuses_its_figures(tmp_path):
    space = {**SPACE, "seeds": [{"chain": "int8"}, {"chain": "int8"}]}
    ev = FakeEvaluator(tmp_path)
    study, _ = _search(_job(tmp_path, space, trials=2), ev)
    a, b = study.get_trials()
    assert ev.measured == ["trial-0000"] and b.user_attrs["duplicate_of"] == 0 and a.values == b.values


def test_resume_continues_the_study_and_seeds_are_enqueued_once(tmp_path):
    ev = FakeEvaluator(tmp_path)
    _search(_job(tmp_path, trials=2), ev)
    study, _ = _search(_job(tmp_path, trials=2), ev)  # the same command again: nothing to do
    assert [t.state.name for t in study.get_trials()] == ["COMPLETE", "COMPLETE", "WAITING"]  # the third seed waits
    assert ev.measured == ["trial-0000", "trial-0001"]
    study, _ = _search(_job(tmp_path, trials=4), ev)  # a larger target: the third seed, then one proposal
    assert len(study.get_trials()) == 4
    assert [t.user_attrs.get("seed_trial") for t in study.get_trials()] == [0, 1, 2, None]


def test_a_study_made_by_another_recipe_is_refused(tmp_path):
    _search(_job(tmp_path, trials=1), FakeEvaluator(tmp_path))
    job = _job(tmp_path, trials=1)
    job.fingerprint = {"r": 2}
    with pytest.raises(SlimshipError, match="another recipe or search space"):
        open_study(job, open_storage(storage_url(job)))


def test_an_interrupted_trial_is_run_again_next_time(tmp_path):
    ev = FakeEvaluator(tmp_path, interrupt_at=1)
    with pytest.raises(KeyboardInterrupt):
        _search(_job(tmp_path, trials=3), ev)
    study, _ = _search(_job(tmp_path, trials=3), ev)
    states = [(t.params["chain"], t.params.get("kmeans.bits"), t.state.name) for t in study.get_trials()]
    assert states[1] == ("kmeans", 5, "FAIL") and ("kmeans", 5, "COMPLETE") in states[2:]
    assert sum(s == "COMPLETE" for *_, s in states) == 3


def test_failing_chains_are_recorded_and_the_worker_stops_after_a_few(tmp_path):
    logs = []
    study, summary = _search(_job(tmp_path, trials=10, logs=logs), FakeEvaluator(tmp_path, fail=True, limit=6))
    trials = study.get_trials()
    assert len(trials) == 5 and all(t.state.name == "FAIL" for t in trials)
    assert trials[0].user_attrs["error"] == "RuntimeError: pruning graph broke"
    assert summary["trials"]["fail"] == 5 and any("in a row failed" in line for line in logs)


def test_time_limit_starts_no_trial_that_cannot_finish(tmp_path, monkeypatch):
    from slimship.search import study as study_mod

    monkeypatch.setattr(study_mod, "typical_seconds", lambda study: 7200.0)  # as if a trial took two hours
    logs = []
    study, _ = _search(_job(tmp_path, seconds=3600, logs=logs), FakeEvaluator(tmp_path, limit=1))
    assert [t.state.name for t in study.get_trials()] == ["COMPLETE", "WAITING", "WAITING"]
    assert any("a trial takes about 7200 s: no new trial" in line for line in logs)


def test_the_budget_is_judged_as_run_decides_it_paired_and_with_its_confidence():
    from slimship.search.budget import judge_budget

    cand = Measurement(name="c", kind="compressed", accuracy=0.88, val_accuracy=0.895, onnx_bytes=1, params=1,
                       nonzero_params=1, macs=1, compressed=True, **_val_predictions(0.895))
    assert judge_budget(cand, REF, 1.0).within  # 0.5 points below on 1,000 images: likely within
    assert not judge_budget(cand, REF, 1.0, confidence=0.999).within  # but not that sure
    assert "P(losing at most 1 point(s)" in judge_budget(cand, REF, 1.0).rule
