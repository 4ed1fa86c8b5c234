"""Low-rank factorization of Linear layers and 1×1 convolutions, rank chosen by an energy threshold.

A weight W [out, in] becomes B·A with A [r, in] and B [out, r], where r is the smallest rank keeping
``energy`` of the squared singular values. A layer is factored only when that saves at least ``min_saving``
of its parameters (and MACs: for 1×1 convs and Linear layers the two are proportional). A distilled recovery
fine-tune follows.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from slimship.compress.base import CompressContext, ModelState, register_method
from slimship.compress.recovery import Recovery, fixed_weights, recover, recovery_config

if TYPE_CHECKING:
    from torch import nn


class LowRankConfig(BaseModel):
    """Factor 1×1 convs and Linear layers whose spectrum allows it (``energy`` kept, ``min_saving`` gained)."""

    model_config = ConfigDict(extra="forbid")
    method: Literal["lowrank"] = "lowrank"
    energy: float = Field(0.95, gt=0, le=1)
    min_saving: float = Field(0.25, ge=0, lt=1)
    spare: list[Literal["first", "last"]] = ["last"]
    recovery: Recovery = Recovery(seconds=60)


def factor_lowrank_(model: nn.Module, cfg: LowRankConfig) -> dict[str, dict]:
    """Replace eligible layers in place; returns ``{name: {"in", "rank", "out", "kind", "bias"}}``."""
    import torch
    from torch import nn

    from slimship.compress.sparsity import prunable_layers
    from slimship.models.layers import make_lowrank

    done = {}
    for name, m in list(prunable_layers(model, list(cfg.spare)).items()):
        is_conv = isinstance(m, nn.Conv2d)
        if is_conv and (m.kernel_size != (1, 1) or m.groups != 1 or m.stride != (1, 1)):
            continue
        w = m.weight.detach().reshape(m.weight.shape[0], -1)
        out_f, in_f = w.shape
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        energy = torch.cumsum(s**2, 0) / (s**2).sum()
        r = int(torch.searchsorted(energy, torch.tensor(cfg.energy)).item()) + 1
        if r * (in_f + out_f) > (1 - cfg.min_saving) * in_f * out_f:
            continue
        new = make_lowrank("conv" if is_conv else "linear", in_f, r, out_f, m.bias is not None)
        a = (torch.diag(s[:r].sqrt()) @ vh[:r]).contiguous()
        b = (u[:, :r] @ torch.diag(s[:r].sqrt())).contiguous()
        with torch.no_grad():
            new[0].weight.copy_(a.reshape(new[0].weight.shape))
            new[1].weight.copy_(b.reshape(new[1].weight.shape))
            if m.bias is not None:
                new[1].bias.copy_(m.bias)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
        done[name] = dict(new.lowrank)
    return done


@register_method(LowRankConfig,
                 help="low-rank factorization of Linear and 1x1 convs, rank by an energy threshold, distilled recovery")
def _lowrank(state: ModelState, cfg: LowRankConfig, ctx: CompressContext) -> ModelState:
    from slimship.models.rebuild import arch_edits

    model = copy.deepcopy(state.model)
    done = factor_lowrank_(model, cfg)
    if done:
        r = recover(model, recovery_config(cfg.recovery, ctx, fixed_weights(state)), ctx, "low-rank")
        ctx.log(f"lowrank: {len(done)} layers factored; val {r.best_val_accuracy:.4f}")
    else:
        ctx.log("lowrank: no layer met the energy/saving thresholds; model unchanged")
    edits = arch_edits(ctx.fresh_model(), model)
    return ModelState(model=model, arch_edits=edits, notes={**state.notes, "lowrank": {"layers": len(done)}})
