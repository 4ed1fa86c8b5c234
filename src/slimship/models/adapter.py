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
from typing import TYPE_CHECKING, Any, Callable, Protocol, runtime_checkable

from slimship.core.errors import SlimshipError
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
    # what ``device.precision: auto`` trains in on a CPU with AMX (bf16 matrix units): the faster one measured for
    # this kind of model ("fp32" or "bf16"); elsewhere auto is bf16 on a GPU and fp32 on the CPU
    cpu_precision: str

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


# ---- an optional capability: a model of images (drop_blocks traces it at its image size) --------------------


@runtime_checkable
class ImageModel(Protocol):
    """A model kind whose models take images of a fixed size (timm and torchvision classifiers)."""

    image_size: int


# ---- an optional capability: transformer surgery (drop_layers, prune_transformer) ----------------------------


@dataclass(frozen=True)
class TransformerBlock:
    """One transformer layer's prunable parts. ``attn_out``'s input columns are ``heads`` blocks of ``head_size``
    (one per attention head); ``ffn_out``'s input columns are the feed-forward neurons. Importance is read from
    these two layers (their weights and gradients); removal goes through the adapter."""

    attn_out: nn.Linear
    heads: int
    head_size: int
    ffn_out: nn.Linear


@runtime_checkable
class TransformerOps(Protocol):
    """What a model kind whose body is a stack of transformer layers offers structural compression."""

    def layer_list(self, model: nn.Module) -> str:
        """The name of the ``nn.ModuleList`` holding the transformer layers, input to output."""

    def blocks(self, model: nn.Module) -> list[TransformerBlock]:
        """Each layer's prunable parts, in the order of :meth:`layer_list`."""

    def keep_heads_(self, model: nn.Module, layer: int, heads: list[int]) -> None:
        """Keep only attention heads ``heads`` of layer ``layer`` (the Linear layers really shrink), in place."""

    def keep_neurons_(self, model: nn.Module, layer: int, neurons: list[int]) -> None:
        """Keep only feed-forward neurons ``neurons`` of layer ``layer``, in place."""

    def token_mask(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Which positions of model input ``x`` [B, L] hold real tokens (bool [B, L]; padding False)."""


TRANSFORMER_KINDS: set[str] = set()
"""Model kinds whose adapters implement :class:`TransformerOps` (each kind's module adds itself)."""


def transformer_ops(adapter: Any, method: str) -> TransformerOps:
    """``adapter`` as :class:`TransformerOps`; a one-line SlimshipError naming the kinds that have them if not."""
    if isinstance(adapter, TransformerOps):
        return adapter
    raise SlimshipError(f"compression method {method} needs a transformer model; model kind "
                        f"{getattr(adapter, 'kind', '?')!r} has no transformer layers: use it with model kind "
                        f"{' or '.join(sorted(TRANSFORMER_KINDS)) or '(none installed)'}")
