"""Weight masks shared by the methods that keep zeros: which layers may be pruned, magnitude and N:M masks,
and applying or reading masks back from a model's zeros."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal


if TYPE_CHECKING:
    import torch
    from torch import nn


def is_depthwise(m: nn.Module) -> bool:
    """A depthwise conv: one group per input channel (a few kh·kw weights per channel)."""
    from torch import nn

    return isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels


def prunable_layers(model: nn.Module, spare: list[str]) -> dict[str, nn.Module]:
    """Conv/Linear layers whose weights may be pruned, by module name (order of the model)."""
    from torch import nn

    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    out = {}
    for i, (n, m) in enumerate(layers):
        if "first" in spare and i == 0:
            continue
        if "last" in spare and i == len(layers) - 1:
            continue
        if "depthwise" in spare and is_depthwise(m):
            continue
        out[n] = m
    return out


def magnitude_masks(layers: dict[str, nn.Module], sparsity: float, cfg,
                    per_layer: dict[str, float] | None = None) -> dict[str, torch.Tensor]:
    """Boolean keep-masks for ``sparsity`` (layer-wise, global, or N:M).

    ``per_layer`` gives each layer's final sparsity (sensitivity allocation); ``sparsity / cfg.sparsity`` is
    then the fraction of the way there (gradual schedules).
    """
    import torch

    if per_layer is not None:
        frac = sparsity / cfg.sparsity if cfg.sparsity else 1.0
        return {n: _layer_mask(m.weight.detach().abs(), min(per_layer.get(n, 0.0) * frac, cfg.max_layer_sparsity))
                for n, m in layers.items()}
    if cfg.nm is not None:
        return {n: _nm_mask(m.weight.detach(), *cfg.nm) for n, m in layers.items()}
    if cfg.scope == "global" and layers:
        allw = torch.cat([m.weight.detach().abs().flatten() for m in layers.values()])
        k = int(sparsity * allw.numel())
        thr = allw.kthvalue(max(k, 1)).values if k > 0 else allw.min() - 1
        masks = {}
        for n, m in layers.items():
            w = m.weight.detach().abs()
            mask = w > thr
            if 1 - mask.float().mean() > cfg.max_layer_sparsity:  # cap: never empty a layer
                mask = _layer_mask(w, cfg.max_layer_sparsity)
            masks[n] = mask
        return masks
    return {n: _layer_mask(m.weight.detach().abs(), min(sparsity, cfg.max_layer_sparsity)) for n, m in layers.items()}


def _layer_mask(absw: torch.Tensor, sparsity: float) -> torch.Tensor:
    import torch

    k = int(round(sparsity * absw.numel()))
    if k <= 0:
        return torch.ones_like(absw, dtype=torch.bool)
    thr = absw.flatten().kthvalue(k).values
    return absw > thr


def _nm_mask(w: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the n largest of every m consecutive weights along the input dimension (2:4 sparsity)."""
    import torch

    w2 = w.reshape(w.shape[0], -1)
    cols = w2.shape[1]
    if cols % m:
        return torch.ones_like(w, dtype=torch.bool)  # layer not divisible: left dense (reported by density)
    g = w2.abs().reshape(w.shape[0], cols // m, m)
    idx = g.topk(n, dim=-1).indices
    mask = torch.zeros_like(g, dtype=torch.bool).scatter_(-1, idx, True)
    return mask.reshape(w.shape)


def apply_masks_(layers: dict[str, nn.Module], masks: dict[str, torch.Tensor]) -> None:
    """Zero the weights outside ``masks``. A mask on another device than its weight is moved there once (the
    entry in ``masks`` is replaced), so masks follow a model that trains on a GPU."""
    import torch

    with torch.no_grad():
        for n, mask in masks.items():
            w = layers[n].weight
            if mask.device != w.device:
                masks[n] = mask = mask.to(w.device)
            w.mul_(mask)


def weight_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """Masks of the weights that are exactly zero now (what later steps must keep at zero)."""
    from torch import nn

    return {n: m.weight.detach() != 0 for n, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and bool((m.weight == 0).any())}
