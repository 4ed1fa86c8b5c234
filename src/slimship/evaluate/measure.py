"""Measure deploy graphs as shipped: accuracy in the runtime on the validation and test splits (with per-image
predictions, per-class figures and intervals), parameters, nonzeros and MACs of the model, latency p50 / p95
measured interleaved across all graphs of a run, and peak memory at inference.

The graph measured is exactly the one its package decodes to (the package stage hands it over and checks it
after writing), so every figure holds for the file on disk; the size is that file's, set once it is written.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from slimship.evaluate.classification import classification_figures, wilson_interval
from slimship.evaluate.compute import count_macs
from slimship.evaluate.latency import interleaved_latency_stats, torch_latency

LATENCY_ROUNDS, LATENCY_WARMUP = 5, 3


@dataclass
class Measurement:
    """One model's figures (``to_dict`` is its entry in metrics.json). Per-image predictions stay out of it
    (they go to predictions.npz): ``val_predictions`` / ``val_labels`` feed the decision."""

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
    latency_ms: dict = field(default_factory=dict)  # p50 per batch size
    latency_p95_ms: dict = field(default_factory=dict)
    memory: dict = field(default_factory=dict)  # peak memory at inference (evaluate.memory)
    test: dict = field(default_factory=dict)  # per-class accuracy, macro-F1, confusion, interval (classification)
    val_accuracy_ci95: list = field(default_factory=list)
    pytorch_eager_latency_ms: dict | None = None
    extra: dict = field(default_factory=dict)  # train_seconds, notes, decision, ...
    val_predictions: Any = None  # np.ndarray [n_val] of predicted classes
    val_labels: Any = None
    test_predictions: Any = None

    def val_correct(self) -> np.ndarray:
        """Per validation image: is this model right?"""
        if self.val_predictions is None or self.val_labels is None:
            raise ValueError(f"{self.name}: no per-image validation predictions were kept")
        return np.asarray(self.val_predictions) == np.asarray(self.val_labels)

    def to_dict(self) -> dict:
        d = asdict(self)
        extra = d.pop("extra")
        for k in ("val_predictions", "val_labels", "test_predictions"):
            d.pop(k)
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

    def predictions(self, sess) -> np.ndarray:
        """Predicted class of every example (int64; empty for an empty split)."""
        from slimship.core.runtime import logits

        if not len(self.labels):
            return np.zeros(0, np.int64)
        return logits(sess, self.inputs).argmax(1).astype(np.int64)

    def accuracy(self, sess) -> float:
        if not len(self.labels):
            return float("nan")
        return float((self.predictions(sess) == self.labels).mean())


def measure_model(*, name: str, kind: str, graph: bytes, model, example_input, val: EvalSet, test: EvalSet,
                  compressed: bool, runtime: str = "onnxruntime", pytorch_batch_sizes: list[int] | None = None,
                  runs: int = 30, extra: dict | None = None, num_classes: int | None = None) -> Measurement:
    """Accuracy of ``graph`` in ``runtime`` (with per-image predictions, per-class figures and intervals), and
    the model's size and compute (latency and memory come later, for all graphs at once:
    :func:`measure_latency`, :func:`measure_memory`)."""
    from slimship.core.runtime import session
    from slimship.models.factory import count_params

    sess = session(graph, runtime)
    params, nonzero = count_params(model)
    vp, tp = val.predictions(sess), test.predictions(sess)
    k = num_classes or int(max(val.labels.max(initial=0), test.labels.max(initial=0)) + 1)
    vc = int((vp == val.labels).sum())
    m = Measurement(name=name, kind=kind, accuracy=float((tp == test.labels).mean()) if len(tp) else float("nan"),
                    val_accuracy=vc / len(vp) if len(vp) else float("nan"), onnx_bytes=len(graph), params=params,
                    nonzero_params=nonzero, macs=count_macs(model, example_input), compressed=compressed,
                    runtime=runtime, extra=dict(extra or {}), val_predictions=vp, val_labels=val.labels,
                    test_predictions=tp)
    m.val_accuracy_ci95 = [round(v, 5) for v in wilson_interval(vc, len(vp))]
    if len(tp):
        m.test = classification_figures(test.labels, tp, k)
    if pytorch_batch_sizes:
        m.pytorch_eager_latency_ms = torch_latency(model, example_input, tuple(pytorch_batch_sizes),
                                                   runs=max(5, runs // 3))
    return m


def measure_latency(measurements: list[Measurement], graphs: dict[str, bytes], example_input: Any, *,
                    batch_sizes: list[int], runs: int) -> None:
    """Latency p50 and p95 of every graph, measured interleaved (machine drift lands on all alike)."""
    lat = interleaved_latency_stats(graphs, tuple(example_input.shape[1:]), tuple(batch_sizes), runs=runs,
                                    rounds=LATENCY_ROUNDS, warmup=LATENCY_WARMUP)
    for m in measurements:
        m.latency_ms = {b: v["p50"] for b, v in lat[m.name].items()}
        m.latency_p95_ms = {b: v["p95"] for b, v in lat[m.name].items()}


def measure_memory(measurements: list[Measurement], graphs: dict[str, bytes], example_input: Any, *,
                   batch_sizes: list[int]) -> None:
    """Peak memory at inference of every graph, each in a fresh process (:mod:`slimship.evaluate.memory`)."""
    from slimship.evaluate.memory import peak_memory

    for m in measurements:
        m.memory = peak_memory(graphs[m.name], tuple(example_input.shape[1:]), batch_sizes, runtime=m.runtime)


def predictions_arrays(measurements: list[Measurement], test_labels: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image predictions of every model as arrays for predictions.npz (``val/NAME``, ``test/NAME``, and the
    labels), so a decision or a figure can be recomputed without re-running the models."""
    arrays = {"val_labels": np.asarray(measurements[0].val_labels, np.int16), "test_labels": np.asarray(test_labels, np.int16)}
    for m in measurements:
        arrays[f"val/{m.name}"] = np.asarray(m.val_predictions, np.int16)
        arrays[f"test/{m.name}"] = np.asarray(m.test_predictions, np.int16)
    return arrays
