"""Structured pruning of transformers: whole attention heads and feed-forward neurons go, in rounds, each
followed by a recovery fine-tune distilled from the dense model (like :mod:`.prune_channels` for CNNs).

Importance is read from each layer's two output projections (the adapter's
:class:`~slimship.models.adapter.TransformerBlock`): ``taylor`` is the first-order estimate of the loss change
when a head or neuron is removed, ``|sum(W * dL/dW)|`` over the projection's input columns it feeds (the same as
the gradient of a mask on its output, Michel et al. 2019), summed over training batches; ``magnitude`` is those
columns' L2 norm. Heads compete across layers (scores normalised per layer, as in Michel et al.; every layer
keeps ``min_heads``); neurons are removed in the same proportion from every layer, widths a multiple of
``round_to``. The Linear layers really shrink (ONNX graph, bytes, latency); shapes and head counts are recorded
as arch edits, so the model rebuilds without pickle.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from slimship.compress.base import TRANSFORMER_OPS, CompressContext, ModelState, register_method
from slimship.compress.recovery import TransformerRecovery, fixed_weights, recover_transformer, teacher_layers

if TYPE_CHECKING:
    import torch
    from torch import nn

    from slimship.models.adapter import TransformerBlock, TransformerOps


class PruneTransformerConfig(BaseModel):
    """Remove ``heads`` of the attention heads and ``ffn`` of each layer's feed-forward neurons, in rounds."""

    model_config = ConfigDict(extra="forbid")
    method: Literal["prune_transformer"] = "prune_transformer"
    heads: float = Field(0.25, ge=0, lt=1)  # fraction of all attention heads removed
    ffn: float = Field(0.25, ge=0, lt=1)  # fraction of every layer's feed-forward neurons removed
    importance: Literal["taylor", "magnitude"] = "taylor"
    steps: int = Field(2, ge=1, le=10)  # prune-recover rounds
    min_heads: int = Field(1, ge=1)  # heads every layer keeps
    round_to: int = Field(8, ge=1)  # feed-forward widths stay multiples of this (fast kernels)
    importance_examples: int = Field(256, ge=8)  # training texts the Taylor importance is summed over
    recovery: TransformerRecovery = TransformerRecovery(seconds=None, epochs=2, lr=1e-4)  # a fine-tuning rate

    @model_validator(mode="after")
    def _something_goes(self):
        if self.heads == 0 and self.ffn == 0:
            raise ValueError("prune_transformer removes nothing: set heads and/or ffn to a fraction above 0")
        return self


def _column_scores(linear: nn.Linear, groups: int, taylor: bool) -> torch.Tensor:
    """One score per ``groups`` equal blocks of ``linear``'s input columns (heads; neurons when groups = in)."""
    w = linear.weight.detach()
    if taylor and linear.weight.grad is not None:  # (no gradient: weights an earlier step fixed; magnitude then)
        return (w * linear.weight.grad).sum(0).reshape(groups, -1).sum(1).abs()
    return w.pow(2).sum(0).reshape(groups, -1).sum(1).sqrt()


