"""ONNX Runtime int8 quantization (static QDQ, or dynamic) with a small search over its settings, scored on
validation."""

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


@contextlib.contextmanager
def _root_logging_above_warning():
    import logging

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _reader(batches: list[np.ndarray]):
    from onnxruntime.quantization import CalibrationDataReader

    class _R(CalibrationDataReader):
        def __init__(self):
            self.it = iter(batches)

        def get_next(self):
            b = next(self.it, None)
            return None if b is None else {"input": b}

    return _R()


# Calibration batches ORT's histogram calibrators (percentile, entropy) hold at once.
HISTOGRAM_CHUNK_BATCHES = 2


@contextlib.contextmanager
def _histograms_in_chunks(batches: int = HISTOGRAM_CHUNK_BATCHES):
    """ORT's histogram calibrators keep every calibrated tensor of every calibration batch before building their
    histograms: 2.8 GB for 512 W0 images at 64 px (the peak of a whole run). Their collector merges histograms
    across calls (ORT's own incremental path), so feed ``collect_data`` a few batches at a time."""
    from onnxruntime.quantization import calibrate

    original = calibrate.HistogramCalibrater.collect_data

    class _Chunk(calibrate.CalibrationDataReader):
        def __init__(self, items: list) -> None:
            self.it = iter(items)

        def get_next(self):
            return next(self.it, None)

    def chunked(self, reader) -> None:
        while True:
            items = []
            while len(items) < batches:
                item = reader.get_next()
                if not item:
                    break
                items.append(item)
            if not items:
                return
            original(self, _Chunk(items))
            if len(items) < batches:
                return

    calibrate.HistogramCalibrater.collect_data = chunked
    try:
        yield
    finally:
        calibrate.HistogramCalibrater.collect_data = original


