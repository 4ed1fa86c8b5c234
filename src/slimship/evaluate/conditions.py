"""The conditions every figure was measured under (machine, threads, runtime versions), so that two reports can
be compared: a latency from another CPU or thread count is a different figure, not a regression."""

from __future__ import annotations

import os
import platform
from importlib import metadata


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what the platform says)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_conditions(*, threads: int, runtime: str | list[str] = "onnxruntime") -> dict:
    """CPU model, logical cores, the threads the runtime was given, OS and the versions of what ran."""
    import slimship

    versions = {"python": platform.python_version(), "slimship": slimship.__version__}
    runtimes = [runtime] if isinstance(runtime, str) else list(runtime)
    for dist in ("onnxruntime", "torch", "timm", "numpy", "onnx", *runtimes):
        v = _version(dist)
        if v:
            versions[dist] = v
    return {"cpu": cpu_model(), "logical_cores": os.cpu_count(), "threads": threads,
            "os": f"{platform.system()} {platform.release()}", "machine": platform.machine(), "versions": versions}


def figure_conditions(*, runtime: str | list[str], threads: int, input_shape: list[int], batch_sizes: list[int],
                      latency_runs: int, rounds: int, warmup: int, val_images: int, test_images: int) -> dict:
    """How each kind of figure in metrics.json was obtained."""
    return {
        "accuracy": {"runtime": runtime, "graph": "the deploy graph read back from each package",
                     "val_images": val_images, "test_images": test_images,
                     "interval": "95 % Wilson score interval"},
        "latency": {"runtime": runtime, "threads": threads, "input_shape": input_shape, "batch_sizes": batch_sizes,
                    "statistic": "p50 (latency_ms) and p95 (latency_p95_ms) of single calls",
                    "warmup_calls": warmup, "rounds": rounds,
                    "calls_per_round": {f"batch{b}": latency_runs if b == 1 else max(3, latency_runs // 3)
                                        for b in batch_sizes},
                    "order": "interleaved: every round times each graph in turn"},
        "memory": {"runtime": runtime, "threads": threads, "batch_sizes": batch_sizes,
                   "method": "peak resident set (VmHWM) of a fresh process that loads the graph and runs each "
                             "batch size 3 times; model_mb = growth over the same process with the runtime imported"},
        "size": {"what": "bytes of the .slim package file on disk"},
    }
