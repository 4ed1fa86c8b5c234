"""Peak memory at inference: each deploy graph is loaded and run in a fresh process, whose peak resident set
(``ru_maxrss``) is read before and after.

A process of its own is the only clean way to get one graph's peak: in the measuring process, memory freed by
earlier models is reused without raising the peak, and the training run's tensors dwarf a deploy graph. Figures
are megabytes (10^6 bytes): ``peak_rss_mb`` is the whole process (Python, numpy, the runtime, the graph, one
batch of each size); ``model_mb`` is the growth over the same process with the runtime imported and the inputs
allocated, i.e. what loading and running this graph adds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = r"""
import importlib, json, resource, sys
import numpy as np

def hwm_kb():
    # VmHWM: this process's own peak (ru_maxrss would include the parent's RSS from before exec)
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

graph_path, by_batch, shape, batches, threads, dtype = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
from slimship.core.runtime import SessionsByBatch
for runtime in set(by_batch.values()):
    try:
        importlib.import_module(runtime)
    except ImportError:
        pass
inputs = [np.zeros((b, *shape), dtype) for b in batches]  # zeros: valid pixels and valid token ids (padding)
base = hwm_kb()
by_batch = {int(b): rt for b, rt in by_batch.items()}
sess = SessionsByBatch(open(graph_path, "rb").read(), by_batch, by_batch[max(by_batch)], threads)
for x in inputs:
    for _ in range(3):
        sess(x)
peak = hwm_kb()
print(json.dumps({"baseline_kb": base, "peak_kb": peak}))
"""


def peak_memory(graph: bytes, input_shape: tuple[int, ...], batch_sizes: list[int], *,
                runtime: str | dict[int, str] = "onnxruntime", threads: int | None = None, timeout: float = 300,
                dtype: str = "float32") -> dict:
    """Peak memory of a fresh process that loads ``graph`` in ``runtime`` (or, given ``{batch size: runtime}``,
    in each runtime the batch sizes run in, as a loaded package does) and runs it three times at each of
    ``batch_sizes`` (inputs of ``input_shape`` without the batch axis, of ``dtype``: int64 for token ids). Returns ``{"peak_rss_mb", "model_mb",
    "baseline_mb"}``, or ``{"error": why}`` when the child fails (the run goes on without the figure)."""
    from slimship.core.runtime import cpu_threads

    src = str(Path(__file__).resolve().parents[2])  # the folder holding the slimship package
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    with tempfile.TemporaryDirectory(prefix="slimship-mem-") as tmp:
        path = Path(tmp) / "graph.onnx"
        path.write_bytes(graph)
        by_batch = runtime if isinstance(runtime, dict) else {b: runtime for b in batch_sizes}
        cmd = [sys.executable, "-c", _CHILD, str(path), json.dumps({str(b): rt for b, rt in by_batch.items()}),
               json.dumps(list(input_shape)), json.dumps(list(batch_sizes)), str(threads or cpu_threads()), str(dtype)]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s"}
    if p.returncode != 0:
        tail = (p.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {p.returncode}: {tail[:200]}"}
    r = json.loads(p.stdout.strip().splitlines()[-1])
    kb = 1024 / 1e6  # VmHWM is in KiB
    return {"peak_rss_mb": round(r["peak_kb"] * kb, 1), "model_mb": round((r["peak_kb"] - r["baseline_kb"]) * kb, 1),
            "baseline_mb": round(r["baseline_kb"] * kb, 1)}
