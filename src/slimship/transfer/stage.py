"""The transfer stage: probe, fine-tune (full / partial / gradual unfreezing / layer-wise LR decay), the
sparse-delta variant, and the scratch baseline, each cached under its own key.

:func:`transfer` takes :class:`TransferInputs` and returns a :class:`TransferResult`: every trained model in
report order and the ``reference`` compression starts from.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from slimship.core.cache import StageCache, stage_key
from slimship.core.device import CPU, Device
from slimship.core.memory import release_memory
from slimship.core.preprocessing import rate_unit
from slimship.transfer.trainer import TrainConfig, train
from slimship.transfer.probe import extract_features, fit_linear_head, set_head_
from slimship.transfer.strategies import STRATEGIES

if TYPE_CHECKING:
    from torch import nn

    from slimship.core.preprocessing import Preprocessing
    from slimship.data.task import TaskData
    from slimship.models.adapter import ModelAdapter


@dataclass
class TrainedModel:
    """A model the transfer stage made. ``base`` is set for a task trained as a delta on the pretrained model
    (it is packaged as a delta against it)."""

    name: str
    kind: str
    model: nn.Module
    key: str
    seconds: float
    notes: dict = field(default_factory=dict)
    base: nn.Module | None = None
    onnx: bytes | None = None
    arch_edits: dict = field(default_factory=dict)
    compressed: bool = False


@dataclass
class TransferInputs:
    section: Any  # the recipe's TransferSection
    seed: int
    adapter: ModelAdapter
    pretrained: nn.Module  # built with the task's class count, pretrained body, untrained head
    data: TaskData
    pre: Preprocessing
    cache: StageCache
    base_key: str  # hash of model, data and seed
    reporter: Any
    device: Device = CPU


@dataclass
class TransferResult:
    models: list[TrainedModel]
    reference: TrainedModel  # what compression starts from: the best transferred model on validation
    choice: dict = field(default_factory=dict)  # how the reference was chosen (validation accuracies, warnings)

    def __getitem__(self, name: str) -> TrainedModel:
        return next(m for m in self.models if m.name == name)


def _train_config(t, *, budget, lr, bn, seed, freeze_stages=0, gradual=False, layer_decay=None) -> TrainConfig:
    return TrainConfig(
        epochs=budget.epochs, seconds=budget.seconds, lr=lr, weight_decay=t.weight_decay, batch_size=t.batch_size,
        label_smoothing=t.label_smoothing, bn=bn, freeze_stages=freeze_stages, gradual_unfreeze=gradual,
        layer_decay=layer_decay, hflip=t.augment.hflip, shift=t.augment.shift, evals=t.evals, seed=seed,
    )


def _notes(r) -> tuple[dict, float]:
    """(notes, seconds) of a :class:`~slimship.transfer.trainer.TrainResult`, as the stage cache keeps them."""
    return {"history": r.history, "steps": r.steps, "epochs": round(r.epochs, 3),
            "images_per_second": round(r.images_per_second, 1), "device": r.device}, r.seconds


def _ran(notes: dict) -> str:
    """What a training stage actually did, for the log: epochs (when known), steps."""
    ep = notes.get("epochs")
    return (f"{ep:.2f} epochs, " if ep is not None else "") + f"{notes['steps']} steps"


def _cached(cache: StageCache, key: str, model, run: Callable[[], tuple[dict, float]], name: str,
            log: Callable[[str], None]) -> tuple[dict, float]:
    """Load ``model``'s trained state from the stage cache (logging "NAME: restored from cache"), or ``run()``
    (trains ``model`` in place and returns ``(notes, seconds)``) and cache it. Returns ``(notes, seconds)``."""
    hit = cache.load(key)
    if hit is not None:
        model.load_state_dict(hit.state_dict())
        log(f"{name}: restored from cache")
        return hit.info["notes"], hit.info["seconds"]
    notes, secs = run()
    release_memory()  # the training's optimizer state and activations are freed: give their pages back
    cache.save(key, {"notes": notes, "seconds": secs}, model)
    return notes, secs


def _best_val(notes: dict) -> float:
    return max(h["val_accuracy"] for h in notes["history"])


def transfer(inp: TransferInputs) -> TransferResult:
    """Run the recipe's transfer section (see the module docstring)."""
    t = inp.section
    tdict = transfer_section_key(t)
    models = [_probe(inp)]
    if t.strategy != "probe":
        finetuned = STRATEGIES.get(t.strategy)(inp, models[0], tdict)
        models.append(finetuned)
        if t.delta is not None:
            models.append(_delta(inp, finetuned))
    reference, choice = choose_reference(models[:2], inp.reporter.log)
    if t.scratch_baseline:
        models.append(_scratch(inp, tdict))
    return TransferResult(models, reference, choice)


