"""The int8 method's config: what a recipe's ``method: int8`` step may say."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from slimship.compress.recovery import Recovery


class Int8Config(BaseModel):
    """int8 post-training quantization for ONNX Runtime; list-valued fields are searched, best on validation wins.

    ``reduce_range`` (7-bit weights) matters on CPUs without VNNI, where ORT's u8s8 kernels can saturate:
    on an AVX2-only machine it was worth +1.8 points for EfficientNet-Lite0 on Fashion-MNIST.
    """

    model_config = ConfigDict(extra="forbid")
    method: Literal["int8"] = "int8"
    calibration: list[Literal["minmax", "percentile", "entropy"]] = ["minmax", "percentile"]
    keep_fp32: list[Literal["none", "first_last"]] = ["none"]
    reduce_range: list[bool] = [True]
    per_channel: bool = True
    calibration_images: int = Field(512, ge=32)
    percentile: float = Field(99.999, gt=90, le=100)
    # quantization-aware fine-tune of the chosen int8 graph (slimship.compress.qat); kept only if it scores
    # better on validation
    qat: Recovery | None = None
