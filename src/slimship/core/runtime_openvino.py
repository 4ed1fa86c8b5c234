"""OpenVINO as a runtime: reads the package's ONNX deploy graph directly (no conversion step, no IR files).

Registered in :data:`slimship.core.runtime.RUNTIMES` as ``openvino``; ``openvino`` itself is imported only when
a session is made, so this module is cheap and ``available()`` is False where the package is not installed.

Settings, and why:

- ``INFERENCE_PRECISION_HINT=f32``: on CPUs with avx512_bf16/AMX OpenVINO runs float layers in bf16 by default,
  which changes the logits; every figure slimship records must hold for what ships, so float layers run in f32.
  Quantized (QDQ) layers still run in int8 (u8 activations × s8 weights): the hint only governs float math.
- ``INFERENCE_NUM_THREADS`` from :func:`~slimship.core.runtime.cpu_threads` (``SLIMSHIP_THREADS``), one stream,
  latency mode: one request at a time on the threads we were given, like the ONNX Runtime session.
- ``ENABLE_CPU_PINNING=False``: several runtimes' sessions share the cores while a run measures them
  (ONNX Runtime does not pin either); pinned threads would fight the others for the same cores.
"""

from __future__ import annotations

import importlib.util
import threading

import numpy as np

_CORE = None
_CORE_LOCK = threading.Lock()


def _core():
    """One ``openvino.Core`` per process (creating it loads the device plugins)."""
    global _CORE
    with _CORE_LOCK:
        if _CORE is None:
            import openvino as ov

            _CORE = ov.Core()
        return _CORE


def compile_config(threads: int) -> dict:
    """The CPU plugin settings every slimship OpenVINO session uses (see the module docstring)."""
    return {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": int(threads), "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1, "ENABLE_CPU_PINNING": False}


class OpenVinoSession:
    """A compiled OpenVINO model as a :class:`~slimship.core.runtime.Session`; ``compiled`` is the
    ``openvino.CompiledModel``. Calls are serialised (one infer request, reused: creating one per call costs
    more than a small batch takes)."""

    def __init__(self, compiled) -> None:
        self.compiled = compiled
        self._request = compiled.create_infer_request()
        self._lock = threading.Lock()
        try:  # what the graph takes: float32 images, int64 token ids
            self._dtype = np.dtype(compiled.inputs[0].element_type.to_dtype())
        except Exception:  # noqa: BLE001 - a dynamic element type: images
            self._dtype = np.dtype(np.float32)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=self._dtype)
        with self._lock:
            # share_inputs: no copy of the batch (the call is synchronous); outputs are copied out of the request
            return self._request.infer({0: x}, share_inputs=True)[0]


def compile_model(model, threads: int) -> OpenVinoSession:
    """Compile an ``openvino.Model`` (or ONNX bytes) on the CPU with :func:`compile_config`."""
    core = _core()
    if isinstance(model, (bytes, bytearray)):
        model = core.read_model(bytes(model))
    return OpenVinoSession(core.compile_model(model, "CPU", compile_config(threads)))


class OpenVino:
    """OpenVINO CPU plugin, f32 for float layers, int8 for quantized ones."""

    name = "openvino"

    def available(self) -> bool:
        try:
            return importlib.util.find_spec("openvino") is not None
        except (ImportError, ValueError):  # a module set to None in sys.modules (how tests hide it)
            return False

    def session(self, onnx: bytes, threads: int | None = None) -> OpenVinoSession:
        from slimship.core.threads import cpu_threads

        return compile_model(onnx, threads or cpu_threads())
