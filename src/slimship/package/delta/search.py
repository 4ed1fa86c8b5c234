"""Choosing a delta: measured per-tensor sensitivities and :func:`best_delta`'s search over configurations."""

from __future__ import annotations

import copy
from typing import Callable, Iterable

import numpy as np

from slimship.package.delta.config import MODES, DeltaConfig
from slimship.package.delta.decode import apply_delta
from slimship.package.delta.encode import _lloyd, encode_delta
from slimship.package.delta.graph import _dims_numel, _load_model, _match_initializers, _strip


def tensor_sensitivity(base_onnx: bytes, task_onnx: bytes, inputs: np.ndarray, *, min_size: int = 4096,
                       batch_size: int = 128) -> dict[str, float]:
    """How much each changed tensor's delta matters, measured in ONNX Runtime on ``inputs`` (model-ready
    float32 ``[N, C, H, W]``, e.g. a few hundred validation images; never the test split).

    For every matched tensor of at least ``min_size`` entries whose delta is not zero, only that tensor is
    replaced by its 2-level (sign-like) code and the mean KL divergence of the outputs from the task's is
    measured; the result is that KL per unit of relative squared error (error energy / base energy), the
    weight :func:`encode_delta`'s mixed mode gives the tensor. Smaller tensors get the median.
    One session per tensor: about a second each for EfficientNet-Lite0 on 256 images of 64 px.
    """
    from onnx import numpy_helper

    from slimship.core.runtime import ort_logits, ort_session

    base, task = _load_model(base_onnx, "base_onnx"), _load_model(task_onnx, "task_onnx")
    base_inits = {t.name: t for t in base.graph.initializer}
    ref = _log_softmax(ort_logits(ort_session(task_onnx), inputs, batch_size))
    matches = _match_initializers(base, task)
    out: dict[str, float] = {}
    for t in task.graph.initializer:
        bname = matches.get(t.name)
        if bname is None or _dims_numel(t.dims) < min_size:
            continue
        b = numpy_helper.to_array(base_inits[bname]).astype(np.float32).ravel()
        v = numpy_helper.to_array(t).astype(np.float32).ravel()
        if np.array_equal(b.view(np.uint32), v.view(np.uint32)):
            continue
        book, codes = _lloyd(v - b, 2)
        err = (v - b) - book[codes]
        rel = float(np.dot(err.astype(np.float64), err)) / max(float(np.dot(b.astype(np.float64), b)), 1e-30)
        saved = copy.deepcopy(t)
        _strip(t)
        t.raw_data = (b + book[codes]).astype("<f4").tobytes()
        logp = _log_softmax(ort_logits(ort_session(task.SerializeToString()), inputs, batch_size))
        t.CopyFrom(saved)
        kl = float(np.mean(np.sum(np.exp(ref) * (ref - logp), axis=1)))
        out[t.name] = max(kl, 0.0) / max(rel, 1e-30)
    return out


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def best_delta(
    base_onnx: bytes,
    task_onnx: bytes,
    score: Callable[[bytes], float],
    max_drop: float,
    densities: Iterable[float] = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2),
    modes: Iterable[str] = ("sparse", "bitdelta", "mixed"),
    *,
    budgets: Iterable[float] = (1.0, 1.2, 1.4, 1.7, 2.0, 2.5, 3.0),
    inputs: np.ndarray | None = None,
    value_bits: int = 8,
    allocation: str = "uniform",
    scales: str = "tensor",
    dense_vectors: bool = False,
    head_bits: int = 32,
    configs: Iterable[DeltaConfig] | None = None,
) -> tuple[bytes, dict]:
    """The smallest blob whose reconstruction scores at least ``score(task_onnx) - max_drop``.

    ``score`` maps ONNX bytes to a quality figure (validation accuracy; never the test split). The candidates
    are ``sparse`` at every density, ``bitdelta`` with per-tensor and per-channel scales, ``mixed`` at every
    budget (bits per weight; ``scales`` applies to it), each with the keyword options given, or the explicit
    ``configs``; every one is encoded, rebuilt and scored. With
    ``inputs`` (model-ready validation images, a few hundred) the mixed mode allocates its bits by measured
    :func:`tensor_sensitivity`. If none qualifies the lossless delta (density 1, 32-bit values) is returned,
    marked ``"fallback": True``. The info dict is the chosen blob's, plus ``val_task``, ``val_delta``,
    ``max_drop``, ``fallback`` and ``trials`` (one row per candidate: its config, bytes, score, reference, ok).
    """
    common = {"dense_vectors": dense_vectors, "head_bits": head_bits}
    if configs is None:
        cands: list[DeltaConfig] = []
        for mode in modes:
            if mode == "bitdelta":
                cands += [DeltaConfig(mode="bitdelta", scales=sc, **common) for sc in ("tensor", "channel")]
            elif mode == "mixed":
                cands += [DeltaConfig(mode="mixed", bits_per_weight=float(b), scales=scales, **common)
                          for b in budgets]
            elif mode == "sparse":
                cands += [DeltaConfig(mode="sparse", density=float(d), value_bits=value_bits,
                                      allocation=allocation, **common) for d in densities]
            else:
                raise ValueError(f"unknown mode {mode!r}: use {', '.join(MODES)}")
    else:
        cands = list(configs)
    if not cands:
        raise ValueError("best_delta needs at least one candidate (modes x densities/budgets, or configs)")
    reference = float(score(task_onnx))
    sensitivity = None
    if inputs is not None and any(c.mode == "mixed" for c in cands):
        sensitivity = tensor_sensitivity(base_onnx, task_onnx, inputs)
    trials, best = [], None
    for cfg in cands:
        blob, info = encode_delta(base_onnx, task_onnx, cfg, sensitivity=sensitivity)
        s = float(score(apply_delta(base_onnx, blob)))
        ok = s >= reference - max_drop
        trials.append({**{k: v for k, v in info.items() if k not in ("raw_bytes", "xz_bytes", "tensors")},
                       "score": s, "reference": reference, "ok": ok})
        if ok and (best is None or len(blob) < len(best[0])):
            best = (blob, info, s)
    fallback = best is None
    if best is None:
        blob, info = encode_delta(base_onnx, task_onnx, DeltaConfig("sparse", 1.0, 32, head_bits=32))
        best = (blob, info, float(score(apply_delta(base_onnx, blob))))
    blob, info, s = best
    return blob, {**info, "sensitivity": sensitivity is not None, "val_task": reference, "val_delta": s,
                  "max_drop": max_drop, "fallback": fallback, "trials": trials}
