"""Unstructured magnitude pruning with layer-aware exclusions and a gradual (Zhu & Gupta cubic) schedule.

Global magnitude pruning of EfficientNet-Lite0 collapses to 10-44 % (REFERENCE.md): depthwise kernels and
BN-coupled layers are small in magnitude and get emptied. Here the stem, depthwise convs and the classifier
are spared by default, no layer goes above ``max_layer_sparsity``, sparsity grows gradually during a recovery
fine-tune distilled from the dense model, and the final masks stay fixed for every later step (clustering,
quantization, fine-tuning), so zeros stay zero.
"""

from __future__ import annotations

import copy
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from slimship.compress.base import CompressContext, ModelState, register_method
from slimship.compress.recovery import Recovery, fixed_weights, recover, recovery_config


class UnstructuredConfig(BaseModel):
    """Zero out individual weights (same shapes; fewer nonzeros; the package stores only the nonzeros)."""

    model_config = ConfigDict(extra="forbid")
    method: Literal["unstructured"] = "unstructured"
    sparsity: float = Field(0.8, gt=0, lt=1)  # of the prunable layers' weights
    scope: Literal["layer", "global"] = "layer"
    spare: list[Literal["first", "last", "depthwise"]] = ["first", "last", "depthwise"]
    max_layer_sparsity: float = Field(0.95, gt=0, le=1)
    schedule: Literal["gradual", "oneshot"] = "gradual"
    # "sensitivity": measure each layer's validation cost at several sparsities, then spread the global
    # target across layers where it costs least (layer scope only)
    allocation: Literal["uniform", "sensitivity"] = "uniform"
    nm: tuple[int, int] | None = None  # e.g. (2, 4): N of every M consecutive input weights kept (overrides sparsity)
    # "before_transfer" (sparse transfer): prune the pretrained source once, then fine-tune it on the task with
    # the masks locked (the recovery budget is the transfer; distilled from the dense fine-tune). Must be the
    # first step of its candidate.
    order: Literal["after_transfer", "before_transfer"] = "after_transfer"
    recovery: Recovery = Recovery()

    @property
    def starts_from_source(self) -> bool:
        """Sparse transfer starts from the pretrained model, so it must be its candidate's first step."""
        return self.order == "before_transfer"

    @model_validator(mode="after")
    def _source(self):
        if self.order == "before_transfer" and self.allocation == "sensitivity":
            raise ValueError("allocation sensitivity measures the task model; with order before_transfer use uniform")
        return self


def cubic_sparsity(final: float, progress: float, end: float = 0.75) -> float:
    """Zhu & Gupta (2017): s_t = s_f * (1 - (1 - t/end)^3), reaching ``final`` at ``end`` of the budget."""
    t = min(1.0, max(0.0, progress / end))
    return final * (1 - (1 - t) ** 3)


@register_method(UnstructuredConfig,
                 help="magnitude pruning (layer-wise/global, N:M), depthwise/first/last spared, gradual cubic schedule, distilled")
def _unstructured(state: ModelState, cfg: UnstructuredConfig, ctx: CompressContext) -> ModelState:
    from slimship.compress.sparsity import apply_masks_, magnitude_masks, prunable_layers, weight_masks

    before = cfg.order == "before_transfer"
    if before and ctx.source is None:
        raise ValueError("internal: order before_transfer needs CompressContext.source (the pretrained model)")
    model = copy.deepcopy(ctx.source if before else state.model)
    keep_zero = weight_masks(model)  # zeros from earlier steps stay zero
    layers = prunable_layers(model, cfg.spare)
    cur = {"s": -1.0, "masks": {}}
    per_layer, notes = None, {}
    if cfg.allocation == "sensitivity" and cfg.nm is None:
        per_layer, notes = _sensitivity_allocation(model, layers, cfg, ctx)

    def update(progress: float) -> None:
        oneshot = cfg.schedule == "oneshot" or cfg.nm or before  # sparse transfer: the source is pruned once
        s = cfg.sparsity if oneshot else cubic_sparsity(cfg.sparsity, progress)
        if s - cur["s"] >= 0.005 or (s == cfg.sparsity and cur["s"] != cfg.sparsity):
            cur["masks"] = magnitude_masks(layers, s, cfg, per_layer)
            cur["s"] = s
        apply_masks_(layers, cur["masks"])
        apply_masks_(dict(model.named_modules()), keep_zero)

    update(0.0)
    r = recover(model, recovery_config(cfg.recovery, ctx, fixed_weights(state)), ctx,
                "sparse transfer" if before else "unstructured", after_step=lambda m, p: update(p))
    update(1.0)
    nz = sum(int((m.weight != 0).sum()) for m in layers.values())
    tot = sum(m.weight.numel() for m in layers.values())
    ctx.log(f"unstructured{' (source pruned, then transferred)' if before else ''}: "
            f"{100 * (1 - nz / max(tot, 1)):.1f} % of {len(layers)} layers' weights are zero; val {r.best_val_accuracy:.4f}")
    return ModelState(model=model, arch_edits=state.arch_edits,
                      notes={**state.notes, "unstructured": {"layer_sparsity": round(1 - nz / max(tot, 1), 4),
                                                             "layers": len(layers), "order": cfg.order, **notes}})


def _sensitivity_allocation(model, layers, cfg: UnstructuredConfig, ctx: CompressContext) -> tuple[dict, dict]:
    """Measure per-layer pruning cost on (a subset of) validation data and allocate the target from it."""
    from slimship.compress.sensitivity import allocate_sparsity, prune_sensitivity
    from slimship.transfer.trainer import accuracy

    val = ctx.val.take(slice(0, 500))
    levels = [s for s in (0.3, 0.5, 0.7, 0.8, 0.9, 0.95) if s <= cfg.max_layer_sparsity]
    base, table = prune_sensitivity(layers, levels, lambda: accuracy(model, val, ctx.pre, ctx.device))
    sizes = {n: m.weight.numel() for n, m in layers.items()}
    alloc = allocate_sparsity(table, sizes, cfg.sparsity)
    ctx.log("sensitivity allocation: " + ", ".join(f"{n}={s:.2f}" for n, s in alloc.items()))
    drop = {n: {f"{lvl:g}": d for lvl, d in row.items()} for n, row in table.items()}  # JSON keys are strings
    return alloc, {"sensitivity": {"val_subset_accuracy": base, "drop": drop}, "allocation": alloc}
