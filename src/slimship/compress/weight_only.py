"""Weight-only quantization (int8 / int4): symmetric integer codes times a scale per output row or per group.

For Linear-heavy models (ViT, MLP-Mixer, ResMLP) most bytes sit in Linear weights, and weights alone can go to
4 bits with little loss while activations stay float. The model keeps float32 weights that lie exactly on the
quantization grid (fake quantization), so the accuracy measured is the accuracy of what the package decodes to;
the package stores the codes and scales (``qint`` in package/weights_codec.py), found back from the weights.

Two details make that exact. Each scale is rounded to an 11-bit significand, so ``code * scale`` (|code| <= 127,
7 bits) needs at most 18 of float32's 24 significand bits: the product is exact, the same in PyTorch and NumPy,
and the codec recovers codes and scales from the values alone. And a weight that is 0 (pruned) gets code 0, so
sparsity from an earlier step survives; every zero is stored as +0.0.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from slimship.compress.base import CompressContext, ModelState, register_method
from slimship.compress.recovery import Recovery, fixed_weights, recover_keeping_zeros, with_fixed

if TYPE_CHECKING:
    import torch
    from torch import nn

SCALE_BITS = 11  # significand bits kept in each scale (float16 precision; products with codes stay exact)


class WeightOnlyConfig(BaseModel):
    """Weight-only int8/int4 quantization of Linear (and optionally Conv2d) weights; zeros preserved."""

    model_config = ConfigDict(extra="forbid")
    method: Literal["weight_only"] = "weight_only"
    bits: Literal[4, 8] = 8
    granularity: Literal["channel", "group"] = "channel"  # a scale per output row, or per group of inputs
    group_size: int = Field(128, description="inputs per scale with granularity group: a power of two, 16-1024")
    # all: Conv2d too; depthwise: only depthwise convs (per-channel int8 for the kernels that k-means spares)
    layers: Literal["linear", "all", "depthwise"] = "linear"
    spare: list[Literal["first", "last", "depthwise"]] = ["depthwise"]
    min_weights: int = Field(256, ge=0)  # smaller layers stay float (the package keeps them inside the graph)
    clip: Literal["mse", "minmax"] = "mse"  # mse: per block, the clipping range with the least squared error
    recovery: Recovery | None = None  # optional distilled fine-tune with the weights held on their grid

    @field_validator("group_size")
    @classmethod
    def _power_of_two(cls, v: int) -> int:
        # powers of two let the package codec find the groups back from the weights alone
        if v < 16 or v > 1024 or v & (v - 1):
            raise ValueError("group_size must be a power of two from 16 to 1024")
        return v


def quantizable_layers(model: nn.Module, cfg: WeightOnlyConfig) -> dict[str, nn.Module]:
    """The layers ``cfg`` quantizes, by module name; ``first``/``last`` count among Linear (and Conv2d) layers."""
    from torch import nn

    from slimship.compress.sparsity import is_depthwise

    kinds = (nn.Linear,) if cfg.layers == "linear" else (nn.Linear, nn.Conv2d)
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, kinds)]
    if cfg.layers == "depthwise":
        layers = [(n, m) for n, m in layers if is_depthwise(m)]
    out = {}
    for i, (n, m) in enumerate(layers):
        if ("first" in cfg.spare and i == 0) or ("last" in cfg.spare and i == len(layers) - 1):
            continue
        if "depthwise" in cfg.spare and cfg.layers != "depthwise" and is_depthwise(m):
            continue
        if m.weight.numel() >= max(cfg.min_weights, 1):
            out[n] = m
    return out


def round_scale(s: torch.Tensor) -> torch.Tensor:
    """Round positive scales to SCALE_BITS significant bits (and keep them far from float32 underflow)."""
    import torch

    mant, ex = torch.frexp(s.clamp_min(2.0 ** -100))
    return torch.ldexp(torch.round(mant * 2 ** SCALE_BITS) / 2 ** SCALE_BITS, ex)


def block_scales(w: torch.Tensor, cfg: WeightOnlyConfig) -> torch.Tensor:
    """Per-element scales (the shape of ``w``), one value per block, chosen by ``cfg.clip``."""
    import torch

    rows = w.shape[0]
    x = w.detach().float().reshape(rows, -1)
    cols = x.shape[1]
    block = cols if cfg.granularity == "channel" else min(cfg.group_size, cols)
    nb = -(-cols // block)
    xb = torch.nn.functional.pad(x, (0, nb * block - cols)).reshape(rows, nb, block)
    qmax = 2 ** (cfg.bits - 1) - 1
    amax = xb.abs().amax(-1, keepdim=True)
    ratios = [1.0] if cfg.clip == "minmax" else [1.0 - 0.02 * i for i in range(30)]  # clip down to 42 % of max
    best_s, best_err = None, None
    for r in ratios:
        s = round_scale(amax * r / qmax)
        err = ((torch.clamp(torch.round(xb / s), -qmax, qmax) * s - xb) ** 2).sum(-1, keepdim=True)
        if best_s is None:
            best_s, best_err = s, err
        else:
            better = err < best_err
            best_s, best_err = torch.where(better, s, best_s), torch.where(better, err, best_err)
    return best_s.expand(rows, nb, block).reshape(rows, -1)[:, :cols].reshape(w.shape).contiguous()


def fake_quant(w: torch.Tensor, scale: torch.Tensor, bits: int, keep: torch.Tensor | None = None) -> torch.Tensor:
    """``clamp(round(w / scale)) * scale`` in float32: exact products, zeros as +0.0, ``~keep`` forced to 0.

    The rounding is straight-through for gradients (the recovery fine-tune trains the float weights behind the
    grid) while the value is exactly the rounded one: ``x - x.detach()`` is +0.0, which also turns -0.0 into +0.0.
    """
    import torch

    qmax = 2 ** (bits - 1) - 1
    x = w / scale
    q = torch.clamp(torch.round(x).detach() + (x - x.detach()), -qmax, qmax)
    out = q * scale
    return out if keep is None else torch.where(keep, out, torch.zeros((), dtype=out.dtype))


class QuantizedWeight:
    """A parametrization: weight = fake_quant(latent) with fixed scales; pruned zeros stay zero."""

    def __new__(cls, *args, **kwargs):  # built lazily so importing this module does not import torch
        from torch import nn

        class _Quantized(nn.Module):
            def __init__(self, scale: torch.Tensor, bits: int, keep: torch.Tensor | None):
                super().__init__()
                self.bits = bits
                self.register_buffer("scale", scale)
                self.register_buffer("keep", keep)

            def forward(self, w):
                return fake_quant(w, self.scale, self.bits, self.keep)

        return _Quantized(*args, **kwargs)


def quantize_weights_(model: nn.Module, cfg: WeightOnlyConfig) -> dict[str, dict]:
    """Attach a fixed-scale fake-quant parametrization to every layer ``cfg`` selects (zeros kept at zero).

    Returns ``{name: {"numel", "scales"}}``. Call :func:`slimship.compress.kmeans.bake_` afterwards (at once, or
    after a recovery fine-tune) to leave plain float32 weights that lie exactly on the grid.
    """
    from torch.nn.utils import parametrize

    info = {}
    for name, m in quantizable_layers(model, cfg).items():
        w = m.weight.detach()
        keep = w != 0
        scale = block_scales(w, cfg)
        parametrize.register_parametrization(m, "weight", QuantizedWeight(scale, cfg.bits, None if keep.all() else keep))
        info[name] = {"numel": int(w.numel()), "zeros": int((~keep).sum())}
    return info


@register_method(WeightOnlyConfig,
                 help="weight-only int8/int4 (per channel or per group, MSE clipping) for Linear-heavy models; zeros kept")
def _weight_only(state: ModelState, cfg: WeightOnlyConfig, ctx: CompressContext) -> ModelState:
    from slimship.compress.kmeans import bake_
    from slimship.compress.sparsity import weight_masks

    model = copy.deepcopy(state.model)
    keep_zero = weight_masks(model)
    info = quantize_weights_(model, cfg)
    if cfg.recovery is not None and info:
        r = recover_keeping_zeros(model, keep_zero, info, cfg.recovery, ctx, "weight-only", fixed_weights(state))
        ctx.log(f"weight_only recovery: val {r.best_val_accuracy:.4f}")
    bake_(model)  # plain float32 weights, exactly on the grid
    ctx.log(f"weight_only: {len(info)} layers at {cfg.bits} bits ({cfg.granularity})")
    return ModelState(model=model, arch_edits=state.arch_edits,
                      notes=with_fixed({**state.notes, "weight_only": {
                          "bits": cfg.bits, "granularity": cfg.granularity, "group_size": cfg.group_size,
                          "layers": len(info)}}, info))
