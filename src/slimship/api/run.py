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


def run(recipe: Recipe, out: str | Path, *, quiet: bool = False, fresh: bool = False) -> dict:
    """Execute ``recipe`` and write OUT/{metrics.json, report.md, run.log, model.slim, packages/*.slim}.

    Returns the metrics dictionary (the content of metrics.json). Raises SlimshipError for bad input.
    """
    import torch

    from slimship.compress import CompressContext
    from slimship.compress.pipeline import compress
    from slimship.core.device import resolve_device
    from slimship.data.task import load_task_data, prepare_task_data
    from slimship.models.kinds import adapter_for
    from slimship.transfer import TransferInputs, transfer

    out = _output_folder(out, fresh)
    rep = Reporter(out / "run.log", quiet=quiet)
    t_start = time.perf_counter()
    torch.manual_seed(recipe.seed)
    cache, rd, device = StageCache(out / ".work"), recipe_to_dict(recipe), resolve_device()
    try:
        adapter = adapter_for(recipe.model)
        splits = load_task_data(recipe.data, seed=recipe.seed)
        pre = adapter.preprocessing(splits.channels)
        data = prepare_task_data(splits, pre)
        channels = f"{data.channels} channel(s), " if data.channels else ""  # texts have none
        rep.log(f"data {recipe.data.source}: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test, "
                f"{data.num_classes} classes, {channels}{pre.describe()}")
        built = adapter.build(data.num_classes)
        w = built.weights_report
        rep.log(f"model {adapter.architecture}: weights {w.get('source')} ({w.get('layout', '-')}, {w.get('loaded', 0)} tensors)")
        # The data's bytes are part of the key: editing the image folder must not reuse stale stage results.
        base_key = stage_key(rd["model"], rd["data"], recipe.seed, data.fingerprint)
        transferred = transfer(TransferInputs(section=recipe.transfer, seed=recipe.seed, adapter=adapter,
                                              pretrained=built.model, data=data, pre=pre, cache=cache,
                                              base_key=base_key, reporter=rep, device=device))
        ref = transferred.reference
        ctx = CompressContext(adapter=adapter, train=data.train, val=data.val, pre=pre, teacher=ref.model,
                              num_classes=data.num_classes, log=rep.log, progress=rep, seed=recipe.seed,
                              device=device, source=built.model)
        compressed = compress(recipe.compress.candidates, ctx, cache, ref.key)
        metrics = _measure_and_package([*transferred.models, *compressed], ref.name, recipe, rd, adapter, data, pre,
                                       out, rep)
        metrics.update(wall_seconds=round(time.perf_counter() - t_start, 1), threads=torch.get_num_threads(),
                       device=device.describe())
        write_text_atomically(out / "metrics.json", json.dumps(metrics, indent=2, default=str))
        from slimship.evaluate.report import render_markdown

        write_text_atomically(out / "report.md", render_markdown(metrics))
        rep.log(f"done in {metrics['wall_seconds']} s: {out / 'model.slim'} ({metrics['selected']})")
        return metrics
    finally:
        rep.close()


def _output_folder(out: str | Path, fresh: bool) -> Path:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SlimshipError(f"--out {out} exists and is not a folder: choose another path")
    out.mkdir(parents=True, exist_ok=True)
    if fresh and (out / ".work").exists():
        shutil.rmtree(out / ".work")
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
                    **pre.summary(), "input": pre.describe(), "preprocessing": pre.to_dict()},
        "reference": reference,
        "accuracy_budget_points": recipe.compress.accuracy_budget,
        "selected": winner.name,
        "package": str(out / "model.slim"),
        "models": [m.to_dict() for m in measured],
    }
