"""The int8 method's config: what a recipe's ``method: int8`` step may say."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from slimship.compress.recovery import Recovery


class Int8Config(BaseModel):
    """int8 post-training quantization for ONNX Runtime; list-valued fields are searched, best on validation wins
    (on a tie, the earlier setting in each list).

    ``mode``: ``static`` calibrates every activation's int8 range on your data (QDQ graph; what convolutional
    networks need), ``dynamic`` quantizes the weights ahead and each activation at run time from its own range
    (no calibration; the usual choice for transformers, whose activations have outliers; ORT runs convolutions
    quantized this way slowly). ``static_ops``: ``all`` quantizes every op ONNX Runtime's quantizer handles,
    ``linear`` only the layers with weights (MatMul/Gemm/Conv with a constant weight, and Gather: embedding
    tables), leaving attention scores, softmax and normalisation in float.

    ``reduce_range`` (7-bit weights) matters on CPUs without VNNI, where ORT's u8s8 kernels can saturate:
    on an AVX2-only machine it was worth +1.8 points for EfficientNet-Lite0 on Fashion-MNIST.
    """

    model_config = ConfigDict(extra="forbid")
    method: Literal["int8"] = "int8"
    mode: list[Literal["static", "dynamic"]] = Field(["static"], min_length=1)
    static_ops: list[Literal["all", "linear"]] = Field(["all"], min_length=1)
    calibration: list[Literal["minmax", "percentile", "entropy"]] = ["minmax", "percentile"]
    keep_fp32: list[Literal["none", "first_last"]] = ["none"]
    reduce_range: list[bool] = [True]
    per_channel: bool = True
    calibration_images: int = Field(512, ge=32)
    percentile: float = Field(99.999, gt=90, le=100)
    # quantization-aware fine-tune of the chosen int8 graph (slimship.compress.qat); kept only if it scores
    # better on validation
    qat: Recovery | None = None
