"""Measure deploy graphs as shipped: accuracy in the runtime on the validation and test splits, parameters,
nonzeros and MACs of the model, and latency medians measured interleaved across all graphs of a run.

The graph measured is exactly the one its package decodes to (the package stage hands it over and checks it
after writing), so every figure holds for the file on disk; the size is that file's, set once it is written.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from slimship.evaluate.compute import count_macs
from slimship.evaluate.latency import interleaved_latency, torch_latency


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
    runtime: str = "onnxruntime"
    size_bytes: int = 0  # of the package file, once written
    package: str = ""
    latency_ms: dict = field(default_factory=dict)
    pytorch_eager_latency_ms: dict | None = None
    extra: dict = field(default_factory=dict)  # train_seconds, notes, ...

    def to_dict(self) -> dict:
        d = asdict(self)
        extra = d.pop("extra")
        if d["pytorch_eager_latency_ms"] is None:
            del d["pytorch_eager_latency_ms"]
        return {**d, **extra}


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
                  compressed: bool, runtime: str = "onnxruntime", pytorch_batch_sizes: list[int] | None = None,
                  runs: int = 30, extra: dict | None = None) -> Measurement:
    """Accuracy of ``graph`` in ``runtime``, and the model's size and compute (latency comes later, for all
    graphs at once: :func:`measure_latency`)."""
    from slimship.core.runtime import session
    from slimship.models.factory import count_params

    sess = session(graph, runtime)
    params, nonzero = count_params(model)
    m = Measurement(name=name, kind=kind, accuracy=test.accuracy(sess), val_accuracy=val.accuracy(sess),
                    onnx_bytes=len(graph), params=params, nonzero_params=nonzero,
                    macs=count_macs(model, example_input), compressed=compressed, runtime=runtime,
                    extra=dict(extra or {}))
    if pytorch_batch_sizes:
        m.pytorch_eager_latency_ms = torch_latency(model, example_input, tuple(pytorch_batch_sizes),
                                                   runs=max(5, runs // 3))
    return m


def measure_latency(measurements: list[Measurement], graphs: dict[str, bytes], example_input: Any, *,
                    batch_sizes: list[int], runs: int) -> None:
    """Latency medians of every graph, measured interleaved (machine drift lands on all alike)."""
    lat = interleaved_latency(graphs, tuple(example_input.shape[1:]), tuple(batch_sizes), runs=runs,
                              example=example_input)
    for m in measurements:
        m.latency_ms = lat[m.name]
