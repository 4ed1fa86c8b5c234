"""Record and replay structural edits (pruned channel counts) so a pruned model rebuilds without pickle.

A package stores the architecture name plus ``arch_edits``: for every Conv2d / BatchNorm / Linear whose shape
differs from the freshly built architecture, its new sizes. Replaying the edits on a fresh model gives
modules whose parameters have the pruned shapes; the safetensors weights then load strictly.

Two more kinds of edit, both generic: ``{"type": "keep", "indices": [...]}`` on an ``nn.ModuleList`` or
``nn.Sequential`` that keeps some of its entries (dropped transformer layers, dropped residual blocks of a CNN
stage; made by :func:`keep_modules_`), and ``{"type": "attrs",
"values": {...}}``, integer attributes a module's forward reads (a pruned attention's head count; set by
:func:`set_int_attrs_`). Kept lists are replayed first, outermost first, so the names of the other edits are
those of the edited model. Last, ``{"type": "input_pool", "factor": k, "input": [C, H, W]}`` under
``NAME#input_pool`` (the layer may have a size edit of its own under NAME): the layer that takes the model's input
sees it average-pooled k x k (a lower resolution inside the model; made by :func:`pool_input_`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from slimship.models.layers import make_lowrank

POOL_KEY = "#input_pool"  # suffix of an input-pool edit's key: NAME#input_pool
_LISTS = (nn.ModuleList, nn.Sequential)  # exactly these types: a subclass may hold more than its entries


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


def keep_modules_(model: nn.Module, name: str, indices: list[int]) -> nn.ModuleList:
    """Keep entries ``indices`` (in that order) of the ``nn.ModuleList`` or ``nn.Sequential`` ``name`` of
    ``model``, in place.

    The new container remembers which entries of the original it holds (``kept_indices``, composed over repeated
    calls), which is what :func:`arch_edits` records."""
    old = model.get_submodule(name)
    if type(old) not in _LISTS:
        raise ValueError(f"{name} is a {type(old).__name__}, not a ModuleList or Sequential")
    if not indices or any(not 0 <= i < len(old) for i in indices) or len(set(indices)) != len(indices):
        raise ValueError(f"indices {indices} do not select entries of {name} ({len(old)} entries)")
    new = nn.Sequential(*[old[i] for i in indices]) if type(old) is nn.Sequential else nn.ModuleList(
        [old[i] for i in indices])
    before = getattr(old, "kept_indices", list(range(len(old))))
    new.kept_indices = [int(before[i]) for i in indices]
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)
    return new


def set_int_attrs_(module: nn.Module, **values: int) -> None:
    """Set integer attributes the module's forward reads (e.g. a head count) and record them for rebuilding."""
    for k, v in values.items():
        if not isinstance(getattr(module, k, None), int):
            raise ValueError(f"{type(module).__name__}.{k} is not an integer attribute")
        setattr(module, k, int(v))
    module.int_attrs = {**getattr(module, "int_attrs", {}), **{k: int(v) for k, v in values.items()}}


def _pool_input(module: nn.Module, args: tuple) -> tuple:
    return (F.avg_pool2d(args[0], module.input_pool), *args[1:])


def pool_input_(model: nn.Module, name: str, factor: int, input_size: tuple[int, int, int]) -> None:
    """Make module ``name`` of ``model`` (the layer that takes the model's input) see that input average-pooled
    ``factor`` x ``factor``, in place: every later layer runs at 1/factor of the resolution, with the same
    parameters and state_dict keys. Static "same" padding is recomputed for the smaller sizes (``input_size``:
    the model's input, C, H, W). Pooling a module twice multiplies the factors."""
    from slimship.models.static_pad import freeze_same_padding_

    m = model.get_submodule(name)
    if factor < 1:
        raise ValueError(f"input pool factor {factor}: must be >= 1")
    if hasattr(m, "input_pool"):
        m.input_pool *= int(factor)
    else:
        m.input_pool = int(factor)
        m.register_forward_pre_hook(_pool_input)
    m.input_pool_of = [int(v) for v in input_size]
    freeze_same_padding_(model, tuple(input_size))


def pooled_inputs(model: nn.Module) -> dict[str, dict]:
    """The :func:`pool_input_` edits of ``model`` (they live in a hook and an attribute, not in its parameters)."""
    return {n + POOL_KEY: {"type": "input_pool", "factor": int(m.input_pool), "input": list(m.input_pool_of)}
            for n, m in model.named_modules() if hasattr(m, "input_pool")}


def _kept_lists(model: nn.Module) -> dict[str, dict]:
    return {n: {"type": "keep", "indices": list(m.kept_indices)} for n, m in model.named_modules()
            if type(m) in _LISTS and hasattr(m, "kept_indices")}


def arch_edits(base: nn.Module, edited: nn.Module) -> dict[str, dict]:
    """The structural edits that turn ``base`` (the same architecture, fresh) into ``edited``: kept lists, then
    integer attributes, then the modules whose sizes differ. ``base`` itself gets the kept lists applied."""
    kept = _kept_lists(edited)
    apply_arch_edits_(base, kept)
    attrs = {n: {"type": "attrs", "values": dict(m.int_attrs)} for n, m in edited.named_modules()
             if getattr(m, "int_attrs", None)}
    a, b = structure(base), structure(edited)
    if set(a) != set(b):
        raise ValueError("arch_edits needs the same module tree; only sizes may differ")
    return {**kept, **attrs, **{n: b[n] for n in b if a[n] != b[n]}, **pooled_inputs(edited)}


def _replay_order(edits: dict[str, dict]) -> list[str]:
    """Kept lists first (outermost first: their entries are renamed), then everything else as recorded, input
    pools last (they re-trace the finished model to set its padding)."""
    keeps = sorted((n for n, e in edits.items() if e.get("type") == "keep"), key=lambda n: n.count("."))
    pools = [n for n, e in edits.items() if e.get("type") == "input_pool"]
    return [*keeps, *(n for n in edits if n not in set(keeps) | set(pools)), *pools]


def _empty(shape, like: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(torch.zeros(shape, dtype=like.dtype), requires_grad=like.requires_grad)


def apply_arch_edits_(model: nn.Module, edits: dict[str, dict]) -> nn.Module:
    """Resize the named modules of a fresh ``model`` in place; weights are zeros until loaded."""
    for name in _replay_order(edits):
        e = edits[name]
        kind = e.get("type")
        if kind == "input_pool" and name.endswith(POOL_KEY):
            pool_input_(model, name[: -len(POOL_KEY)], int(e["factor"]), tuple(int(v) for v in e["input"]))
            continue
        m = model.get_submodule(name)
        if kind == "keep" and type(m) in _LISTS:
            keep_modules_(model, name, [int(i) for i in e["indices"]])
        elif kind == "attrs":
            set_int_attrs_(m, **{str(k): int(v) for k, v in e["values"].items()})
        elif kind == "lowrank":
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
