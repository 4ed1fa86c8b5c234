"""The runtime seam: run an ONNX deploy graph and get logits, whichever engine executes it.

A runtime is registered in :data:`RUNTIMES` under its name and makes :class:`Session` objects: callables from a
float32 input batch to logits. ONNX Runtime is the reference runtime (always there); OpenVINO
(:mod:`slimship.core.runtime_openvino`) is the second. A new runtime is one module whose class is registered
here; measuring, packages and ``slimship.load`` then reach it by name. Example::

    class MyEngine:
        name = "myengine"

        def available(self) -> bool:
            return importlib.util.find_spec("myengine") is not None

        def session(self, onnx: bytes, threads: int | None = None) -> Session:
            import myengine
            net = myengine.compile(onnx, threads=threads or cpu_threads())
            return lambda batch: net.infer(batch)

    RUNTIMES.add("myengine", MyEngine(), help="MyEngine on the CPU")
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import threading
from typing import Protocol

import numpy as np

from slimship.core.errors import SlimshipError
from slimship.core.registry import Registry
from slimship.core.runtime_openvino import OpenVino
from slimship.core.threads import cpu_threads

class Session(Protocol):
    """A loaded deploy graph: ``session(batch)`` maps float32 model inputs to float32 logits."""

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


class Runtime(Protocol):
    name: str

    def available(self) -> bool: ...

    def session(self, onnx: bytes, threads: int | None = None) -> Session: ...


RUNTIMES: Registry[Runtime] = Registry("runtime")
REFERENCE_RUNTIME = "onnxruntime"  # always installed; what a package falls back to


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
        if _side_by_side and _shared_arena():  # one arena for the sessions alive together, not one each
            so.add_session_config_entry("session.use_env_allocators", "1")
        so.intra_op_num_threads = threads or cpu_threads()
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        # ONNX Runtime's default: idle intra-op threads spin briefly after each call. Turning that off made the
        # dense W0 graph 1.6x slower at batch 1 (0.70 -> 1.12 ms), which is not how anyone deploys it; timing
        # pauses between sessions instead, so a spinning pool cannot steal the next session's cores
        # (evaluate/latency.py).
        return OrtSession(ort.InferenceSession(onnx, so, providers=["CPUExecutionProvider"]))


_ARENA_LOCK = threading.Lock()
_ARENA: list[bool] = []  # [registered?] once tried
_side_by_side = 0  # > 0 while sessions are made to live side by side (see side_by_side)


@contextlib.contextmanager
def side_by_side():
    """ONNX Runtime sessions made inside this block share one arena per process (:func:`_shared_arena`).

    For sessions that are alive together: a run timing a dozen graphs interleaved, a server holding several
    packages. Each session's own arena keeps its largest batch's buffers until the session goes, so a dozen
    sessions kept a dozen arenas; sharing halved their memory at the same speed. Sessions made outside it (one
    at a time, to score a candidate) keep their own arena, which goes with them: the shared one is never given
    back, and it held ~140 MB through every later training stage of a run (benchmarks/photo_memory.py).
    """
    global _side_by_side

    with _ARENA_LOCK:
        _side_by_side += 1
    try:
        yield
    finally:
        with _ARENA_LOCK:
            _side_by_side -= 1


def _shared_arena() -> bool:
    """Register one CPU arena allocator with ONNX Runtime's environment (once per process) for the sessions made
    :func:`side_by_side`. False (sessions keep their own arenas) where registering fails."""
    with _ARENA_LOCK:
        if not _ARENA:
            import onnxruntime as ort

            try:
                info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
                ort.create_and_register_allocator(info, ort.OrtArenaCfg({}))
                _ARENA.append(True)
            except Exception:  # noqa: BLE001 - an ONNX Runtime build without it: per-session arenas, as before
                _ARENA.append(False)
        return _ARENA[0]


RUNTIMES.add("onnxruntime", OnnxRuntime(), help="ONNX Runtime, CPU execution provider (the reference runtime)")
RUNTIMES.add("openvino", OpenVino(), help="OpenVINO CPU plugin (f32 float layers, int8 QDQ layers in int8)")


def available_runtimes() -> list[str]:
    """Names of the registered runtimes installed here, the reference runtime first."""
    return [e.name for e in RUNTIMES.list() if e.obj.available()]


def resolve_runtime(name: str) -> str:
    """``name`` if that runtime is registered and installed; raises SlimshipError saying what to do otherwise."""
    rt = RUNTIMES.get(name)
    if not rt.available():
        raise SlimshipError(f"runtime {name!r} is not installed here: install it (for OpenVINO: "
                            f"pip install 'slimship[openvino]') or use one of {', '.join(available_runtimes())}")
    return name


def runtimes_to_measure(requested: list[str] | None = None) -> list[str]:
    """The runtimes a run measures every model in: ``requested`` (each must be installed), else every installed
    one, the reference first."""
    return [resolve_runtime(r) for r in requested] if requested else available_runtimes()


def session(onnx: bytes, runtime: str = REFERENCE_RUNTIME, threads: int | None = None) -> Session:
    """Load ``onnx`` in the named runtime (raises SlimshipError for an unknown or missing one)."""
    return RUNTIMES.get(resolve_runtime(runtime)).session(onnx, threads)


def ort_session(onnx_bytes: bytes, threads: int | None = None) -> OrtSession:
    """The deploy graph in ONNX Runtime, with the thread settings we measure with."""
    return session(onnx_bytes, "onnxruntime", threads)  # type: ignore[return-value]


def logits(sess: Session, inputs: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Logits of ``inputs`` [N, ...] run through ``sess`` in batches of ``batch_size``."""
    outs = [sess(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)]
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


ort_logits = logits  # the name most call sites know


def runtime_for_batch(n: int, by_batch: dict[int, str], default: str) -> str:
    """The runtime for a batch of ``n`` from a package's ``{batch size: runtime}`` table: the one chosen for the
    measured batch size nearest to ``n`` on a log scale (with 1 and 64 measured, batches of 1-7 go to the first,
    8 and more to the second); ``default`` with no table."""
    if not by_batch:
        return default
    return by_batch[min(by_batch, key=lambda b: (abs(math.log(max(n, 1)) - math.log(b)), -b))]


class SessionsByBatch:
    """One deploy graph in several runtimes, each batch run in the runtime chosen for its size (a
    :class:`Session`). A runtime's session is made the first time a batch needs it, once (thread-safe), so a
    caller that only ever sends large batches loads one runtime."""

    def __init__(self, onnx: bytes, by_batch: dict[int, str], default: str, threads: int | None = None,
                 make=None) -> None:
        self.onnx, self.by_batch, self.default = onnx, dict(by_batch), default
        self.make = make or (lambda rt: session(onnx, rt, threads))  # runtime name -> Session
        self.sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def runtime_for(self, n: int) -> str:
        return runtime_for_batch(n, self.by_batch, self.default)

    def session_for(self, n: int) -> Session:
        rt = self.runtime_for(n)
        sess = self.sessions.get(rt)
        if sess is None:
            with self._lock:
                sess = self.sessions.get(rt)
                if sess is None:
                    sess = self.sessions[rt] = self.make(rt)
        return sess

    def load_all(self) -> "SessionsByBatch":
        """Make every runtime's session now (for a caller that keeps them all alive, made side by side)."""
        for b in self.by_batch:
            self.session_for(b)
        return self

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session_for(len(batch))(batch)
