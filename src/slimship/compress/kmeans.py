"""Weight sharing: per-layer k-means on the nonzero weights, then codebook fine-tuning (Deep Compression).

Each shared layer's weight becomes ``codebook[index]`` where nonzero and exactly 0 elsewhere, so zeros from
pruning survive and the package stores only a bitmask, ``bits``-bit indices and a tiny codebook. Without
fine-tuning the codebooks, 4-bit sharing cost the careful peer 10 points (REFERENCE.md); here the centroids
are trained (gradients of all weights in a cluster flow into its centroid) with the rest of the model,
distilled from the dense model, while zeros stay fixed. By default (``reassign``) the float weights train too,
behind the codebook, and each forward maps every weight to its nearest centroid, so a weight whose first
cluster was a poor fit can move to another one; with ``reassign: false`` the indices stay where the first
k-means put them (Deep Compression's original scheme).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from slimship.compress.base import CompressContext, ModelState, register_method
from slimship.compress.recovery import Recovery, fixed_weights, recover_keeping_zeros, with_fixed

if TYPE_CHECKING:
    import torch
    from torch import nn


class KMeansShareConfig(BaseModel):
    """k-means weight sharing per layer (``bits`` → 2**bits centroids), zeros preserved, codebooks fine-tuned."""

    model_config = ConfigDict(extra="forbid")
    method: Literal["kmeans"] = "kmeans"
    bits: int = Field(4, ge=1, le=8)
    # Depthwise kernels are spared by default: with BatchNorm unfolded their per-channel magnitudes differ by
    # orders of magnitude, and one 16-value codebook per layer cost 4.9 validation points on EfficientNet-Lite0
    # (W0) against 0.6 with them spared (benchmarks/compression_w0.py).
    spare: list[Literal["first", "last", "depthwise"]] = ["depthwise"]
    min_weights: int = Field(256, ge=0)  # smaller layers stay as they are (their codebook would cost more)
    iterations: int = Field(20, ge=1)
    # let weights change cluster during the fine-tune (see SharedWeight); False: Deep Compression's fixed indices
    reassign: bool = True
    recovery: Recovery = Recovery(seconds=60, lr=1e-4, kd_alpha=0.7)


def kmeans_1d(values: torch.Tensor, k: int, iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on a 1-D tensor with linear initialisation (best for weights, per Han et al. 2016).

    Returns (centroids [k'], assignment [N]) with k' <= k (empty clusters dropped).
    """
    import torch

    lo, hi = values.min(), values.max()
    c = torch.linspace(float(lo), float(hi), k, dtype=values.dtype)
    for _ in range(iterations):
        assign = (values[:, None] - c[None, :]).abs().argmin(1)
        sums = torch.zeros(k, dtype=values.dtype).index_add_(0, assign, values)
        counts = torch.bincount(assign, minlength=k).to(values.dtype)
        c = torch.where(counts > 0, sums / counts.clamp_min(1), c)
    assign = (values[:, None] - c[None, :]).abs().argmin(1)
    used = torch.unique(assign)
    remap = torch.full((k,), -1, dtype=torch.long)
    remap[used] = torch.arange(len(used))
    return c[used].clone(), remap[assign]


class SharedWeight:
    """A parametrization: weight = codebook[index] on the kept positions, 0 elsewhere.

    With ``reassign`` the layer's float weights stay trainable behind the codebook: every forward assigns each
    weight to its nearest centroid (straight-through gradients to the weight, summed gradients to the
    centroid), so a weight can move to another cluster during the fine-tune instead of being stuck where the
    first k-means put it. :func:`bake_` keeps the last assignment.
    """

    def __new__(cls, *args, **kwargs):  # built lazily so importing this module does not import torch
        from torch import nn

        class _Shared(nn.Module):
            def __init__(self, index: torch.Tensor, mask: torch.Tensor, codebook: torch.Tensor, reassign: bool = False):
                super().__init__()
                self.register_buffer("index", index)
                self.register_buffer("mask", mask)
                self.codebook = nn.Parameter(codebook)
                self.reassign = reassign

            def forward(self, w):
                import torch

                zero = torch.zeros((), dtype=self.codebook.dtype)
                if not self.reassign:
                    return torch.where(self.mask, self.codebook[self.index], zero)
                with torch.no_grad():
                    c = self.codebook.detach()
                    # nearest centroid through the sorted codebook's midpoints (memory: one index per weight)
                    order = torch.argsort(c)
                    mids = (c[order][1:] + c[order][:-1]) / 2
                    self.index.copy_(order[torch.bucketize(w.detach().contiguous(), mids)])  # channels_last weights
                return torch.where(self.mask, self.codebook[self.index] + (w - w.detach()), zero)

        return _Shared(*args, **kwargs)


def share_weights_(model: nn.Module, cfg: KMeansShareConfig) -> dict[str, dict]:
    """Cluster every eligible layer in place and attach a trainable-codebook parametrization.

    Returns per-layer info ``{name: {"clusters", "nonzeros", "numel"}}``. Call :func:`bake_` after training.
    """
    import torch
    from torch.nn.utils import parametrize

    from slimship.compress.sparsity import prunable_layers

    info = {}
    for name, m in prunable_layers(model, cfg.spare).items():
        w = m.weight.detach()
        if w.numel() < cfg.min_weights:
            continue
        mask = w != 0
        nz = w[mask]
        if nz.numel() == 0:
            continue
        centroids, assign = kmeans_1d(nz, 2 ** cfg.bits, cfg.iterations)
        index = torch.zeros(w.shape, dtype=torch.long)
        index[mask] = assign
        parametrize.register_parametrization(m, "weight", SharedWeight(index, mask, centroids, cfg.reassign))
        info[name] = {"clusters": int(len(centroids)), "nonzeros": int(mask.sum()), "numel": int(w.numel())}
    return info


def bake_(model: nn.Module) -> None:
    """Remove the parametrizations, leaving plain weights that hold exactly the shared values."""
    from torch.nn.utils import parametrize

    for m in model.modules():
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)


@register_method(KMeansShareConfig,
                 help="k-means weight sharing per layer (zeros preserved) with codebook fine-tuning, distilled")
def _kmeans(state: ModelState, cfg: KMeansShareConfig, ctx: CompressContext) -> ModelState:
    from slimship.compress.sparsity import weight_masks

    model = copy.deepcopy(state.model)
    keep_zero = weight_masks(model)
    info = share_weights_(model, cfg)
    r = recover_keeping_zeros(model, keep_zero, info, cfg.recovery, ctx, "codebooks", fixed_weights(state))
    bake_(model)
    ctx.log(f"kmeans: {len(info)} layers shared at {cfg.bits} bits; val {r.best_val_accuracy:.4f}")
    return ModelState(model=model, arch_edits=state.arch_edits,
                      notes=with_fixed({**state.notes, "kmeans": {"bits": cfg.bits, "layers": len(info)}}, info))
