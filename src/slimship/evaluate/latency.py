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


def timing_batch(example, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """A batch to time with, shaped like the model input ``example`` (numpy or torch, batch first): standard
    normal values for float inputs (images), the example's first row repeated for integer ones (token ids,
    whose values must be valid ids; run time does not depend on which)."""
    x = example.numpy() if hasattr(example, "numpy") else np.asarray(example)
    if np.issubdtype(x.dtype, np.integer):
        return np.ascontiguousarray(np.repeat(x[:1], batch_size, axis=0))
    return rng.standard_normal((batch_size, *x.shape[1:])).astype(np.float32)


def torch_latency(model, example_input, batch_sizes=(1, 64), runs: int = 30) -> dict[str, float]:
    """PyTorch eager latency medians at ``batch_sizes`` (inputs shaped like ``example_input``: see
    :func:`timing_batch`)."""
    import torch

    model = model.eval()
    out = {}
    rng = np.random.default_rng(0)
    for b in batch_sizes:
        x = torch.from_numpy(timing_batch(example_input, b, rng))
        with torch.inference_mode():
            out[f"batch{b}"] = round(median_ms(lambda: model(x), runs=runs if b == 1 else max(5, runs // 3)), 4)
    return out


def interleaved_latency(graphs: dict[str, bytes], input_shape: tuple[int, ...], batch_sizes=(1, 64),
                        runs: int = 30, rounds: int = 5, runtime: str = "onnxruntime",
                        example=None) -> dict[str, dict[str, float]]:
    """Latency medians of several deploy graphs measured *interleaved*: every round times each graph in turn.

    Timing one model after another lets machine drift (frequency, other processes) land on whichever model
    happened to run at the time; at ~1 ms per batch-1 call that noise was ±40 % between two identical graphs.
    Round-robin spreads it over all of them. Each (graph, batch size) gets ``runs`` calls per round at batch 1
    (a third of that at larger batches), after a warm-up; the figure is the median over all rounds.
    Inputs are random normal of ``input_shape``, or built from ``example`` (a model input batch; see
    :func:`timing_batch`) when it is given.
    """
    from slimship.core.runtime import session

    sessions = {name: session(g, runtime) for name, g in graphs.items()}
    rng = np.random.default_rng(0)
    if example is None:
        example = np.zeros((1, *input_shape), np.float32)
    inputs = {b: timing_batch(example, b, rng) for b in batch_sizes}
    times: dict[tuple[str, int], list[float]] = {(n, b): [] for n in sessions for b in batch_sizes}
    for name, sess in sessions.items():  # warm-up
        for b in batch_sizes:
            for _ in range(3):
                sess(inputs[b])
    for _ in range(rounds):
        for name, sess in sessions.items():
            for b in batch_sizes:
                x = inputs[b]
                for _ in range(runs if b == 1 else max(3, runs // 3)):
                    t0 = time.perf_counter()
                    sess(x)
                    times[(name, b)].append((time.perf_counter() - t0) * 1000)
    return {n: {f"batch{b}": round(statistics.median(times[(n, b)]), 4) for b in batch_sizes} for n in sessions}