def importance(model: nn.Module, blocks: list[TransformerBlock], cfg: PruneTransformerConfig,
               ctx: CompressContext) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(head scores, neuron scores) per layer."""
    import torch

    taylor = cfg.importance == "taylor"
    heads = [torch.zeros(b.heads) for b in blocks]
    ffn = [torch.zeros(b.ffn_out.in_features) for b in blocks]
    if not taylor:
        return ([_column_scores(b.attn_out, b.heads, False) for b in blocks],
                [_column_scores(b.ffn_out, b.ffn_out.in_features, False) for b in blocks])
    idx = torch.randperm(len(ctx.train), generator=torch.Generator().manual_seed(ctx.seed))[:cfg.importance_examples]
    model.eval()  # no dropout: the scores are of the model as it runs
    for b in blocks:  # the scores need these gradients, whatever an earlier stage left frozen
        b.attn_out.weight.requires_grad_(True)
        b.ffn_out.weight.requires_grad_(True)
    with torch.enable_grad(), ctx.device.holding(model):
        for i in range(0, len(idx), 32):
            j = idx[i:i + 32].sort().values
            model.zero_grad()
            x, y = ctx.device.put(ctx.pre.model_input(ctx.train.x[j])), ctx.device.put(ctx.train.y[j])
            torch.nn.functional.cross_entropy(model(x), y).backward()
            for b, h, f in zip(blocks, heads, ffn):
                h += _column_scores(b.attn_out, b.heads, True).cpu()
                f += _column_scores(b.ffn_out, b.ffn_out.in_features, True).cpu()
    model.zero_grad(set_to_none=True)
    return heads, ffn


def heads_to_keep(scores: list[torch.Tensor], remove: int, min_heads: int) -> list[list[int]]:
    """Per layer, the heads kept when the ``remove`` least important go (scores normalised per layer)."""
    ranked = sorted(((float(s[h] / s.norm().clamp_min(1e-12)), layer, h) for layer, s in enumerate(scores)
                     for h in range(len(s))))
    kept = [set(range(len(s))) for s in scores]
    gone = 0
    for _, layer, h in ranked:
        if gone >= remove:
            break
        if len(kept[layer]) > min(min_heads, len(scores[layer])):
            kept[layer].discard(h)
            gone += 1
    return [sorted(k) for k in kept]


def neurons_to_keep(scores: torch.Tensor, width: int) -> list[int]:
    return sorted(scores.argsort(descending=True)[:width].tolist())


def prune_round_(model: nn.Module, ops: TransformerOps, cfg: PruneTransformerConfig, ctx: CompressContext,
                 heads_goal: int, ffn_goals: list[int]) -> None:
    """Prune ``model`` down to ``heads_goal`` heads in all and ``ffn_goals[layer]`` neurons per layer."""
    blocks = ops.blocks(model)
    h_scores, f_scores = importance(model, blocks, cfg, ctx)
    have = sum(b.heads for b in blocks)
    if heads_goal < have:
        for layer, keep in enumerate(heads_to_keep(h_scores, have - heads_goal, cfg.min_heads)):
            if len(keep) < blocks[layer].heads:
                ops.keep_heads_(model, layer, keep)
    for layer, (b, goal) in enumerate(zip(blocks, ffn_goals)):
        if goal < b.ffn_out.in_features:
            ops.keep_neurons_(model, layer, neurons_to_keep(f_scores[layer], goal))


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@register_method(PruneTransformerConfig, requires=TRANSFORMER_OPS,
                 help="remove attention heads and feed-forward neurons (Taylor or magnitude importance) in rounds, "
                      "distilled recovery after each")
def _prune_transformer(state: ModelState, cfg: PruneTransformerConfig, ctx: CompressContext) -> ModelState:
    from slimship.models.adapter import transformer_ops
    from slimship.models.rebuild import arch_edits

    ops = transformer_ops(ctx.adapter, "prune_transformer")
    model = copy.deepcopy(state.model).eval()
    blocks = ops.blocks(model)
    heads0 = sum(b.heads for b in blocks)
    widths0 = [b.ffn_out.in_features for b in blocks]
    params0 = _count(model)
    frozen = fixed_weights(state)
    for rnd in range(cfg.steps):
        share = (rnd + 1) / cfg.steps
        heads_goal = max(round(heads0 * (1 - cfg.heads * share)), len(blocks) * cfg.min_heads)
        ffn_goals = [max(cfg.round_to, cfg.round_to * round(w * (1 - cfg.ffn * share) / cfg.round_to)) if cfg.ffn
                     else w for w in widths0]
        prune_round_(model, ops, cfg, ctx, heads_goal, ffn_goals)
        now = ops.blocks(model)
        ctx.log(f"prune_transformer round {rnd + 1}/{cfg.steps}: heads {heads0} -> {sum(b.heads for b in now)}, "
                f"FFN {sum(widths0)} -> {sum(b.ffn_out.in_features for b in now)}, params {params0 / 1e6:.2f}M -> "
                f"{_count(model) / 1e6:.2f}M")
        r = recover_transformer(model, cfg.recovery, ctx, f"prune-transformer recovery {rnd + 1}/{cfg.steps}", ops,
                                teacher_layers(state, len(blocks)), frozen, share=cfg.steps, seed_offset=rnd)
        ctx.log(f"prune_transformer recovery {rnd + 1}: val {r.best_val_accuracy:.4f}")
    now = ops.blocks(model)
    info = {"heads_before": heads0, "heads_after": sum(b.heads for b in now), "heads_per_layer": [b.heads for b in now],
            "ffn_before": widths0, "ffn_after": [b.ffn_out.in_features for b in now], "params_before": params0,
            "params_after": _count(model)}
    edits = arch_edits(ctx.fresh_model(), model)
    return ModelState(model=model, arch_edits=edits, notes={**state.notes, "prune_transformer": info})
