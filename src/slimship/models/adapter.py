"""The model seam: what transfer, compress, measuring and packaging need to know about a kind of model.

Transfer and compression never ask which library a model comes from; they call its :class:`ModelAdapter`. A
kind of model (timm image classifiers today) is one module that implements the protocol and registers a
factory in :data:`MODEL_KINDS`; a recipe's ``model.kind`` picks it. Example (a hypothetical kind)::

    @MODEL_KINDS.register("torchvision-image", help="torchvision classifiers")
    def _torchvision(section, data_channels: int) -> ModelAdapter:
        return TorchvisionAdapter(section.architecture, section.image_size)

and ``TorchvisionAdapter`` implements the methods below (see :class:`slimship.models.timm_image.TimmImageAdapter`
for the first implementation); :mod:`slimship.models.kinds` imports the built-in kinds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol

from slimship.core.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn

    from slimship.core.preprocessing import Preprocessing


@dataclass
class BuiltModel:
    """A freshly built model and where its weights came from (``{"source", "layout", "loaded"}``)."""

    model: nn.Module
    weights_report: dict = field(default_factory=dict)


class ModelAdapter(Protocol):
    kind: str
    architecture: str  # recorded in packages

    def build(self, num_classes: int, *, pretrained: bool = True) -> BuiltModel:
        """The model with a fresh ``num_classes`` head; pretrained weights in its body unless ``pretrained`` is
        False (random init: the scratch baseline, and shells that cached weights are loaded into)."""

    def preprocessing(self, data_channels: int) -> Preprocessing:
        """How examples become this model's input (kept in every package); ``data_channels`` is what the data
        holds (1: gray, 3: colour)."""

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        """A model input batch of zeros (tracing, export, MACs, latency)."""

    def classifier(self, model: nn.Module) -> nn.Linear:
        """The task head (the linear probe writes into it)."""

    def features(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Pooled pre-logit features [B, D] of model inputs ``x`` (the linear probe)."""

    def without_head(self, model: nn.Module) -> nn.Module:
        """A copy of ``model`` with the classifier removed: it outputs pooled features (the shared base of
        task deltas)."""

    def layer_groups(self, model: nn.Module) -> list[list[str]]:
        """Parameter names from input to output for freezing, unfreezing and layer-wise LR decay; the last group
        is the classifier."""

    def spared_modules(self, model: nn.Module) -> list[nn.Module]:
        """Modules structured pruning must leave whole (the classifier: its outputs are the classes)."""

    def export_onnx(self, model: nn.Module, *, fold_bn: bool = True) -> bytes:
        """The ONNX deploy graph of ``model`` (dynamic batch)."""


MODEL_KINDS: Registry[Callable[[Any], ModelAdapter]] = Registry("model kind")
