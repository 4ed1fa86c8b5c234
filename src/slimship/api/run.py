"""``run(recipe, out)``: data → model → transfer → compress → measure → package, one stage after another.

Each stage is a module with typed inputs and results; this module only wires them together and writes the run's
outputs. Every stage's result is cached under ``OUT/.work`` keyed by the hash of what produced it, so an
interrupted run resumes where it stopped, and a re-run with a changed compression plan does not redo the transfer.
The pieces :func:`run` wires (:func:`open_stages`, :func:`package_context`, :func:`measure_prepared`,
:func:`write_packages`) are what ``slimship search`` calls too, once per trial.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimship.api.run_folder import RunFolder
from slimship.core.atomic import write_atomically, write_text_atomically
from slimship.core.cache import StageCache, stage_key
from slimship.core.progress import Reporter
from slimship.recipe import Recipe, recipe_to_dict


def run(recipe: Recipe, out: str | Path, *, quiet: bool = False, fresh: bool = False,
        device: str | None = None) -> dict:
    """Execute ``recipe`` and write OUT/{metrics.json, report.md, report.html, run.log, model.slim, packages/}.

    ``device`` ("cpu", "cuda", "auto") overrides the recipe's ``device.type``. Launched by torchrun, every process
    calls this; training and evaluation are shared between them and only rank 0 writes (docs/distributed.md).
    Returns the metrics dictionary (the content of metrics.json) on every process. Raises SlimshipError for bad input.
    While the outputs are written, OUT/INCOMPLETE marks the folder unfinished; a killed run leaves it there and
    the next run into OUT repairs the folder (see :mod:`slimship.api.run_folder`).
    """
    import torch

    from slimship.api.refit import refit
    from slimship.compress.pipeline import compress
    from slimship.core.runtime import runtimes_to_measure

    runtimes_to_measure(recipe.evaluate.runtimes)  # a runtime the recipe asks for but is missing: fail before training
    t_start = time.perf_counter()
    dev = run_device(recipe, device)
    folder, world = open_run_folder(out, fresh, dev.world), dev.world  # api/run_folder.py
    out = folder.path
    rep = Reporter(out / "run.log" if world.main else None, quiet=quiet or not world.main)
    for note in folder.notes:
        rep.log(note)
    try:
        rep.log(f"device: {_where(dev)}")
        st = open_stages(recipe, out, rep, dev)
        compressed = compress(recipe.compress.candidates, st.ctx, st.cache, st.reference.key)
        devices = world.all_gather_json(f"{dev.describe()['device']} ({dev.name()})")
        metrics = None
        if world.main:  # measuring and packaging are rank 0's alone; the others wait for its metrics
            folder.begin_outputs()  # from here until finish() the folder is marked INCOMPLETE
            metrics = _measure_and_package([*st.transferred.models, *compressed], st.reference.name, st, out)
        if recipe.refit:  # every process trains the refit; rank 0 measures and ships it (api/refit.py)
            shipped = world.broadcast_json(metrics["selected"] if world.main else None)
            fit = refit(st, shipped, lambda fingerprint: data_key(recipe, fingerprint, dev))
            if world.main:
                metrics["refit"] = _measure_refit(fit, st, out)
        if world.main:
            metrics.update(wall_seconds=round(time.perf_counter() - t_start, 1), threads=torch.get_num_threads(),
                           device={**dev.describe(), "devices": devices}, measured_on=_measured_on(),
                           reference_choice=st.transferred.choice)
            _write_reports(metrics, out, rep)
            folder.finish()
            shipped = (metrics.get("refit") or {}).get("shipped") or metrics["selected"]
            rep.log(f"done in {metrics['wall_seconds']} s: {out / 'model.slim'} ({shipped})")
        return world.broadcast_json(metrics)
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


def run_device(recipe: Recipe, override: str | None = None):
    """The run's Device: the recipe's ``device`` section, ``override`` (the CLI's --device) winning over its type."""
    from slimship.core.device import resolve_device
    from slimship.models.kinds import adapter_for

    d = recipe.device
    cpu_auto = getattr(adapter_for(recipe.model), "cpu_precision", "fp32")  # a kind that does not say: fp32
    return resolve_device(override or d.type, d.precision, batch_scale=d.batch_scale, compile=d.compile,
                          micro_batch=d.micro_batch, cpu_auto=cpu_auto)


def _measured_on() -> dict:
    """Where accuracy and latency of the deploy graphs are measured: the runtime on this machine's CPU."""
    from slimship.core.device import cpu_name
    from slimship.core.runtime import cpu_threads

    return {"device": "cpu", "cpu": cpu_name(), "threads": cpu_threads()}


def _where(dev) -> str:
    w = dev.world
    procs = f", {w.size} processes ({w.backend})" if w.distributed else ""
    return f"{dev.describe()['device']} ({dev.name()}), {dev.precision}{procs}"


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


def open_stages(recipe: Recipe, out: Path, rep: Reporter, dev=None) -> Stages:
    """Load the data, build the model and transfer it (cached in ``out/.work``) on ``dev`` (default: the recipe's)."""
    import torch

    from slimship.compress import CompressContext
    from slimship.data.task import load_task_data, prepare_task_data
    from slimship.models.kinds import adapter_for
    from slimship.transfer import TransferInputs, transfer

    dev = dev or run_device(recipe)
    torch.manual_seed(recipe.seed)
    cache, rd = StageCache(out / ".work", dev.world), recipe_to_dict(recipe)
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
    transferred = transfer(TransferInputs(section=recipe.transfer, seed=recipe.seed, adapter=adapter,
                                          pretrained=built.model, data=data, pre=pre, cache=cache,
                                          base_key=data_key(recipe, data.fingerprint, dev), reporter=rep, device=dev))
    ref = transferred.reference
    ctx = CompressContext(adapter=adapter, train=data.train, val=data.val, pre=pre, teacher=ref.model,
                          num_classes=data.num_classes, log=rep.log, progress=rep, seed=recipe.seed,
                          device=dev, source=built.model)
    return Stages(recipe, rd, adapter, data, pre, cache, dev, transferred, ctx, rep)


def data_key(recipe: Recipe, fingerprint: str, dev) -> str:
    """The stage key every transfer stage starts from: model, data section, seed, the data's ``fingerprint``.
    The data's bytes are part of the key: editing the image folder must not reuse stale stage results. A scaled
    batch trains differently, so it is part of the key too (the device itself is not: a run may resume on another
    device)."""
    rd = recipe_to_dict(recipe)
    scale = [{"batch_scale": dev.batch_scale}] if dev.batch_scale != 1 else []
    return stage_key(rd["model"], rd["data"], recipe.seed, fingerprint, *scale)


def open_run_folder(out: str | Path, fresh: bool = False, world=None, clean: bool = True) -> RunFolder:
    """``out`` as a run folder, made (and emptied of cached stages with ``fresh``, and of a killed run's temporary
    files) by rank 0 only."""
    folder = RunFolder.open(out, fresh, clean) if world is None or world.main else RunFolder(Path(out))
    if world is not None:
        world.barrier()
    return folder


def output_folder(out: str | Path, fresh: bool = False, world=None, clean: bool = True) -> Path:
    """``out`` as a folder (see :func:`open_run_folder`)."""
    return open_run_folder(out, fresh, world, clean).path


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
    from slimship.core.runtime import runtimes_to_measure
    from slimship.evaluate.measure import EvalSet, measure_model
    from slimship.package import stage as package

    ev = st.recipe.evaluate
    val, test, example = EvalSet.of(st.data.val, st.pre), EvalSet.of(st.data.test, st.pre), st.adapter.example_input(1)
    prepared, measured, runtimes = [], [], runtimes_to_measure(ev.runtimes)
    for m in models:
        st.rep.log(f"measuring {m.name}")
        prepared.append(package.prepare(m, pctx))
        measured.append(measure_model(
            name=m.name, kind=m.kind, graph=prepared[-1].graph, model=m.model, example_input=example, val=val,
            test=test, compressed=m.compressed, runtimes=runtimes, pytorch_batch_sizes=ev.batch_sizes if m.name == reference else None,
            runs=ev.latency_runs, num_classes=st.data.num_classes,
            extra={"train_seconds": round(m.seconds, 1), "epochs": _epochs(m.notes), "notes": m.notes}))
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
    from slimship.evaluate.decision import decide
    from slimship.evaluate.measure import EvalSet, predictions_arrays

    recipe, data, pre = st.recipe, st.data, st.pre
    ev = recipe.evaluate
    measured = _measure_and_write(models, reference, st, package_context(st, out / "packages"), "deploy graphs",
                                  "finetuned")
    val, test, example = EvalSet.of(data.val, pre), EvalSet.of(data.test, pre), st.adapter.example_input(1)
    runtimes = sorted({rt for m in measured for rt in m.runtimes})
    decision = decide(measured, reference=reference, budget_points=recipe.compress.accuracy_budget,
                      confidence=recipe.compress.confidence)
    st.rep.log(f"decision: {decision.summary()}")
    winner = next(m for m in measured if m.name == decision.shipped)
    _ship(winner, out)
    write_atomically(out / "predictions.npz", lambda tmp: _savez(tmp, predictions_arrays(measured, test.labels)))
    return {
        "slimship_version": __import__("slimship").__version__,
        "recipe": recipe.name,
        "dataset": {**data.info, "class_names": data.class_names, "num_classes": data.num_classes,
                    **pre.summary(), "input": pre.describe(), "preprocessing": pre.to_dict()},
        "reference": reference,
        "accuracy_budget_points": recipe.compress.accuracy_budget,
        "selected": winner.name,
        "package": str(out / "model.slim"),
        "decision": decision.to_dict(),
        "conditions": _conditions(ev, example, val, test, runtimes),
        "recipe_spec": st.rd,
        "models": [m.to_dict() for m in measured],
    }


def _measure_and_write(models: list, reference: str, st: Stages, pctx, what: str, full: str) -> list:
    """Measure every model's package graph (accuracy, then latency interleaved across all of them, then peak
    memory) and write the packages with their figures, and task deltas against ``full``'s size. Returns the
    measurements."""
    from slimship.core.memory import release_memory
    from slimship.evaluate.measure import measure_latency, measure_memory
    from slimship.evaluate.runtime_choice import describe

    ev, rep = st.recipe.evaluate, st.rep
    prepared, measured = measure_prepared(models, reference, st, pctx)
    graphs, example = {p.source.name: p.graph for p in prepared}, st.adapter.example_input(1)
    runtimes = sorted({rt for m in measured for rt in m.runtimes})
    rep.log(f"latency: {len(measured)} {what} in {', '.join(runtimes)}, interleaved, batch sizes "
            f"{ev.batch_sizes}; peak memory")
    release_memory()  # every session of every runtime is alive while timing: start from a trimmed heap
    measure_latency(measured, graphs, example, batch_sizes=ev.batch_sizes, runs=ev.latency_runs)
    rep.log("fastest runtime (ships for it): " + "; ".join(f"{m.name} {describe(m.runtime_by_batch, m.runtime)}"
                                                          for m in measured))
    measure_memory(measured, graphs, example, batch_sizes=ev.batch_sizes)
    write_packages(prepared, measured, pctx)
    _write_deltas(prepared, measured, pctx, full, rep)
    return measured


def _ship(winner, out: Path) -> None:
    """``out/model.slim``: a copy of ``winner``'s package, replaced atomically."""
    write_atomically(out / "model.slim", lambda tmp: shutil.copyfile(winner.package, tmp))


def _write_deltas(prepared: list, measured: list, pctx, full: str, rep) -> None:
    """Each task model trained as a delta on the pretrained base is also stored as that delta (``full``: the model
    whose full package its size is compared with)."""
    from slimship.package import stage as package

    for p, m in zip(prepared, measured):
        if p.delta is not None:
            size = next(x.size_bytes for x in measured if x.name == full)
            m.extra["delta_package"] = dp = package.write_delta(p, pctx, size)
            rep.log(f"{m.name}: stored as {dp['bytes']:,} bytes against packages/base.slim ({dp['base_bytes']:,} "
                    f"bytes, shared by every task)")


def _measure_refit(fit, st: Stages, out: Path) -> dict:
    """Measure the refit models (api/refit.py) on test, their latency interleaved against the refit reference's
    fp32 graph, write their packages and make the refit shipped model ``model.slim``. Returns metrics["refit"]."""
    import dataclasses

    from slimship.evaluate.measure import predictions_arrays

    if fit.skipped:
        return {"skipped": fit.skipped, "source": fit.source}
    # no validation figures: the refit models trained on those examples
    unseen = dataclasses.replace(st, data=dataclasses.replace(st.data, val=st.data.val.take(slice(0, 0))))
    measured = _measure_and_write(fit.models, fit.reference.name, unseen, package_context(st, out / "packages"),
                                  "refit graphs", fit.reference.name)
    winner = next(m for m in measured if m.name == fit.shipped)
    _ship(winner, out)
    old = out / "predictions.npz"
    arrays = _loadz(old) | {k: v for k, v in predictions_arrays(measured, unseen.data.test.y.numpy()).items()
                            if k.startswith("test/")}
    write_atomically(old, lambda tmp: _savez(tmp, arrays))
    st.rep.log(f"refit: ships {winner.name}: {100 * winner.accuracy:.2f} % on test "
               f"({fit.reference.name} {100 * measured[0].accuracy:.2f} %)")
    return {"shipped": winner.name, "source": fit.source, "reference": fit.reference.name, "epochs": fit.epochs,
            "train_examples": fit.train_examples, "recovery_scale": fit.recovery_scale,
            "package": str(out / "model.slim"),
            "models": [m.to_dict() for m in measured]}


def _loadz(path: Path) -> dict:
    import numpy as np

    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


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


def _conditions(ev, example, val, test, runtimes: list[str]) -> dict:
    """How every figure was measured; ``runtimes``: those each model was measured in (each ships for its fastest)."""
    from slimship.core.runtime import cpu_threads
    from slimship.evaluate.conditions import figure_conditions, machine_conditions
    from slimship.evaluate.measure import LATENCY_ROUNDS, LATENCY_WARMUP

    return {"machine": machine_conditions(threads=cpu_threads(), runtime=runtimes),
            **figure_conditions(runtime=runtimes, threads=cpu_threads(), input_shape=list(example.shape[1:]),
                                batch_sizes=ev.batch_sizes, latency_runs=ev.latency_runs, rounds=LATENCY_ROUNDS,
                                warmup=LATENCY_WARMUP, val_images=len(val.labels), test_images=len(test.labels))}
