"""Make TF-"same" padding static for one input size.

timm's ``tf_*`` models use ``Conv2dSame``, which computes its padding at run time from the input shape. ONNX
export turns that into a float subgraph (Shape → Div → Ceil → ...), and ONNX Runtime's int8 QDQ models built
from it score ~10 % (REFERENCE.md, pitfalls). For a fixed input size the padding is a constant, so we swap
each such conv for :class:`StaticPadConv2d`, which keeps the same parameters (and state_dict keys) and pads
by a precomputed amount.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class StaticPadConv2d(nn.Conv2d):
    """A Conv2d preceded by a constant zero pad (left, right, top, bottom)."""

    static_pad: tuple[int, int, int, int] = (0, 0, 0, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.static_pad):
            x = F.pad(x, self.static_pad)
        return super().forward(x)


def _same_pad(size: int, k: int, s: int, d: int) -> tuple[int, int]:
    total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def freeze_same_padding_(model: nn.Module, input_size: tuple[int, int, int]) -> int:
    """Replace every dynamic-"same" conv in ``model`` by a static one for ``input_size`` (C, H, W), and recompute
    the padding of those already static (after a change of the size they see: compress.downscale).

    Returns the number of convs set. The model then only accepts inputs of that spatial size, which is what a
    deploy graph for a fixed resolution is anyway.
    """
    from timm.layers import Conv2dSame

    targets = {n: m for n, m in model.named_modules() if isinstance(m, (Conv2dSame, StaticPadConv2d))}
    if not targets:
        return 0

    def set_pad(mod: nn.Conv2d, args) -> None:
        # set before the conv runs, so every later layer sees the shapes the new padding gives
        h, w = args[0].shape[-2:]
        top, bottom = _same_pad(h, mod.kernel_size[0], mod.stride[0], mod.dilation[0])
        left, right = _same_pad(w, mod.kernel_size[1], mod.stride[1], mod.dilation[1])
        mod.static_pad = (left, right, top, bottom)
        if type(mod) is not StaticPadConv2d:
            mod.__class__ = StaticPadConv2d  # same parameters, same keys; only forward changes
            mod.padding = (0, 0)

    hooks = [m.register_forward_pre_hook(set_pad) for m in targets.values()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_size))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return len(targets)
