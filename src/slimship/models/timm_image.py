"""The first model kind: timm image classifiers (``model.kind: timm-image``).

timm's own contract is all this needs: ``forward_features``, ``forward_head``, ``reset_classifier``,
``get_classifier``, ``group_matcher`` and ``pretrained_cfg``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING

from slimship.models.adapter import MODEL_KINDS, BuiltModel

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class TimmImageAdapter:
    architecture: str
    image_size: int
    weights: str | None = None
    trust_pickle: bool = False
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    kind: str = "timm-image"
    model_channels: int = 3
    # bf16 autocast was slower for convolutions on an AMX CPU (1.03 vs 0.92 CPU-s per step, docs/distributed.md)
    cpu_precision: str = "fp32"

    def build(self, num_classes: int, *, pretrained: bool = True) -> BuiltModel:
        from slimship.models.factory import create_model

        b = create_model(self.architecture, num_classes, weights=self.weights if pretrained else None,
                         image_size=self.image_size, trust_pickle=self.trust_pickle)
        return BuiltModel(b.model, b.weights_report)

    def preprocessing(self, data_channels: int):
        """Resize to ``image_size``, gray replicated to RGB, the pretrained config's mean/std (or the recipe's)."""
        from timm.models import get_pretrained_cfg

        from slimship.data.transforms import ImagePreprocessing

        cfg = get_pretrained_cfg(self.architecture)
        mean, std = (cfg.mean, cfg.std) if cfg is not None else ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        return ImagePreprocessing(self.image_size, data_channels, tuple(self.mean or mean), tuple(self.std or std),
                                  model_channels=self.model_channels)

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        import torch

        return torch.zeros(batch_size, self.model_channels, self.image_size, self.image_size)

    def classifier(self, model: nn.Module) -> nn.Linear:
        return model.get_classifier()

    def features(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model.forward_head(model.forward_features(x), pre_logits=True)

    def without_head(self, model: nn.Module) -> nn.Module:
        backbone = copy.deepcopy(model).eval()
        backbone.reset_classifier(0)
        return backbone

    def layer_groups(self, model: nn.Module) -> list[list[str]]:
        return parameter_groups(model)

    def spared_modules(self, model: nn.Module) -> list[nn.Module]:
        from torch import nn

        head = model.get_classifier()
        return [head] if isinstance(head, nn.Module) else []

    def export_onnx(self, model: nn.Module, *, fold_bn: bool = True) -> bytes:
        from slimship.models.export import export_onnx

        return export_onnx(model, self.image_size, self.model_channels, fold_bn=fold_bn)


def parameter_groups(model: nn.Module) -> list[list[str]]:
    """Parameter names grouped from input to output; the classifier is the last group.

    timm's own grouping (``model.group_matcher(coarse=True)``): stem, each stage, the last conv; the classifier
    is always the top group. That makes freezing and layer-wise decay work for any timm model.
    """
    from timm.models import group_parameters

    head = {n for n, _ in model.named_parameters() if n.startswith(_classifier_name(model) + ".")}
    groups: list[list[str]] = []
    try:
        grouped = group_parameters(model, model.group_matcher(coarse=True))
        for _, names in sorted(grouped.items(), key=lambda kv: kv[0]):
            body = [n for n in names if n not in head]
            if body:
                groups.append(body)
    except (AttributeError, NotImplementedError):
        groups = [[n for n, _ in model.named_parameters() if n not in head]]
    covered = {n for g in groups for n in g} | head
    rest = [n for n, _ in model.named_parameters() if n not in covered]
    if rest:
        groups.append(rest)
    groups.append(sorted(head))
    return groups


def _classifier_name(model: nn.Module) -> str:
    return getattr(model, "pretrained_cfg", {}).get("classifier", "classifier")


@MODEL_KINDS.register("timm-image", help="timm image classifiers (any architecture by name)")
def _timm_image(section) -> TimmImageAdapter:
    return TimmImageAdapter(section.architecture, section.image_size, section.weights, section.trust_pickle,
                            tuple(section.mean) if section.mean else None, tuple(section.std) if section.std else None)
