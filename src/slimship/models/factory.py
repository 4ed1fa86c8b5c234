"""Build a timm model for a task: architecture by name, weights from a source, a fresh head.

The model contract the rest of slimship relies on is timm's: ``forward_features``, ``forward_head``,
``reset_classifier``, ``group_matcher`` and ``pretrained_cfg``. Nothing else is assumed.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

import torch
from torch import nn

from slimship.core.errors import ModelError
from slimship.models.static_pad import freeze_same_padding_
from slimship.models.weights import load_pretrained_, read_state_dict, resolve_weights


@dataclass
class BuiltModel:
    model: nn.Module
    mean: tuple[float, ...]
    std: tuple[float, ...]
    weights_report: dict = field(default_factory=dict)


def create_model(
    architecture: str,
    num_classes: int,
    *,
    weights: str | None,
    image_size: int,
    trust_pickle: bool = False,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    drop_rate: float = 0.0,
) -> BuiltModel:
    """Create ``architecture`` with ``num_classes`` outputs, load ``weights`` into its body.

    Args:
        weights: None/"none" for random init; else a weight package name or a file (see models.weights).
        image_size: the fixed input resolution; TF-"same" padding is made static for it.
        mean/std: override the pretrained normalisation (default: the model's pretrained config).
    Raises:
        ModelError: unknown architecture, missing or non-fitting weights.
    """
    import timm

    if not timm.is_model(architecture):
        close = difflib.get_close_matches(architecture, timm.list_models(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ModelError(f"unknown model {architecture!r}{hint}; `python -c 'import timm; print(timm.list_models())'` lists them")
    model = timm.create_model(architecture, pretrained=False, num_classes=1000, drop_rate=drop_rate)
    report: dict = {"source": "random init"}
    if weights and weights.lower() != "none":
        path = resolve_weights(weights)
        state = read_state_dict(path, trust_pickle=trust_pickle)
        report = load_pretrained_(model, state)
        report["source"] = str(weights)
    model.reset_classifier(num_classes)
    cfg = model.pretrained_cfg
    freeze_same_padding_(model, (3, image_size, image_size))
    return BuiltModel(
        model=model,
        mean=tuple(mean or cfg.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(std or cfg.get("std", (0.229, 0.224, 0.225))),
        weights_report=report,
    )


def count_params(model: nn.Module) -> tuple[int, int]:
    """(parameters, nonzero parameters) of the model's trainable tensors."""
    total = nz = 0
    for p in model.parameters():
        total += p.numel()
        nz += int(torch.count_nonzero(p).item())
    return total, nz