def transfer_section_key(t) -> dict:
    """The transfer section as the fine-tune's cache key holds it: without the scratch baseline's settings (which
    must not retrain the fine-tune), nor delta's and lora's (their own stages key on them)."""
    return t.model_dump(mode="json", exclude={"scratch_baseline", "scratch_budget", "scratch_lr", "delta", "lora"})


def choose_reference(transferred: list[TrainedModel], log: Callable[[str], None]) -> tuple[TrainedModel, dict]:
    """The transferred model (probe, fine-tune, ...; in stage order) with the best validation accuracy; a later
    stage wins a tie. A stage that ends below an earlier one is logged and recorded (``choice["warnings"]``):
    compression then starts from the better model, however the budget turned out."""
    val = {m.name: m.notes["val_accuracy"] for m in transferred}
    best = max(reversed(transferred), key=lambda m: m.notes["val_accuracy"])  # reversed: the later wins ties
    warnings = []
    for i, later in enumerate(transferred[1:], 1):
        earlier = max(transferred[:i], key=lambda m: m.notes["val_accuracy"])
        if later.notes["val_accuracy"] < earlier.notes["val_accuracy"]:
            warnings.append(f"{later.name} ended below {earlier.name} on validation ({later.notes['val_accuracy']:.4f} "
                            f"< {earlier.notes['val_accuracy']:.4f}); compression starts from {best.name}, the better "
                            f"model (a larger transfer budget or a lower lr may help {later.name})")
    for w in warnings:
        log(f"warning: {w}")
    log(f"reference: {best.name} (validation accuracy {', '.join(f'{k} {v:.4f}' for k, v in val.items())})")
    return best, {"reference": best.name, "val_accuracy": val, "warnings": warnings,
                  "rule": "the transferred model with the best validation accuracy (a later stage wins a tie)"}


def _probe(inp: TransferInputs) -> TrainedModel:
    """Linear probe on frozen features (also the head initialisation of LP-FT)."""
    key = stage_key(inp.base_key, "probe")
    model = copy.deepcopy(inp.pretrained)
    hit = inp.cache.load(key)
    if hit is not None:
        model.load_state_dict(hit.state_dict())
        info = hit.info["notes"]
        inp.reporter.log("probe: restored from cache")
    else:
        t0 = time.perf_counter()
        d = inp.data
        task = inp.reporter.task("features", total=len(d.train) + len(d.val))
        f_tr = extract_features(inp.adapter, model, d.train.x, inp.pre, task=task, device=inp.device)
        f_va = extract_features(inp.adapter, model, d.val.x, inp.pre, task=task, device=inp.device)
        task.done()
        head = inp.adapter.classifier(model)
        w, b, info = fit_linear_head(f_tr, d.train.y, f_va, d.val.y, head.out_features, device=inp.device)
        set_head_(head, w, b)
        info["seconds"] = time.perf_counter() - t0
        info["device"] = inp.device.describe()
        inp.cache.save(key, {"notes": info}, model)
    inp.reporter.log(f"probe: val {info['val_accuracy']:.4f} (L2 {info['l2']}, {info['seconds']:.0f} s)")
    return TrainedModel("probe", "probe", model.eval(), key, info["seconds"],
                        {"l2": info["l2"], "val_accuracy": info["val_accuracy"],
                         **({"device": info["device"]} if "device" in info else {})})


