"""``run(recipe, out)``: data → model → transfer → compress → measure → package, one stage after another.

Each stage is a module with typed inputs and results; this module only wires them together and writes the run's
outputs. Every stage's result is cached under ``OUT/.work`` keyed by the hash of what produced it, so an
interrupted run resumes where it stopped, and a re-run with a changed compression plan does not redo the transfer.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from slimship.core.atomic import write_atomically, write_text_atomically
from slimship.core.cache import StageCache, stage_key
from slimship.core.errors import SlimshipError
from slimship.core.progress import Reporter
from slimship.recipe import Recipe, recipe_to_dict


def run(recipe: Recipe, out: str | Path, *, quiet: bool = False, fresh: bool = False,
        device: str | None = None) -> dict:
    """Execute ``recipe`` and write OUT/{metrics.json, report.md, run.log, model.slim, packages/*.slim}.

    ``device`` ("cpu", "cuda", "auto") overrides the recipe's ``device.type``. Launched by torchrun, every process
    calls this; training and evaluation are shared between them and only rank 0 writes (docs/distributed.md).
    Returns the metrics dictionary (the content of metrics.json) on every process. Raises SlimshipError for bad input.
    """
    import torch

    from slimship.compress import CompressContext
    from slimship.compress.pipeline import compress
    from slimship.data.task import load_task_data, prepare_task_data
    from slimship.models.kinds import adapter_for
    from slimship.transfer import TransferInputs, transfer

    t_start = time.perf_counter()
    dev = _device(recipe, device)
    out, world = _output_folder(out, fresh, dev.world), dev.world
    rep = Reporter(out / "run.log" if world.main else None, quiet=quiet or not world.main)
    torch.manual_seed(recipe.seed)
    cache, rd = StageCache(out / ".work", world), recipe_to_dict(recipe)
    try:
        rep.log(f"device: {_where(dev)}")
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
        # A scaled batch trains differently, so it is part of the key too (the device itself is not: a run may
        # resume on another device).
        scale = [{"batch_scale": dev.batch_scale}] if dev.batch_scale != 1 else []
        base_key = stage_key(rd["model"], rd["data"], recipe.seed, data.fingerprint, *scale)
        transferred = transfer(TransferInputs(recipe.transfer, recipe.seed, adapter, built.model, data, pre, cache,
                                              base_key, rep, dev))
        ref = transferred.reference
        ctx = CompressContext(adapter, data.train, data.val, pre, ref.model, data.num_classes, rep.log, rep,
                              recipe.seed, dev, source=built.model)
        compressed = compress(recipe.compress.candidates, ctx, cache, ref.key)
        devices = world.all_gather_json(f"{dev.describe()['device']} ({dev.name()})")
        metrics = None
        if world.main:  # measuring and packaging are rank 0's alone; the others wait for its metrics
            metrics = _measure_and_package([*transferred.models, *compressed], ref.name, recipe, rd, adapter, data,
                                           pre, out, rep)
            metrics.update(wall_seconds=round(time.perf_counter() - t_start, 1), threads=torch.get_num_threads(),
                           device={**dev.describe(), "devices": devices}, measured_on=_measured_on())
            _write_outputs(out, metrics, rep)
        return world.broadcast_json(metrics)
    finally:
        rep.close()


def _device(recipe: Recipe, override: str | None):
    """The run's Device: the recipe's ``device`` section, ``override`` (the CLI's --device) winning over its type."""
    from slimship.core.device import resolve_device

    d = recipe.device
    return resolve_device(override or d.type, d.precision, batch_scale=d.batch_scale, compile=d.compile)


def _measured_on() -> dict:
    """Where accuracy and latency of the deploy graphs are measured: the runtime on this machine's CPU."""
    from slimship.core.device import cpu_name
    from slimship.core.runtime import cpu_threads

    return {"device": "cpu", "cpu": cpu_name(), "threads": cpu_threads()}


def _where(dev) -> str:
    w = dev.world
    procs = f", {w.size} processes ({w.backend})" if w.distributed else ""
    return f"{dev.describe()['device']} ({dev.name()}), {dev.precision}{procs}"


def _write_outputs(out: Path, metrics: dict, rep) -> None:
    write_text_atomically(out / "metrics.json", json.dumps(metrics, indent=2, default=str))
    from slimship.evaluate.report import render_markdown

    write_text_atomically(out / "report.md", render_markdown(metrics))
    rep.log(f"done in {metrics['wall_seconds']} s: {out / 'model.slim'} ({metrics['selected']})")


def _output_folder(out: str | Path, fresh: bool, world) -> Path:
    """The output folder, made (and emptied of cached stages with ``fresh``) by rank 0 only."""
    out = Path(out)
    if world.main:
        if out.exists() and not out.is_dir():
            raise SlimshipError(f"--out {out} exists and is not a folder: choose another path")
        out.mkdir(parents=True, exist_ok=True)
        if fresh and (out / ".work").exists():
            shutil.rmtree(out / ".work")
    world.barrier()
    return out


def _measure_and_package(models: list, reference: str, recipe: Recipe, rd: dict, adapter, data, pre, out: Path,
                         rep) -> dict:
    """Prepare every model's package, measure the exact graph it holds, write it once, choose the winner; return
    the run's metrics (without timings)."""
    from slimship.evaluate.decision import select_winner
    from slimship.evaluate.measure import EvalSet, measure_latency, measure_model
    from slimship.package import stage as package

    ev = recipe.evaluate
    pctx = package.PackageContext(adapter, out / "packages", data.class_names, pre, rd,
                                  recipe.transfer.delta.value_bits if recipe.transfer.delta else 8)
    pctx.folder.mkdir(exist_ok=True)
    val, test, example = EvalSet.of(data.val, pre), EvalSet.of(data.test, pre), adapter.example_input(1)
    prepared, measured = [], []
    for m in models:
        rep.log(f"measuring {m.name}")
        prepared.append(package.prepare(m, pctx))
        measured.append(measure_model(
            name=m.name, kind=m.kind, graph=prepared[-1].graph, model=m.model, example_input=example, val=val,
            test=test, compressed=m.compressed, pytorch_batch_sizes=ev.batch_sizes if m.name == reference else None,
            runs=ev.latency_runs, extra={"train_seconds": round(m.seconds, 1), "notes": m.notes}))
    rep.log(f"latency: {len(measured)} deploy graphs, interleaved, batch sizes {ev.batch_sizes}")
    measure_latency(measured, {p.source.name: p.graph for p in prepared}, example, batch_sizes=ev.batch_sizes,
                    runs=ev.latency_runs)
    for p, m in zip(prepared, measured):
        path, m.size_bytes = package.write(p, pctx, m.to_dict())
        m.package = str(path)
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
