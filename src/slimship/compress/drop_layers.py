"""Fewer transformer layers (e.g. 6 -> 3), then a recovery fine-tune distilled from the dense model.

Which layers stay: ``even`` keeps evenly spaced layers, always the first and the last (the embeddings' reader
and the layer the pooling reads); ``greedy`` removes one layer at a time, each time the one whose removal moves
the logits least from the dense teacher's on (up to 256) validation texts: no training, a few forward passes
per layer; ``indices`` names them. The layers really go (the ONNX graph, the bytes and the latency shrink); the
kept list is recorded as an arch edit, so the model rebuilds from the cache and packages without pickle.

Model-specific knowledge (where the layers are) comes from the model adapter's
:class:`~slimship.models.adapter.TransformerOps`; a model kind without them is refused in one line.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from slimship.compress.base import TRANSFORMER_OPS, CompressContext, ModelState, register_method
from slimship.compress.recovery import (TeacherProbe, TransformerRecovery, fixed_weights, recover_transformer,
                                       teacher_layers)
from slimship.core.errors import SlimshipError

if TYPE_CHECKING:
    from torch import nn


class DropLayersConfig(BaseModel):
    """Keep ``keep`` transformer layers (a count >= 1, or a fraction < 1 of them), then distilled recovery."""

    model_config = ConfigDict(extra="forbid")
    method: Literal["drop_layers"] = "drop_layers"
    keep: float = Field(0.5, gt=0)
    select: Literal["even", "greedy"] = "even"
    indices: list[int] | None = None  # the layers kept, by index (overrides keep and select)
    recovery: TransformerRecovery = TransformerRecovery(seconds=None, epochs=2, lr=1e-4)  # a fine-tuning rate


def kept_count(keep: float, n: int) -> int:
    """How many of ``n`` layers ``keep`` keeps; a SlimshipError when it is not a real reduction."""
    if keep >= 1 and keep != int(keep):
        raise SlimshipError(f"drop_layers keep: {keep} is neither a whole number of layers nor a fraction below 1: "
                            f"write e.g. keep: 3 or keep: 0.5")
    k = int(keep) if keep >= 1 else max(1, round(keep * n))
    if k >= n:
        raise SlimshipError(f"drop_layers keep: {keep} keeps all {n} layers of the model: keep fewer than {n}")
    return k


def even_layers(n: int, k: int) -> list[int]:
    """``k`` evenly spaced indices of ``n``, the first and the last always among them (6 -> 3: 0, 2, 5)."""
    if k == 1:
        return [n - 1]
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def greedy_layers(model: nn.Module, name: str, k: int, ctx: CompressContext) -> list[int]:
    """Remove layers one at a time, each time the one whose absence moves validation logits least."""
    from torch import nn

    probe = TeacherProbe(ctx)
    full = model.get_submodule(name)
    parent, _, child = name.rpartition(".")
    owner = model.get_submodule(parent) if parent else model
    kept = list(range(len(full)))
    try:
        while len(kept) > k:
            gaps = {}
            for drop in kept:
                setattr(owner, child, nn.ModuleList([full[i] for i in kept if i != drop]))
                gaps[drop] = probe.gap(model)
            drop = min(gaps, key=gaps.get)
            ctx.log(f"drop_layers: layer {drop} goes (KL to the teacher {gaps[drop]:.4f})")
            kept.remove(drop)
    finally:
        setattr(owner, child, full)
    return kept


@register_method(DropLayersConfig, requires=TRANSFORMER_OPS,
                 help="fewer transformer layers (evenly spaced or chosen on validation), distilled recovery")
def _drop_layers(state: ModelState, cfg: DropLayersConfig, ctx: CompressContext) -> ModelState:
    from slimship.models.adapter import transformer_ops
    from slimship.models.rebuild import arch_edits, keep_modules_

    ops = transformer_ops(ctx.adapter, "drop_layers")
    model = copy.deepcopy(state.model).eval()
    name = ops.layer_list(model)
    n = len(model.get_submodule(name))
    if cfg.indices is not None:
        if len(set(cfg.indices)) != len(cfg.indices) or not all(0 <= i < n for i in cfg.indices) or \
                len(cfg.indices) >= n:
            raise SlimshipError(f"drop_layers indices {cfg.indices}: name fewer than {n} distinct layers, each "
                                f"from 0 to {n - 1}")
        kept = sorted(cfg.indices)
    elif cfg.select == "greedy":
        kept = greedy_layers(model, name, kept_count(cfg.keep, n), ctx)
    else:
        kept = even_layers(n, kept_count(cfg.keep, n))
    keep_modules_(model, name, kept)
    ctx.log(f"drop_layers: {n} -> {len(kept)} layers (kept {kept})")
    before = teacher_layers(state, n)
    origin = [before[i] for i in kept]  # the teacher layer each kept one came from (a second drop_layers composes)
    r = recover_transformer(model, cfg.recovery, ctx, "drop-layers recovery", ops, origin, fixed_weights(state))
    ctx.log(f"drop_layers: val {r.best_val_accuracy:.4f} after recovery")
    edits = arch_edits(ctx.fresh_model(), model)
    return ModelState(model=model, arch_edits=edits,
                      notes={**state.notes, "drop_layers": {"layers_before": n, "kept": kept},
                             "teacher_layers": origin})
