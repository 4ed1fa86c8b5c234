"""Record and replay structural edits (pruned channel counts) so a pruned model rebuilds without pickle.

A package stores the architecture name plus ``arch_edits``: for every Conv2d / BatchNorm / Linear whose shape
differs from the freshly built architecture, its new sizes. Replaying the edits on a fresh model gives
modules whose parameters have the pruned shapes; the safetensors weights then load strictly.
"""

from __future__ import annotations

import torch
from torch import nn

from slimship.models.layers import make_lowrank


def _shape_of(m: nn.Module) -> dict | None:
    if hasattr(m, "lowrank"):  # a factored layer (compress.lowrank): two smaller layers in its place
        return {"type": "lowrank", **m.lowrank}
    if isinstance(m, nn.Conv2d):
        return {"type": "conv", "in": m.in_channels, "out": m.out_channels, "groups": m.groups}
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return {"type": "bn", "features": m.num_features}
    if isinstance(m, nn.Linear):
        return {"type": "linear", "in": m.in_features, "out": m.out_features}
    return None


def structure(model: nn.Module) -> dict[str, dict]:
    out: dict[str, dict] = {}
    replaced: list[str] = []
    for n, m in model.named_modules():
        if any(n.startswith(p + ".") for p in replaced):
            continue  # inside a factored layer: described by its parent
        s = _shape_of(m)
        if s is not None:
            out[n] = s
            if s["type"] == "lowrank":
                replaced.append(n)
    return out


def arch_edits(base: nn.Module, edited: nn.Module) -> dict[str, dict]:
    """The modules of ``edited`` whose sizes differ from ``base`` (same architecture, fresh)."""
    a, b = structure(base), structure(edited)
    if set(a) != set(b):
        raise ValueError("arch_edits needs the same module tree; only sizes may differ")
    return {n: b[n] for n in b if a[n] != b[n]}


def _empty(shape, like: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(torch.zeros(shape, dtype=like.dtype), requires_grad=like.requires_grad)


def apply_arch_edits_(model: nn.Module, edits: dict[str, dict]) -> nn.Module:
    """Resize the named modules of a fresh ``model`` in place; weights are zeros until loaded."""
    for name, e in edits.items():
        m = model.get_submodule(name)
        kind = e.get("type")
        if kind == "lowrank":
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child,
                    make_lowrank(str(e["kind"]), int(e["in"]), int(e["rank"]), int(e["out"]), bool(e["bias"])))
        elif kind == "conv" and isinstance(m, nn.Conv2d):
            m.in_channels, m.out_channels, m.groups = int(e["in"]), int(e["out"]), int(e["groups"])
            m.weight = _empty((m.out_channels, m.in_channels // m.groups, *m.kernel_size), m.weight)
            if m.bias is not None:
                m.bias = _empty((m.out_channels,), m.bias)
        elif kind == "bn" and isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features = int(e["features"])
            if m.affine:
                m.weight, m.bias = _empty((n,), m.weight), _empty((n,), m.bias)
            if m.track_running_stats:
                m.running_mean = torch.zeros(n)
                m.running_var = torch.ones(n)
        elif kind == "linear" and isinstance(m, nn.Linear):
            m.in_features, m.out_features = int(e["in"]), int(e["out"])
            m.weight = _empty((m.out_features, m.in_features), m.weight)
            if m.bias is not None:
                m.bias = _empty((m.out_features,), m.bias)
        else:
            raise ValueError(f"arch edit {name}: {e} does not fit module {type(m).__name__}")
    return model
