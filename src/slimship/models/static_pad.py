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
    """Replace every dynamic-"same" conv in ``model`` by a static one for ``input_size`` (C, H, W).

    Returns the number of convs replaced. The model then only accepts inputs of that spatial size, which is
    what a deploy graph for a fixed resolution is anyway.
    """
    from timm.layers import Conv2dSame

    targets = {n: m for n, m in model.named_modules() if isinstance(m, Conv2dSame)}
    if not targets:
        return 0
    seen: dict[str, tuple[int, int]] = {}
    hooks = [
        m.register_forward_pre_hook(lambda mod, args, n=n: seen.__setitem__(n, tuple(args[0].shape[-2:])))
        for n, m in targets.items()
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_size))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    for name, old in targets.items():
        h, w = seen[name]
        top, bottom = _same_pad(h, old.kernel_size[0], old.stride[0], old.dilation[0])
        left, right = _same_pad(w, old.kernel_size[1], old.stride[1], old.dilation[1])
        old.__class__ = StaticPadConv2d  # same parameters, same keys; only forward changes
        old.padding = (0, 0)
        old.static_pad = (left, right, top, bottom)
    return len(targets)