@STRATEGIES.register("finetune", help="every weight trains (layer-wise LR decay, gradual unfreezing optional)")
@STRATEGIES.register("partial", help="the embeddings / stem and the lowest freeze_stages layer groups stay frozen")
def _finetune(inp: TransferInputs, probe: TrainedModel, tdict: dict) -> TrainedModel:
    t = inp.section
    key = stage_key(inp.base_key, tdict)
    model = copy.deepcopy(probe.model if t.head_init == "probe" else inp.pretrained)
    cfg = _train_config(t, budget=t.budget, lr=t.lr, bn=t.bn, seed=inp.seed,
                        freeze_stages=t.freeze_stages if t.strategy == "partial" else 0,
                        gradual=t.gradual_unfreeze, layer_decay=t.layer_decay)
    notes, secs = _cached(inp.cache, key, model, lambda: _notes(train(
        model, inp.data.train, inp.data.val, inp.pre, cfg, groups=inp.adapter.layer_groups(model),
        progress=inp.reporter, desc=t.strategy, device=inp.device)), t.strategy, inp.reporter.log)
    inp.reporter.log(f"{t.strategy}: val {_best_val(notes):.4f} ({_ran(notes)}, "
                     f"{notes['images_per_second']} {rate_unit(inp.pre)}, {secs:.0f} s)")
    return TrainedModel("finetuned", t.strategy, model.eval(), key, secs, {**notes, "val_accuracy": _best_val(notes)})


def _delta(inp: TransferInputs, finetuned: TrainedModel) -> TrainedModel:
    """The fine-tune turned into base + a sparse delta (:mod:`slimship.transfer.delta`), cached."""
    from slimship.transfer.delta import train_sparse_delta

    t, dt = inp.section, inp.section.delta
    key = stage_key(finetuned.key, "delta", dt.model_dump(mode="json", exclude={"value_bits"}))
    model = copy.deepcopy(finetuned.model)
    cfg = _train_config(t, budget=dt.budget, lr=dt.lr, bn=t.bn, seed=inp.seed)
    cfg.kd_alpha = dt.kd_alpha
    base_state = inp.adapter.without_head(inp.pretrained).state_dict()

    def run():
        masks, r = train_sparse_delta(model, base_state, dt.density, (inp.data.train, inp.data.val), inp.pre,
                                      cfg, allocation=dt.allocation, dense_depthwise=dt.dense_depthwise,
                                      progress=inp.reporter, device=inp.device)
        return {"history": r.history, "steps": r.steps, "epochs": round(r.epochs, 3), "density": dt.density,
                "kept": masks.kept, "of": masks.total, "device": r.device}, r.seconds

    notes, secs = _cached(inp.cache, key, model, run, "delta", inp.reporter.log)
    inp.reporter.log(f"delta {dt.density:g}: val {_best_val(notes):.4f} ({notes['kept']:,} of {notes['of']:,} "
                     f"weights differ from the base; {_ran(notes)}, {secs:.0f} s)")
    return TrainedModel("finetuned-delta", "delta", model.eval(), key, secs, notes, base=inp.pretrained)


def _scratch(inp: TransferInputs, tdict: dict) -> TrainedModel:
    """The same architecture from random init, same budget: what transfer is worth."""
    t = inp.section
    key = stage_key(inp.base_key, tdict, "scratch", t.model_dump(mode="json", include={"scratch_budget", "scratch_lr"}))
    model = inp.adapter.build(inp.data.num_classes, pretrained=False).model
    cfg = _train_config(t, budget=t.scratch_budget or t.budget, lr=t.scratch_lr, bn="train", seed=inp.seed)
    notes, secs = _cached(inp.cache, key, model, lambda: _notes(train(
        model, inp.data.train, inp.data.val, inp.pre, cfg, groups=inp.adapter.layer_groups(model),
        progress=inp.reporter, desc="scratch", device=inp.device)), "scratch", inp.reporter.log)
    inp.reporter.log(f"scratch: val {_best_val(notes):.4f} ({_ran(notes)}, {secs:.0f} s)")
    return TrainedModel("scratch", "scratch", model.eval(), key, secs, notes)
