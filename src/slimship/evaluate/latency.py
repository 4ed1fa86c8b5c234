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


def torch_latency(model, example_input, batch_sizes=(1, 64), runs: int = 30) -> dict[str, float]:
    """PyTorch eager latency medians at ``batch_sizes`` (inputs shaped like ``example_input``, random)."""
    import torch

    model = model.eval()
    out = {}
    for b in batch_sizes:
        x = torch.randn(b, *example_input.shape[1:]).to(example_input.dtype)
        with torch.inference_mode():
            out[f"batch{b}"] = round(median_ms(lambda: model(x), runs=runs if b == 1 else max(5, runs // 3)), 4)
    return out


def interleaved_latency(graphs: dict[str, bytes], input_shape: tuple[int, ...], batch_sizes=(1, 64),
                        runs: int = 30, rounds: int = 5, runtime: str = "onnxruntime") -> dict[str, dict[str, float]]:
    """Latency medians (ms) of several deploy graphs in one runtime, measured interleaved:
    ``{name: {"batch1": ms, ...}}`` (see :func:`interleaved_session_stats`)."""
    stats = interleaved_latency_stats(graphs, input_shape, batch_sizes, runs=runs, rounds=rounds, runtime=runtime)
    return {n: {k: v["p50"] for k, v in per.items()} for n, per in stats.items()}


def interleaved_latency_stats(graphs: dict[str, bytes], input_shape: tuple[int, ...], batch_sizes=(1, 64),
                              runs: int = 30, rounds: int = 5, warmup: int = 3,
                              runtime: str = "onnxruntime") -> dict[str, dict[str, dict[str, float]]]:
    """p50 / p95 of several deploy graphs in one runtime, measured interleaved (:func:`interleaved_session_stats`)."""
    from slimship.core.runtime import session

    return interleaved_session_stats({name: session(g, runtime) for name, g in graphs.items()}, input_shape,
                                     batch_sizes, runs=runs, rounds=rounds, warmup=warmup)


def interleaved_session_latency(sessions: dict[Hashable, Callable[[np.ndarray], object]], input_shape: tuple[int, ...],
                                batch_sizes=(1, 64), runs: int = 30, rounds: int = 5) -> dict[Hashable, dict[str, float]]:
    """Latency medians (ms) of several sessions, measured interleaved: ``{key: {"batch1": ms, ...}}``."""
    stats = interleaved_session_stats(sessions, input_shape, batch_sizes, runs=runs, rounds=rounds)
    return {k: {b: v["p50"] for b, v in per.items()} for k, per in stats.items()}


def interleaved_session_stats(sessions: dict[Hashable, Callable[[np.ndarray], object]], input_shape: tuple[int, ...],
                              batch_sizes=(1, 64), runs: int = 30, rounds: int = 5,
                              warmup: int = 3) -> dict[Hashable, dict[str, dict[str, float]]]:
    """Latency of several sessions (any runtimes, keyed as the caller likes) measured *interleaved*: every round
    times each session in turn.

    Timing one model after another lets machine drift (frequency, other processes) land on whichever model
    happened to run at the time; at ~1 ms per batch-1 call that noise was ±40 % between two identical graphs.
    Round-robin spreads it over all of them. Each (session, batch size) gets ``runs`` calls per round at batch 1
    (a third of that at larger batches), after ``warmup`` untimed calls; returns
    ``{key: {"batch1": {"p50": ms, "p95": ms, "calls": n}, ...}}`` over all rounds. All sessions stay alive
    meanwhile, so a runtime whose idle threads spin would slow the others down: the runtimes here are set up not
    to (core/runtime.py).
    """
    rng = np.random.default_rng(0)
    inputs = {b: rng.standard_normal((b, *input_shape)).astype(np.float32) for b in batch_sizes}
    times: dict[tuple[Hashable, int], list[float]] = {(k, b): [] for k in sessions for b in batch_sizes}
    for sess in sessions.values():  # warm-up
        for b in batch_sizes:
            for _ in range(warmup):
                sess(inputs[b])
    for _ in range(rounds):
        for key, sess in sessions.items():
            for b in batch_sizes:
                x = inputs[b]
                for _ in range(runs if b == 1 else max(3, runs // 3)):
                    t0 = time.perf_counter()
                    sess(x)
                    times[(key, b)].append((time.perf_counter() - t0) * 1000)
    return {k: {f"batch{b}": {"p50": round(float(np.percentile(times[(k, b)], 50)), 4),
                              "p95": round(float(np.percentile(times[(k, b)], 95)), 4),
                              "calls": len(times[(k, b)])} for b in batch_sizes} for k in sessions}
