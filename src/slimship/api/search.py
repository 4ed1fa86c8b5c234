"""``search(recipe, out)``: the stages up to the transfer once (cached), then Optuna trials of compression chains,
each compressed from the reference model through the stage cache and measured and packaged as ``run`` does.

This module wires the stages (from :mod:`slimship.api.run`) into an evaluator for :mod:`slimship.search`; the
space, the study, the budget rule and the outputs live there.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path

from slimship.api.run import Stages, measure_prepared, open_stages, output_folder, package_context, write_packages
from slimship.core.errors import SlimshipError
from slimship.core.progress import Reporter
from slimship.recipe import Recipe

MEMO_STEPS = 6  # models kept in memory between trials (the disk cache has every step)


def search(recipe: Recipe, out: str | Path, *, trials: int | None = None, seconds: float | None = None,
           storage: str | None = None, study: str | None = None, space=None, quiet: bool = False) -> dict:
    """Search compression chains for ``recipe`` until the study has ``trials`` finished trials or ``seconds``
    have passed; write OUT/{summary.md, search.json, trials.json, trials.csv, pareto.json, recommended/*.slim}.

    ``storage`` is an Optuna storage URL shared by several workers (default: SQLite in ``out``); ``study`` its
    name (default: the recipe's name); ``space`` a :class:`~slimship.search.SearchSpace` (default: every
    registered method's). Re-running the same call continues the study. Returns ``search.json``'s content.
    """
    from slimship.search import default_space
    from slimship.search.lock import folder_lock
    from slimship.search.results import retime_packages, write_outputs
    from slimship.search.study import SearchJob, open_storage, open_study, run_trials, storage_url

    t0 = time.perf_counter()
    if trials is None and seconds is None:
        raise SlimshipError("say when the search stops: give --trials N (finished trials in the study) and/or --time T")
    if trials is not None and trials < 0:
        raise SlimshipError(f"--trials must be 0 or more (got {trials})")
    if space is None:
        from slimship.models.kinds import adapter_for

        space = default_space(adapter=adapter_for(recipe.model))  # only the methods that fit the model's kind
    out = output_folder(out, clean=False)  # workers on other machines may be writing here (shared storage)
    rep = Reporter(out / "search.log", quiet=quiet)
    try:
        with folder_lock(out / ".work" / "stages.lock"):  # a second worker waits here, then reads the cache
            st = open_stages(recipe, out, rep)
            ev = ChainEvaluator(st, out)
        job = SearchJob(out=out, space=space, budget_points=recipe.compress.accuracy_budget,
                        study_name=study or recipe.name, fingerprint=_fingerprint(st, space), trials=trials,
                        seconds=None if seconds is None else seconds - (time.perf_counter() - t0), storage=storage,
                        seed=recipe.seed, log=rep.log, reference_figures=ev.figures(),
                        confidence=recipe.compress.confidence)
        the_study = open_study(job, open_storage(storage_url(job)))
        ran = run_trials(job, the_study, ev, on_trial=lambda: write_outputs(out, the_study, job))
        ev_ = recipe.evaluate
        summary = write_outputs(out, the_study, job, retime=retime_packages(ev.input_shape, ev_.batch_sizes,
                                                                            ev_.latency_runs, ev.example))
        summary.update(trials_run_by_this_worker=ran, wall_seconds=round(time.perf_counter() - t0, 1))
        rep.log(f"search done in {summary['wall_seconds']} s ({ran} trials here): {out / 'summary.md'}")
        return summary
    finally:
        rep.close()


def _fingerprint(st: Stages, space) -> dict:
    keep = ("version", "model", "data", "transfer", "seed", "evaluate")
    return {"recipe": {k: st.rd[k] for k in keep}, "budget_points": st.recipe.compress.accuracy_budget,
            "confidence": st.recipe.compress.confidence, "space": space.fingerprint()}


class ChainEvaluator:
    """Compress-and-measure for a search: every chain starts from the run's reference model, runs through one
    :class:`~slimship.compress.pipeline.ChainRunner` (steps cached under the dense key + chain so far), and is
    packaged and measured exactly as ``run`` does; its latency is timed interleaved with the dense graph's."""

    def __init__(self, st: Stages, out: Path):
        from slimship.compress.pipeline import ChainRunner
        from slimship.evaluate.measure import measure_latency
        from slimship.transfer.trainer import accuracy

        self.st = st
        self.pctx = package_context(st, out / "packages")
        self.runner = ChainRunner(st.ctx, st.cache, st.reference.key)
        self.example = st.adapter.example_input(1)
        self.input_shape = tuple(self.example.shape[1:])
        ref = st.reference
        prepared, measured = measure_prepared([ref], ref.name, st, self.pctx)
        self.reference_graph = prepared[0].graph
        ev = st.recipe.evaluate
        measure_latency(measured, {ref.name: self.reference_graph}, self.example, batch_sizes=ev.batch_sizes,
                        runs=ev.latency_runs)
        write_packages(prepared, measured, self.pctx)
        self.reference = measured[0]
        self.reference_val_torch = accuracy(ref.model, st.data.val, st.pre, st.device)
        self._accuracy: dict[str, float] = {}

    def figures(self) -> dict:
        r = self.reference
        return {"name": r.name, "val_accuracy": r.val_accuracy, "test_accuracy": r.accuracy,
                "size_bytes": r.size_bytes, "macs": r.macs, "latency_ms": r.latency_ms, "package": r.package}

    def prefix_accuracy(self, steps: list, name: str) -> float:
        from slimship.transfer.trainer import accuracy

        cm = self.runner.run(steps, name)
        if cm.key not in self._accuracy:
            self._accuracy[cm.key] = accuracy(cm.model, self.st.data.val, self.st.pre, self.st.device)
        return self._accuracy[cm.key]

    def measure(self, steps: list, name: str):
        from slimship.core.runtime import REFERENCE_RUNTIME
        from slimship.evaluate.measure import measure_latency
        from slimship.search.study import TrialOutcome

        t0 = time.perf_counter()
        cm = self.runner.run(steps, name)
        seconds = time.perf_counter() - t0
        prepared, measured = measure_prepared([cm], self.reference.name, self.st, self.pctx)
        # the dense graph is timed again, beside this trial's graph (a copy: the reference keeps its figures)
        dense = dataclasses.replace(self.reference, latency_ms={}, runtimes=copy.deepcopy(self.reference.runtimes))
        ev = self.st.recipe.evaluate
        measure_latency([dense, measured[0]], {dense.name: self.reference_graph, name: prepared[0].graph},
                        self.example, batch_sizes=ev.batch_sizes, runs=ev.latency_runs)
        write_packages(prepared, measured, self.pctx)
        while len(self.runner.memo) > MEMO_STEPS:  # oldest first
            self.runner.memo.pop(next(iter(self.runner.memo)))
        # speed-ups are against dense ONNX Runtime fp32, whatever runtime either ships for
        baseline = dense.runtimes.get(REFERENCE_RUNTIME, {}).get("latency_ms") or dense.latency_ms
        return TrialOutcome(measured[0], baseline, seconds)
