"""Measure deploy graphs as shipped: accuracy in every runtime on the validation and test splits, parameters,
nonzeros and MACs of the model, and latency medians measured interleaved across all graphs and runtimes of a run;
then each model ships for the runtime it was fastest in (evaluate/runtime_choice.py).

The graph measured is exactly the one its package decodes to (the package stage hands it over and checks it
after writing), so every figure holds for the file on disk; the size is that file's, set once it is written.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from slimship.evaluate.compute import count_macs
from slimship.evaluate.latency import interleaved_session_latency, torch_latency
from slimship.evaluate.runtime_choice import fastest_runtime


@dataclass
class Measurement:
    """One model's figures (``to_dict`` is its entry in metrics.json)."""

    name: str
    kind: str
    accuracy: float  # test split
    val_accuracy: float
    onnx_bytes: int
    params: int
    nonzero_params: int
    macs: int
    compressed: bool
    runtime: str = "onnxruntime"  # the runtime it ships for; accuracy, val_accuracy and latency_ms are in it
    size_bytes: int = 0  # of the package file, once written
    package: str = ""
    latency_ms: dict = field(default_factory=dict)
    pytorch_eager_latency_ms: dict | None = None
    runtimes: dict = field(default_factory=dict)  # {runtime: {"accuracy", "val_accuracy", "latency_ms"}}
    extra: dict = field(default_factory=dict)  # train_seconds, notes, ...

    def to_dict(self) -> dict:
        d = asdict(self)
        extra = d.pop("extra")
        if d["pytorch_eager_latency_ms"] is None:
            del d["pytorch_eager_latency_ms"]
        return {**d, **extra}

    def ship_in(self, runtime: str) -> None:
        """Make ``runtime`` the one this model ships for: its headline figures become that runtime's."""
        f = self.runtimes[runtime]
        self.runtime, self.accuracy, self.val_accuracy = runtime, f["accuracy"], f["val_accuracy"]
        self.latency_ms = dict(f.get("latency_ms", {}))


@dataclass(frozen=True)
class EvalSet:
    """A split as runtime inputs: float32 model inputs and int labels."""

    inputs: np.ndarray
    labels: np.ndarray

    @classmethod
    def of(cls, examples, pre) -> "EvalSet":
        return cls(pre.model_input_np(examples.x.numpy()), examples.y.numpy())

    def accuracy(self, sess) -> float:
        from slimship.core.runtime import logits

        if not len(self.labels):
            return float("nan")
        return float((logits(sess, self.inputs).argmax(1) == self.labels).mean())


def measure_model(*, name: str, kind: str, graph: bytes, model, example_input, val: EvalSet, test: EvalSet,
                  compressed: bool, runtimes: list[str] | None = None, pytorch_batch_sizes: list[int] | None = None,
                  runs: int = 30, extra: dict | None = None) -> Measurement:
    """Accuracy of ``graph`` in each of ``runtimes`` (default: every installed one, the reference first), and the
    model's size and compute. Headline figures are the first runtime's until :func:`measure_latency` (latency
    for all graphs at once) picks the runtime the model ships for."""
    from slimship.core.runtime import available_runtimes, session
    from slimship.models.factory import count_params

    figures = {}
    for rt in runtimes or available_runtimes():
        sess = session(graph, rt)
        figures[rt] = {"accuracy": test.accuracy(sess), "val_accuracy": val.accuracy(sess)}
        del sess  # one runtime's threads at a time
    params, nonzero = count_params(model)
    first = next(iter(figures))
    m = Measurement(name=name, kind=kind, accuracy=figures[first]["accuracy"],
                    val_accuracy=figures[first]["val_accuracy"], onnx_bytes=len(graph), params=params,
                    nonzero_params=nonzero, macs=count_macs(model, example_input), compressed=compressed,
                    runtime=first, runtimes=figures, extra=dict(extra or {}))
    if pytorch_batch_sizes:
        m.pytorch_eager_latency_ms = torch_latency(model, example_input, tuple(pytorch_batch_sizes),
                                                   runs=max(5, runs // 3))
    return m


def measure_latency(measurements: list[Measurement], graphs: dict[str, bytes], example_input: Any, *,
                    batch_sizes: list[int], runs: int) -> None:
    """Latency medians of every graph in every runtime it was measured in, all interleaved (machine drift lands
    on all alike); then each model ships for the runtime it was fastest in (:func:`fastest_runtime`)."""
    from slimship.core.runtime import REFERENCE_RUNTIME, session

    sessions = {(m.name, rt): session(graphs[m.name], rt) for m in measurements for rt in m.runtimes}
    lat = interleaved_session_latency(sessions, tuple(example_input.shape[1:]), tuple(batch_sizes), runs=runs)
    del sessions
    for m in measurements:
        for rt, f in m.runtimes.items():
            f["latency_ms"] = lat[(m.name, rt)]
        m.ship_in(fastest_runtime(m.runtimes, REFERENCE_RUNTIME))
