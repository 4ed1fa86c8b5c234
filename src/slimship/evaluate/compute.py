"""Multiply-accumulates of one forward pass, counted on the PyTorch model."""

from __future__ import annotations

import torch
from torch import nn


def count_macs(model: nn.Module, example_input: torch.Tensor) -> int:
    """MACs for one example (``example_input``: a model input batch of one, e.g. the adapter's
    ``example_input()``): convolutions and linear layers (the >99 % that matter).

    Counted from the real output shapes with forward hooks, so pruned (smaller) layers count as they are.
    Zeros inside dense weights are *not* subtracted: unstructured sparsity does not save MACs on a dense
    runtime, and we do not claim it does.
    """
    total = 0

    def conv_hook(m: nn.Conv2d, inp, out):
        nonlocal total
        k = m.weight.shape[1] * m.weight.shape[2] * m.weight.shape[3]  # in/groups * kh * kw
        total += int(out.numel() // out.shape[0]) * k

    def linear_hook(m: nn.Linear, inp, out):
        nonlocal total
        total += int(out.numel() // out.shape[0]) * m.in_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example_input[:1])
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return total
