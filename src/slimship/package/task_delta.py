"""A run's task model stored against its pretrained base: ``packages/base.slim`` + ``NAME.delta.slim``.

Used by :func:`slimship.api.run` when the recipe asks for ``transfer.delta``. The base is the pretrained
backbone without its classifier (so every task of the same architecture, weights and input size shares one
byte-identical base graph); graphs keep BatchNorm unfolded so a delta in a few weights stays a delta in a few
weights. The task graph that is measured and packaged is the one *rebuilt from the delta*, so every figure
reported is that of what the delta package decodes to.
"""

from __future__ import annotations

import copy
from pathlib import Path

BASE_CARD = ("Pretrained backbone (classifier removed; outputs pooled features). Task packages are stored as "
             "deltas against it: `slimship push TASK.slim STORE --base NAME`.")


def base_onnx(model, image_size: int, channels: int) -> bytes:
    """The ONNX graph of ``model``'s backbone (classifier removed), BatchNorm kept unfolded."""
    from slimship.models.export import export_onnx

    backbone = copy.deepcopy(model).eval()
    backbone.reset_classifier(0)
    return export_onnx(backbone, image_size, channels, fold_bn=False)


def backbone_state(model) -> dict:
    """``model``'s state without the classifier: the tensors the base graph holds."""
    backbone = copy.deepcopy(model)
    backbone.reset_classifier(0)
    return backbone.state_dict()


def write_base(path: str | Path, onnx: bytes, *, architecture: str, preprocessing, recipe: dict | None = None) -> int:
    """Write the base package (no classes: it is a feature extractor); returns its size in bytes."""
    from slimship.package.pack import pack

    pack(path, onnx=onnx, architecture=architecture, class_names=[], preprocessing=preprocessing, recipe=recipe,
         card=BASE_CARD)
    return Path(path).stat().st_size


def encode_task(base: bytes, model, image_size: int, channels: int, value_bits: int) -> tuple[bytes, bytes, dict]:
    """(rebuilt task ONNX, delta blob, info): every changed entry of ``model`` against ``base``, values at
    ``value_bits`` (16: fp16 deltas; 32: lossless)."""
    from slimship.models.export import export_onnx
    from slimship.package.delta import DeltaConfig, apply_delta, encode_delta

    task = export_onnx(model.eval(), image_size, channels, fold_bn=False)
    cfg = DeltaConfig(mode="sparse", density=1.0, value_bits=value_bits, head_bits=32)
    blob, info = encode_delta(base, task, cfg)
    return apply_delta(base, blob), blob, info
