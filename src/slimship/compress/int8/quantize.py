"""ONNX Runtime static int8 quantization with a small search over its settings, scored on validation."""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
from slimship.core.errors import SlimshipError

if TYPE_CHECKING:
    from slimship.compress.int8.config import Int8Config


@dataclass
class Int8Result:
    onnx: bytes
    choice: dict
    trials: list[dict]


def _optimize(fp32: bytes, tmp: str) -> str:
    """Shape inference + ORT graph optimisation (folds BatchNorm, constant pads) → path of the result."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src = os.path.join(tmp, "fp32.onnx")
    dst = os.path.join(tmp, "fp32_opt.onnx")
    with open(src, "wb") as f:
        f.write(fp32)
    quant_pre_process(src, dst, skip_symbolic_shape=True)
    return dst


def _reader(batches: list[np.ndarray]):
    from onnxruntime.quantization import CalibrationDataReader

    class _R(CalibrationDataReader):
        def __init__(self):
            self.it = iter(batches)

        def get_next(self):
            b = next(self.it, None)
            return None if b is None else {"input": b}

    return _R()


def _edge_nodes(path: str) -> list[str]:
    """Names of the first conv and the last Gemm/MatMul/Conv: the layers most sensitive to int8."""
    import onnx

    g = onnx.load(path).graph
    comp = [n for n in g.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    names = [comp[0].name, comp[-1].name] if comp else []
    return [n for n in names if n]


def quantize_one(opt_path: str, calib: list[np.ndarray], *, method: str, keep_fp32: str, reduce_range: bool,
                 per_channel: bool, percentile: float, tmp: str) -> bytes:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    if method not in methods:
        raise SlimshipError(f"unknown int8 calibration {method!r}; use one of {sorted(methods)}")
    out = os.path.join(tmp, f"int8_{method}_{keep_fp32}_{int(reduce_range)}.onnx")
    quantize_static(
        opt_path,
        out,
        _reader(calib),
        quant_format=QuantFormat.QDQ,
        per_channel=per_channel,
        reduce_range=reduce_range,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=methods[method],
        nodes_to_exclude=_edge_nodes(opt_path) if keep_fp32 == "first_last" else [],
        extra_options={"CalibPercentile": percentile, "WeightSymmetric": True, "ActivationSymmetric": False},
    )
    with open(out, "rb") as f:
        return f.read()


def quantize_int8(
    fp32_onnx: bytes,
    calibration_inputs: np.ndarray,
    score: Callable[[bytes], float],
    cfg: Int8Config,
    log: Callable[[str], None] = print,
) -> Int8Result:
    """Quantize an fp32 ONNX model to int8 QDQ; try each setting in ``cfg`` and keep the best by ``score``.

    Args:
        calibration_inputs: float32 model inputs [N,C,H,W] from the training/validation data.
        score: maps ONNX bytes to validation accuracy (0-1), run in ONNX Runtime.
    """
    calib = [calibration_inputs[i : i + 32] for i in range(0, min(len(calibration_inputs), cfg.calibration_images), 32)]
    trials = []
    best: tuple[float, bytes, dict] | None = None
    with tempfile.TemporaryDirectory(prefix="slimship-int8-") as tmp:
        opt = _optimize(fp32_onnx, tmp)
        for method, keep, rr in itertools.product(cfg.calibration, cfg.keep_fp32, cfg.reduce_range):
            with contextlib.redirect_stdout(io.StringIO()):  # ORT's calibrators print progress to stdout
                data = quantize_one(opt, calib, method=method, keep_fp32=keep, reduce_range=rr,
                                    per_channel=cfg.per_channel, percentile=cfg.percentile, tmp=tmp)
            acc = score(data)
            choice = {"calibration": method, "keep_fp32": keep, "reduce_range": rr, "per_channel": cfg.per_channel}
            trials.append({**choice, "val_accuracy": acc, "bytes": len(data)})
            log(f"int8 {choice}: val {acc:.4f}")
            # prefer accuracy; on a tie prefer fewer fp32 layers (listed first) — strict '>' keeps the earlier
            if best is None or acc > best[0] + 1e-9:
                best = (acc, data, choice)
    assert best is not None
    return Int8Result(onnx=best[1], choice=best[2], trials=trials)
