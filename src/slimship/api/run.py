"""``run(recipe, out)``: data → model → transfer → compress → measure → package, one stage after another.

Each stage is a module with typed inputs and results; this module only wires them together and writes the run's
outputs. Every stage's result is cached under ``OUT/.work`` keyed by the hash of what produced it, so an
interrupted run resumes where it stopped, and a re-run with a changed compression plan does not redo the transfer.
The pieces :func:`run` wires (:func:`open_stages`, :func:`package_context`, :func:`measure_prepared`,
:func:`write_packages`) are what ``slimship search`` calls too, once per trial.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimship.core.atomic import write_atomically, write_text_atomically
from slimship.core.cache import StageCache, stage_key
from slimship.core.errors import SlimshipError
from slimship.core.progress import Reporter
from slimship.recipe import Recipe, recipe_to_dict


def run(recipe: Recipe, out: str | Path, *, quiet: bool = False, fresh: bool = False) -> dict:
    """Execute ``recipe`` and write OUT/{metrics.json, report.md, run.log, model.slim, packages/*.slim}.

    Returns the metrics dictionary (the content of metrics.json). Raises SlimshipError for bad input.
    """
    import torch

    from slimship.compress.pipeline import compress

    out = output_folder(out, fresh)
    rep = Reporter(out / "run.log", quiet=quiet)
    t_start = time.perf_counter()
    try:
        st = open_stages(recipe, out, rep)
        compressed = compress(recipe.compress.candidates, st.ctx, st.cache, st.reference.key)
        metrics = _measure_and_package([*st.transferred.models, *compressed], st.reference.name, st, out)
        metrics.update(wall_seconds=round(time.perf_counter() - t_start, 1), threads=torch.get_num_threads(),
                       device=st.device.describe())
        write_text_atomically(out / "metrics.json", json.dumps(metrics, indent=2, default=str))
        from slimship.evaluate.report import render_markdown

        write_text_atomically(out / "report.md", render_markdown(metrics))
        rep.log(f"done in {metrics['wall_seconds']} s: {out / 'model.slim'} ({metrics['selected']})")
        return metrics
    finally:
        rep.close()


@dataclass
class Stages:
    """What a run has once the model is transferred: everything compression, measuring and packaging need."""

    recipe: Recipe
    rd: dict  # the recipe as a dictionary (written into packages)
    adapter: Any  # models.adapter.ModelAdapter
    data: Any  # data.task.TaskData
    pre: Any  # core.preprocessing.Preprocessing
    cache: StageCache
    device: Any  # core.device.Device
    transferred: Any  # transfer.TransferResult
    ctx: Any  # compress.CompressContext, starting from the reference model
    rep: Reporter

    @property
    def reference(self):
        """The transferred model compression starts from."""
        return self.transferred.reference


def open_stages(recipe: Recipe, out: Path, rep: Reporter) -> Stages:
    """Load the data, build the model and transfer it (cached in ``out/.work``)."""
    import torch

    from slimship.compress import CompressContext
    from slimship.core.device import resolve_device
    from slimship.data.task import load_task_data, prepare_task_data
    from slimship.models.kinds import adapter_for
    from slimship.transfer import TransferInputs, transfer

    torch.manual_seed(recipe.seed)
    cache, rd, device = StageCache(out / ".work"), recipe_to_dict(recipe), resolve_device()
    adapter = adapter_for(recipe.model)
    splits = load_task_data(recipe.data, seed=recipe.seed)
    pre = adapter.preprocessing(splits.channels)
    data = prepare_task_data(splits, pre)
    rep.log(f"data {recipe.data.source}: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test, "
            f"{data.num_classes} classes, {data.channels} channel(s), {pre.describe()}")
    built = adapter.build(data.num_classes)
    w = built.weights_report
    rep.log(f"model {adapter.architecture}: weights {w.get('source')} ({w.get('layout', '-')}, {w.get('loaded', 0)} tensors)")
    # The data's bytes are part of the key: editing the image folder must not reuse stale stage results.
    base_key = stage_key(rd["model"], rd["data"], recipe.seed, data.fingerprint)
    transferred = transfer(TransferInputs(recipe.transfer, recipe.seed, adapter, built.model, data, pre, cache,
                                          base_key, rep, device))
    ref = transferred.reference
    ctx = CompressContext(adapter, data.train, data.val, pre, ref.model, data.num_classes, rep.log, rep,
                          recipe.seed, device, source=built.model)
    return Stages(recipe, rd, adapter, data, pre, cache, device, transferred, ctx, rep)


def output_folder(out: str | Path, fresh: bool = False) -> Path:
    """``out`` as a folder (created); ``fresh`` drops its stage cache."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SlimshipError(f"--out {out} exists and is not a folder: choose another path")
    out.mkdir(parents=True, exist_ok=True)
    if fresh and (out / ".work").exists():
        shutil.rmtree(out / ".work")
    return out


def package_context(st: Stages, folder: Path):
    """The package stage's context: every package of the run goes to ``folder``."""
    from slimship.package import stage as package

    recipe = st.recipe
    pctx = package.PackageContext(st.adapter, folder, st.data.class_names, st.pre, st.rd,
                                  recipe.transfer.delta.value_bits if recipe.transfer.delta else 8)
    pctx.folder.mkdir(parents=True, exist_ok=True)
    return pctx


def measure_prepared(models: list, reference: str, st: Stages, pctx) -> tuple[list, list]:
    """Prepare every model's package and measure the exact graph it holds (accuracy, size, compute; latency is
    measured afterwards for all graphs at once). Returns (prepared, measurements), in the order of ``models``."""
    from slimship.evaluate.measure import EvalSet, measure_model
    from slimship.package import stage as package

    ev = st.recipe.evaluate
    val, test, example = EvalSet.of(st.data.val, st.pre), EvalSet.of(st.data.test, st.pre), st.adapter.example_input(1)
    prepared, measured = [], []
    for m in models:
        st.rep.log(f"measuring {m.name}")
        prepared.append(package.prepare(m, pctx))
        measured.append(measure_model(
            name=m.name, kind=m.kind, graph=prepared[-1].graph, model=m.model, example_input=example, val=val,
            test=test, compressed=m.compressed, pytorch_batch_sizes=ev.batch_sizes if m.name == reference else None,
            runs=ev.latency_runs, extra={"train_seconds": round(m.seconds, 1), "notes": m.notes}))
    return prepared, measured


def write_packages(prepared: list, measured: list, pctx) -> None:
    """Write each package once, with its figures; sets each measurement's ``size_bytes`` and ``package``."""
    from slimship.package import stage as package

    for p, m in zip(prepared, measured):
        path, m.size_bytes = package.write(p, pctx, m.to_dict())
        m.package = str(path)


def _measure_and_package(models: list, reference: str, st: Stages, out: Path) -> dict:
    """Prepare every model's package, measure the exact graph it holds, write it once, choose the winner; return
    the run's metrics (without timings)."""
    from slimship.evaluate.decision import select_winner
    from slimship.evaluate.measure import measure_latency
    from slimship.package import stage as package

    recipe, rep, data, pre = st.recipe, st.rep, st.data, st.pre
    ev = recipe.evaluate
    pctx = package_context(st, out / "packages")
    prepared, measured = measure_prepared(models, reference, st, pctx)
    rep.log(f"latency: {len(measured)} deploy graphs, interleaved, batch sizes {ev.batch_sizes}")
    measure_latency(measured, {p.source.name: p.graph for p in prepared}, st.adapter.example_input(1),
                    batch_sizes=ev.batch_sizes, runs=ev.latency_runs)
    write_packages(prepared, measured, pctx)
    for p, m in zip(prepared, measured):
        if p.delta is not None:
            full = next(x.size_bytes for x in measured if x.name == "finetuned")
            m.extra["delta_package"] = dp = package.write_delta(p, pctx, full)
            rep.log(f"{m.name}: stored as {dp['bytes']:,} bytes against packages/base.slim ({dp['base_bytes']:,} "
                    f"bytes, shared by every task)")
    winner = select_winner(measured, reference=reference, budget_points=recipe.compress.accuracy_budget)
    write_atomically(out / "model.slim", lambda tmp: shutil.copyfile(winner.package, tmp))
    return {
        "slimship_version": __import__("slimship").__version__,
        "recipe": recipe.name,
        "dataset": {**data.info, "class_names": data.class_names, "num_classes": data.num_classes,
                    **pre.summary(), "preprocessing": pre.to_dict()},
        "reference": reference,
        "accuracy_budget_points": recipe.compress.accuracy_budget,
        "selected": winner.name,
        "package": str(out / "model.slim"),
        "models": [m.to_dict() for m in measured],
    }
