"""Low-rank factorization of Linear layers and 1×1 convolutions, rank chosen by an energy threshold.

A weight W [out, in] becomes B·A with A [r, in] and B [out, r], where r is the smallest rank keeping
``energy`` of the squared singular values. A layer is factored only when that saves at least ``min_saving``
of its parameters (and MACs: for 1×1 convs and Linear layers the two are proportional). A distilled recovery
fine-tune follows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from slimship.compress.prune_channels import Recovery

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


def make_lowrank(kind: str, in_f: int, rank: int, out_f: int, bias: bool):
    """The module that replaces a factored layer (also used to rebuild it from a package's arch_edits)."""
    from torch import nn

    class LowRank(nn.Sequential):
        lowrank = {"kind": kind, "in": in_f, "rank": rank, "out": out_f, "bias": bias}

    if kind == "conv":
        return LowRank(nn.Conv2d(in_f, rank, 1, bias=False), nn.Conv2d(rank, out_f, 1, bias=bias))
    return LowRank(nn.Linear(in_f, rank, bias=False), nn.Linear(rank, out_f, bias=bias))


def factor_lowrank_(model: nn.Module, cfg: LowRankConfig) -> dict[str, dict]:
    """Replace eligible layers in place; returns ``{name: {"in", "rank", "out", "kind", "bias"}}``."""
    import torch
    from torch import nn

    from slimship.compress.sparsity import prunable_layers

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