def _edge_nodes(path: str) -> list[str]:
    """Names of the first conv and the last Gemm/MatMul/Conv: the layers most sensitive to int8."""
    import onnx

    g = onnx.load(path).graph
    comp = [n for n in g.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    names = [comp[0].name, comp[-1].name] if comp else []
    return [n for n in names if n]


_LINEAR_OPS = ["MatMul", "Gemm", "Conv", "Gather"]  # static_ops "linear": the layers with weights


def quantize_one(opt_path: str, calib: list[np.ndarray], *, method: str, keep_fp32: str, reduce_range: bool,
                 per_channel: bool, percentile: float, tmp: str, ops: str = "all") -> bytes:
    """One static QDQ quantization of the pre-processed graph at ``opt_path``, calibrated on ``calib``."""
    from onnxruntime.quantization import CalibrationMethod

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    if method not in methods:
        raise SlimshipError(f"unknown int8 calibration {method!r}; use one of {sorted(methods)}")
    out = os.path.join(tmp, f"int8_{method}_{ops}_{keep_fp32}_{int(reduce_range)}.onnx")
    with _histograms_in_chunks():
        _quantize_static(opt_path, out, calib, method=methods[method], keep_fp32=keep_fp32,
                         reduce_range=reduce_range, per_channel=per_channel, percentile=percentile, ops=ops)
    with open(out, "rb") as f:
        return f.read()


def _quantize_static(opt_path: str, out: str, calib: list, *, method, keep_fp32: str, reduce_range: bool,
                     per_channel: bool, percentile: float, ops: str) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    quantize_static(
        opt_path,
        out,
        _reader(calib),
        quant_format=QuantFormat.QDQ,
        per_channel=per_channel,
        reduce_range=reduce_range,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=method,
        op_types_to_quantize=_LINEAR_OPS if ops == "linear" else None,
        nodes_to_exclude=_edge_nodes(opt_path) if keep_fp32 == "first_last" else [],
        # (ORT's calibrators keep every calibrated tensor of every batch in memory: for a transformer at 256 tokens
        # that is ~10 MB per example and layer, so text recipes calibrate on a few dozen examples. The histogram
        # calibrators get a few batches at a time (_histograms_in_chunks); MinMax's CalibMaxIntermediateOutputs
        # would bound it too, but ORT 1.32 drops the batches it clears instead of merging their ranges.)
        extra_options={"CalibPercentile": percentile, "WeightSymmetric": True, "ActivationSymmetric": False,
                       "MatMulConstBOnly": ops == "linear"},
    )


def quantize_dynamic_one(opt_path: str, *, keep_fp32: str, reduce_range: bool, per_channel: bool, tmp: str) -> bytes:
    """Weights to int8 ahead of time, activations at run time (ORT's integer ops: MatMul with a constant weight,
    Gather, Conv); nothing to calibrate."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = os.path.join(tmp, f"int8_dynamic_{keep_fp32}_{int(reduce_range)}.onnx")
    quantize_dynamic(opt_path, out, weight_type=QuantType.QInt8, per_channel=per_channel, reduce_range=reduce_range,
                     nodes_to_exclude=_edge_nodes(opt_path) if keep_fp32 == "first_last" else [],
                     extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT})
    with open(out, "rb") as f:
        return f.read()


def settings(cfg: Int8Config) -> list[dict]:
    """Every setting ``cfg`` asks to try, in its order (``mode`` first, then each list as written)."""
    out = []
    for mode in cfg.mode:
        if mode == "static":
            for method, ops, keep, rr in itertools.product(cfg.calibration, cfg.static_ops, cfg.keep_fp32,
                                                           cfg.reduce_range):
                out.append({"mode": "static", "calibration": method, "ops": ops, "keep_fp32": keep,
                            "reduce_range": rr, "per_channel": cfg.per_channel})
        else:
            for keep, rr in itertools.product(cfg.keep_fp32, cfg.reduce_range):
                out.append({"mode": "dynamic", "keep_fp32": keep, "reduce_range": rr, "per_channel": cfg.per_channel})
    return out


def quantize_int8(
    fp32_onnx: bytes,
    calibration_inputs: np.ndarray,
    score: Callable[[bytes], float],
    cfg: Int8Config,
    log: Callable[[str], None] = print,
) -> Int8Result:
    """Quantize an fp32 ONNX model to int8; try each setting in ``cfg`` and keep the best by ``score``.

    Args:
        calibration_inputs: model inputs [N, ...] (float images, or int64 token ids) from the training data;
            used by static settings only.
        score: maps ONNX bytes to validation accuracy (0-1), run in ONNX Runtime.
    """
    calib = [calibration_inputs[i : i + 32] for i in range(0, min(len(calibration_inputs), cfg.calibration_images), 32)]
    trials = []
    best: tuple[float, bytes, dict] | None = None
    with tempfile.TemporaryDirectory(prefix="slimship-int8-") as tmp:
        opt = _optimize(fp32_onnx, tmp)
        for choice in settings(cfg):
            # ORT's calibrators print progress to stdout, and its quantizer warns through the root logger about
            # every 1-D weight it leaves per-tensor (LayerNorm scales): neither is ours to show
            with contextlib.redirect_stdout(io.StringIO()), _root_logging_above_warning():
                if choice["mode"] == "dynamic":
                    data = quantize_dynamic_one(opt, keep_fp32=choice["keep_fp32"], reduce_range=choice["reduce_range"],
                                                per_channel=cfg.per_channel, tmp=tmp)
                else:
                    data = quantize_one(opt, calib, method=choice["calibration"], keep_fp32=choice["keep_fp32"],
                                        reduce_range=choice["reduce_range"], per_channel=cfg.per_channel,
                                        percentile=cfg.percentile, tmp=tmp, ops=choice["ops"])
            acc = score(data)
            trials.append({**choice, "val_accuracy": acc, "bytes": len(data)})
            log(f"int8 {choice}: val {acc:.4f}")
            # prefer accuracy; on a tie the earlier setting (fewer fp32 layers, the mode listed first) — strict '>'
            if best is None or acc > best[0] + 1e-9:
                best = (acc, data, choice)
    assert best is not None
    return Int8Result(onnx=best[1], choice=best[2], trials=trials)
