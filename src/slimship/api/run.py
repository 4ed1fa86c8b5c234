"""``run(recipe, out)``: data → model → transfer → compress → measure → package, one stage after another.

Each stage is a module with typed inputs and results; this module only wires them together and writes the run's
outputs. Every stage's result is cached under ``OUT/.work`` keyed by the hash of what produced it, so an
interrupted run resumes where it stopped, and a re-run with a changed compression plan does not redo the transfer.
"""

from __future__ import annotations

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
        rep.log(f"data {recipe.data.source}: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test, "
                f"{data.num_classes} classes, {data.channels} channel(s), {pre.describe()}")
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
                       device=device.describe(), reference_choice=transferred.choice)
        _write_reports(metrics, out, rep)
        rep.log(f"done in {metrics['wall_seconds']} s: {out / 'model.slim'} ({metrics['selected']})")
        return metrics
    finally:
        rep.close()


def _write_reports(metrics: dict, out: Path, rep) -> None:
    """metrics.json, report.md and the self-contained report.html."""
    from slimship.api.report import write_html_report
    from slimship.evaluate.jsonfmt import dumps
    from slimship.evaluate.report import render_markdown

    write_text_atomically(out / "metrics.json", dumps(metrics))
    write_text_atomically(out / "report.md", render_markdown(metrics))
    rep.log(f"report: {write_html_report(out)}")


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
    from slimship.evaluate.decision import decide
    from slimship.evaluate.measure import EvalSet, measure_latency, measure_memory, measure_model, predictions_arrays
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
            runs=ev.latency_runs, num_classes=data.num_classes,
            extra={"train_seconds": round(m.seconds, 1), "epochs": _epochs(m.notes), "notes": m.notes}))
    graphs = {p.source.name: p.graph for p in prepared}
    rep.log(f"latency: {len(measured)} deploy graphs, interleaved, batch sizes {ev.batch_sizes}; peak memory")
    measure_latency(measured, graphs, example, batch_sizes=ev.batch_sizes, runs=ev.latency_runs)
    measure_memory(measured, graphs, example, batch_sizes=ev.batch_sizes)
    for p, m in zip(prepared, measured):
        path, m.size_bytes = package.write(p, pctx, m.to_dict())
        m.package = str(path)
    for p, m in zip(prepared, measured):
        if p.delta is not None:
            full = next(x.size_bytes for x in measured if x.name == "finetuned")
            m.extra["delta_package"] = dp = package.write_delta(p, pctx, full)
            rep.log(f"{m.name}: stored as {dp['bytes']:,} bytes against packages/base.slim ({dp['base_bytes']:,} "
                    f"bytes, shared by every task)")
    decision = decide(measured, reference=reference, budget_points=recipe.compress.accuracy_budget,
                      confidence=recipe.compress.confidence)
    rep.log(f"decision: {decision.summary()}")
    winner = next(m for m in measured if m.name == decision.shipped)
    write_atomically(out / "model.slim", lambda tmp: shutil.copyfile(winner.package, tmp))
    write_atomically(out / "predictions.npz", lambda tmp: _savez(tmp, predictions_arrays(measured, test.labels)))
    return {
        "slimship_version": __import__("slimship").__version__,
        "recipe": recipe.name,
        "dataset": {**data.info, "class_names": data.class_names, "num_classes": data.num_classes,
                    **pre.summary(), "preprocessing": pre.to_dict()},
        "reference": reference,
        "accuracy_budget_points": recipe.compress.accuracy_budget,
        "selected": winner.name,
        "package": str(out / "model.slim"),
        "decision": decision.to_dict(),
        "conditions": _conditions(ev, example, val, test),
        "recipe_spec": rd,
        "models": [m.to_dict() for m in measured],
    }


def _epochs(notes: dict) -> float | None:
    """Epochs a model's training actually ran: its own (transfer), or the sum of its chain's recoveries."""
    if "epochs" in notes:
        return notes["epochs"]
    runs = notes.get("training")
    return None if runs is None else round(sum(t["epochs"] for t in runs), 3)


def _savez(path: Path, arrays: dict) -> None:
    import numpy as np

    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)


def _conditions(ev, example, val, test) -> dict:
    from slimship.core.runtime import cpu_threads
    from slimship.evaluate.conditions import figure_conditions, machine_conditions
    from slimship.evaluate.measure import LATENCY_ROUNDS, LATENCY_WARMUP

    return {"machine": machine_conditions(threads=cpu_threads()),
            **figure_conditions(runtime="onnxruntime", threads=cpu_threads(), input_shape=list(example.shape[1:]),
                                batch_sizes=ev.batch_sizes, latency_runs=ev.latency_runs, rounds=LATENCY_ROUNDS,
                                warmup=LATENCY_WARMUP, val_images=len(val.labels), test_images=len(test.labels))}
