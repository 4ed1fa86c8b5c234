"""The runtime seam: run an ONNX deploy graph and get logits, whichever engine executes it.

A runtime is registered in :data:`RUNTIMES` under its name and makes :class:`Session` objects: callables from a
float32 input batch to logits. ONNX Runtime is the built-in one. A new runtime is one module that registers
itself here; measuring, packages and ``slimship.load`` then reach it by name. Example::

    @RUNTIMES.register("myengine", help="MyEngine on the CPU")
    class MyEngine:
        name = "myengine"

        def available(self) -> bool:
            return importlib.util.find_spec("myengine") is not None

        def session(self, onnx: bytes, threads: int | None = None) -> Session:
            import myengine
            net = myengine.compile(onnx, threads=threads or cpu_threads())
            return lambda batch: net.infer(batch)
"""

from __future__ import annotations

import importlib.util
import os
from typing import Protocol

import numpy as np

from slimship.core.registry import Registry


def cpu_threads() -> int:
    """Threads a runtime may use: ``SLIMSHIP_THREADS`` if set, else every core."""
    return int(os.environ.get("SLIMSHIP_THREADS", os.cpu_count() or 1))


class Session(Protocol):
    """A loaded deploy graph: ``session(batch)`` maps float32 model inputs to float32 logits."""

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


class Runtime(Protocol):
    name: str

    def available(self) -> bool: ...

    def session(self, onnx: bytes, threads: int | None = None) -> Session: ...


RUNTIMES: Registry[Runtime] = Registry("runtime")


class OrtSession:
    """An ONNX Runtime session as a :class:`Session`; ``inner`` is the ``onnxruntime.InferenceSession``."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.input_name = inner.get_inputs()[0].name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.inner.run(None, {self.input_name: batch})[0]


class OnnxRuntime:
    name = "onnxruntime"

    def available(self) -> bool:
        return importlib.util.find_spec("onnxruntime") is not None

    def session(self, onnx: bytes, threads: int | None = None) -> OrtSession:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads or cpu_threads()
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        return OrtSession(ort.InferenceSession(onnx, so, providers=["CPUExecutionProvider"]))


RUNTIMES.add("onnxruntime", OnnxRuntime(), help="ONNX Runtime, CPU execution provider (the reference runtime)")


def session(onnx: bytes, runtime: str = "onnxruntime", threads: int | None = None) -> Session:
    """Load ``onnx`` in the named runtime (raises SlimshipError for an unknown one)."""
    return RUNTIMES.get(runtime).session(onnx, threads)


def ort_session(onnx_bytes: bytes, threads: int | None = None) -> OrtSession:
    """The deploy graph in ONNX Runtime, with the thread settings we measure with."""
    return session(onnx_bytes, "onnxruntime", threads)  # type: ignore[return-value]


def logits(sess: Session, inputs: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Logits of ``inputs`` [N, ...] run through ``sess`` in batches of ``batch_size``."""
    outs = [sess(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)]
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


ort_logits = logits  # the name most call sites know
