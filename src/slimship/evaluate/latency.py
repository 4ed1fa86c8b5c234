"""Latency: median of repeated timed runs after warm-up, in the runtime the artifact ships for.

Benchmarks and reports call this; tests never assert on times.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import numpy as np


def median_ms(fn: Callable[[], object], *, warmup: int = 5, runs: int = 30, min_seconds: float = 0.0) -> float:
    """Median wall time of ``fn()`` in milliseconds over ``runs`` calls (at least ``min_seconds`` of calls)."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < runs or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
        if len(times) >= runs * 20:
            break
    return statistics.median(times)


def ort_latency(onnx_bytes: bytes, input_shape: tuple[int, ...], batch_sizes=(1, 64), runs: int = 30) -> dict[str, float]:
    from slimship.evaluate.runtime import ort_session

    sess = ort_session(onnx_bytes)
    name = sess.get_inputs()[0].name
    out = {}
    for b in batch_sizes:
        x = np.random.default_rng(0).standard_normal((b, *input_shape)).astype(np.float32)
        out[f"batch{b}"] = round(median_ms(lambda: sess.run(None, {name: x}), runs=runs if b == 1 else max(5, runs // 3)), 4)
    return out


def torch_latency(model, input_shape: tuple[int, ...], batch_sizes=(1, 64), runs: int = 30) -> dict[str, float]:
    import torch

    model = model.eval()
    out = {}
    for b in batch_sizes:
        x = torch.randn(b, *input_shape)
        with torch.inference_mode():
            out[f"batch{b}"] = round(median_ms(lambda: model(x), runs=runs if b == 1 else max(5, runs // 3)), 4)
    return out
