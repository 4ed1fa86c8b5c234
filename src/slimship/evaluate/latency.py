"""Latency: median (p50) and p95 of repeated timed runs after warm-up, in the runtime the artifact ships for.

Benchmarks and reports call this; tests never assert on times.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Hashable

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
    """Latency medians (ms) of several deploy graphs in one runtime, measured interleaved:
    ``{name: {"batch1": ms, ...}}`` (see :func:`interleaved_session_stats`)."""
    stats = interleaved_latency_stats(graphs, input_shape, batch_sizes, runs=runs, rounds=rounds, runtime=runtime,
                                      example=example)
    return {n: {k: v["p50"] for k, v in per.items()} for n, per in stats.items()}


def interleaved_latency_stats(graphs: dict[str, bytes], input_shape: tuple[int, ...], batch_sizes=(1, 64),
                              runs: int = 30, rounds: int = 5, warmup: int = 3, runtime: str = "onnxruntime",
                              example=None) -> dict[str, dict[str, dict[str, float]]]:
    """p50 / p95 of several deploy graphs in one runtime, measured interleaved (:func:`interleaved_session_stats`)."""
    from slimship.core.runtime import session, side_by_side

    with side_by_side():
        sessions = {name: session(g, runtime) for name, g in graphs.items()}
    return interleaved_session_stats(sessions, input_shape,
                                     batch_sizes, runs=runs, rounds=rounds, warmup=warmup, example=example)


def interleaved_session_latency(sessions: dict[Hashable, Callable[[np.ndarray], object]], input_shape: tuple[int, ...],
                                batch_sizes=(1, 64), runs: int = 30, rounds: int = 5,
                                example=None) -> dict[Hashable, dict[str, float]]:
    """Latency medians (ms) of several sessions, measured interleaved: ``{key: {"batch1": ms, ...}}``."""
    stats = interleaved_session_stats(sessions, input_shape, batch_sizes, runs=runs, rounds=rounds, example=example)
    return {k: {b: v["p50"] for b, v in per.items()} for k, per in stats.items()}


# Seconds to wait before each block of timed calls: a runtime whose idle threads spin after a call (ONNX Runtime's
# default, for latency) would otherwise steal the cores from the next session for a while.
SETTLE_SECONDS = 0.1


def interleaved_session_stats(sessions: dict[Hashable, Callable[[np.ndarray], object]], input_shape: tuple[int, ...],
                              batch_sizes=(1, 64), runs: int = 30, rounds: int = 5, warmup: int = 3,
                              example=None,
                              settle: float = SETTLE_SECONDS) -> dict[Hashable, dict[str, dict[str, float]]]:
    """Latency of several sessions (any runtimes, keyed as the caller likes) measured *interleaved*: every round
    times each session in turn.

    Timing one model after another lets machine drift (frequency, other processes) land on whichever model
    happened to run at the time; at ~1 ms per batch-1 call that noise was ±40 % between two identical graphs.
    Round-robin spreads it over all of them. Each (session, batch size) gets ``runs`` calls per round at batch 1
    (a third of that at larger batches), after ``warmup`` untimed calls; returns
    ``{key: {"batch1": {"p50": ms, "p95": ms, "calls": n}, ...}}`` over all rounds. Inputs are random normal of
    ``input_shape``, or built from ``example`` (a model input batch: token ids for a text model; see
    :func:`timing_batch`) when it is given. All sessions stay alive meanwhile; each block of calls starts after
    ``settle`` seconds, so threads that another runtime leaves spinning after its calls (ONNX Runtime's default)
    have parked and do not slow this one down. Measured on W0 with both runtimes alive: dense ONNX Runtime 0.72 ms
    and OpenVINO 1.00 ms at batch 1 with the pause, against 0.76 / 1.25 ms without it.
    """
    rng = np.random.default_rng(0)
    if example is None:
        example = np.zeros((1, *input_shape), np.float32)
    inputs = {b: timing_batch(example, b, rng) for b in batch_sizes}
    times: dict[tuple[Hashable, int], list[float]] = {(k, b): [] for k in sessions for b in batch_sizes}
    for sess in sessions.values():  # warm-up
        for b in batch_sizes:
            for _ in range(warmup):
                sess(inputs[b])
    for _ in range(rounds):
        for key, sess in sessions.items():
            for b in batch_sizes:
                x = inputs[b]
                if settle:
                    time.sleep(settle)
                for _ in range(runs if b == 1 else max(3, runs // 3)):
                    t0 = time.perf_counter()
                    sess(x)
                    times[(key, b)].append((time.perf_counter() - t0) * 1000)
    return {k: {f"batch{b}": {"p50": round(float(np.percentile(times[(k, b)], 50)), 4),
                              "p95": round(float(np.percentile(times[(k, b)], 95)), 4),
                              "calls": len(times[(k, b)])} for b in batch_sizes} for k in sessions}
