"""Measure deploy graphs as shipped: accuracy in every installed runtime on the validation and test splits (with
per-image predictions, per-class figures and intervals), parameters, nonzeros and MACs of the model, latency p50 /
p95 measured interleaved across all graphs and runtimes of a run (each batch size of each model then ships for the
runtime it was fastest in: evaluate/runtime_choice.py), and peak memory at inference.

The graph measured is exactly the one its package decodes to (the package stage hands it over and checks it
after writing), so every figure holds for the file on disk; the size is that file's, set once it is written.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from slimship.evaluate.classification import classification_figures, wilson_interval
from slimship.evaluate.compute import count_macs
from slimship.evaluate.latency import interleaved_session_stats, torch_latency
from slimship.evaluate.runtime_choice import main_runtime, runtime_by_batch

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
    runtime: str = "onnxruntime"  # the runtime it ships for; accuracy, val_accuracy and latency_ms are in it
    size_bytes: int = 0  # of the package file, once written
    package: str = ""
    latency_ms: dict = field(default_factory=dict)  # p50 per batch size
    latency_p95_ms: dict = field(default_factory=dict)
    memory: dict = field(default_factory=dict)  # peak memory at inference (evaluate.memory)
    test: dict = field(default_factory=dict)  # per-class accuracy, macro-F1, confusion, interval (classification)
    val_accuracy_ci95: list = field(default_factory=list)
    pytorch_eager_latency_ms: dict | None = None
    runtimes: dict = field(default_factory=dict)  # {runtime: {"accuracy", "val_accuracy", "latency_ms", ...}}
    runtime_by_batch: dict = field(default_factory=dict)  # {"batch1": runtime, ...}: what each batch size runs in
    extra: dict = field(default_factory=dict)  # train_seconds, notes, decision, ...
    val_predictions: Any = None  # np.ndarray [n_val] of predicted classes, in the runtime it ships for
    val_labels: Any = None
    test_predictions: Any = None
    test_labels: Any = None
    by_runtime: dict = field(default_factory=dict, repr=False)  # {runtime: (val predictions, test predictions)}
    num_classes: int = 0

    def val_correct(self) -> np.ndarray:
        """Per validation image: is this model right?"""
        if self.val_predictions is None or self.val_labels is None:
            raise ValueError(f"{self.name}: no per-image validation predictions were kept")
        return np.asarray(self.val_predictions) == np.asarray(self.val_labels)

    def val_correct_by_runtime(self) -> dict[str, np.ndarray]:
        """Per runtime, per validation image: is this model right there? (empty without per-image results)"""
        if self.val_labels is None:
            return {}
        labels = np.asarray(self.val_labels)
        return {rt: np.asarray(vp) == labels for rt, (vp, _) in self.by_runtime.items()
                if vp is not None and len(vp) == len(labels)}

    def ship_in(self, runtime: str, by_batch: dict[str, str] | None = None) -> None:
        """Make ``runtime`` the one this model ships for (its main runtime), and ``by_batch`` the runtime of each
        batch size (default: ``runtime`` at all). Headline accuracy, intervals, per-class figures and predictions
        become the main runtime's; headline latency at each batch size that of the runtime it runs in."""
        f = self.runtimes[runtime]
        vp, tp = self.by_runtime[runtime]
        self.runtime, self.accuracy, self.val_accuracy = runtime, f["accuracy"], f["val_accuracy"]
        self.val_predictions, self.test_predictions = vp, tp
        self.runtime_by_batch = dict(by_batch or {k: runtime for k in f.get("latency_ms", {})})
        for key in ("latency_ms", "latency_p95_ms"):
            setattr(self, key, {k: self.runtimes[self.runtime_by_batch.get(k, runtime)][key][k]
                                for k in f.get(key, {})})
        vc = int((vp == self.val_labels).sum())
        self.val_accuracy_ci95 = [round(v, 5) for v in wilson_interval(vc, len(vp))]
        self.test = classification_figures(self.test_labels, tp, self.num_classes) if len(tp) else {}

    def to_dict(self) -> dict:
        d = asdict(self)
        extra = d.pop("extra")
        for k in ("val_predictions", "val_labels", "test_predictions", "test_labels", "by_runtime", "num_classes"):
            d.pop(k)
        if d["pytorch_eager_latency_ms"] is None:
            del d["pytorch_eager_latency_ms"]
        return _nan_to_none({**d, **extra})


def _nan_to_none(obj: Any) -> Any:
    """``obj`` with every NaN float as None (JSON has no NaN; a split with no examples scores NaN: a refit model's
    validation, api/refit.py)."""
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj


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
                  compressed: bool, runtimes: list[str] | None = None, pytorch_batch_sizes: list[int] | None = None,
                  runs: int = 30, extra: dict | None = None, num_classes: int | None = None) -> Measurement:
    """Accuracy of ``graph`` in each of ``runtimes`` (default: every installed one, the reference first; with
    per-image predictions, per-class figures and intervals), and the model's size and compute. Headline figures
    are the first runtime's until :func:`measure_latency` (latency for all graphs at once) picks the runtime the
    model ships for; memory comes after that (:func:`measure_memory`)."""
    from slimship.core.runtime import available_runtimes, session
    from slimship.models.factory import count_params

    params, nonzero = count_params(model)
    figures, preds = {}, {}
    for rt in runtimes or available_runtimes():
        sess = session(graph, rt)
        vp, tp = val.predictions(sess), test.predictions(sess)
        del sess  # one runtime's threads at a time
        preds[rt] = (vp, tp)
        figures[rt] = {"accuracy": float((tp == test.labels).mean()) if len(tp) else float("nan"),
                       "val_accuracy": float((vp == val.labels).mean()) if len(vp) else float("nan")}
    seen = [val.labels, test.labels, *(p for pair in preds.values() for p in pair)]
    k = num_classes or int(max(int(np.max(a, initial=0)) for a in seen) + 1)  # classes the labels or outputs name
    first = next(iter(figures))
    m = Measurement(name=name, kind=kind, accuracy=figures[first]["accuracy"],
                    val_accuracy=figures[first]["val_accuracy"], onnx_bytes=len(graph), params=params,
                    nonzero_params=nonzero, macs=count_macs(model, example_input), compressed=compressed,
                    runtime=first, runtimes=figures, extra=dict(extra or {}), val_labels=val.labels,
                    test_labels=test.labels, by_runtime=preds, num_classes=k)
    m.ship_in(first)
    if pytorch_batch_sizes:
        m.pytorch_eager_latency_ms = torch_latency(model, example_input, tuple(pytorch_batch_sizes),
                                                   runs=max(5, runs // 3))
    return m


def measure_latency(measurements: list[Measurement], graphs: dict[str, bytes], example_input: Any, *,
                    batch_sizes: list[int], runs: int) -> None:
    """Latency p50 and p95 of every graph in every runtime it was measured in, all interleaved (machine drift
    lands on all alike); then each batch size of each model ships for the runtime it was fastest in there
    (:func:`~slimship.evaluate.runtime_choice.runtime_by_batch`), the largest batch size's being its main one."""
    from slimship.core.runtime import REFERENCE_RUNTIME, session, side_by_side

    with side_by_side():
        sessions = {(m.name, rt): session(graphs[m.name], rt) for m in measurements for rt in m.runtimes}
    lat = interleaved_session_stats(sessions, tuple(example_input.shape[1:]), tuple(batch_sizes), runs=runs,
                                    rounds=LATENCY_ROUNDS, warmup=LATENCY_WARMUP, example=example_input)
    del sessions
    for m in measurements:
        for rt, f in m.runtimes.items():
            f["latency_ms"] = {b: v["p50"] for b, v in lat[(m.name, rt)].items()}
            f["latency_p95_ms"] = {b: v["p95"] for b, v in lat[(m.name, rt)].items()}
        by_batch = runtime_by_batch(m.runtimes, REFERENCE_RUNTIME, val_correct=m.val_correct_by_runtime())
        m.ship_in(main_runtime(by_batch, REFERENCE_RUNTIME), by_batch)


def measure_memory(measurements: list[Measurement], graphs: dict[str, bytes], example_input: Any, *,
                   batch_sizes: list[int]) -> None:
    """Peak memory at inference of every graph as it ships (each batch size in the runtime it runs in), each in a
    fresh process (:mod:`slimship.evaluate.memory`)."""
    from slimship.evaluate.memory import peak_memory
    from slimship.evaluate.runtime_choice import batch_size_of

    x = example_input.numpy() if hasattr(example_input, "numpy") else np.asarray(example_input)
    dtype = "int64" if np.issubdtype(x.dtype, np.integer) else "float32"
    for m in measurements:
        m.memory = peak_memory(graphs[m.name], tuple(example_input.shape[1:]), batch_sizes,
                               runtime={batch_size_of(k): rt for k, rt in m.runtime_by_batch.items()} or m.runtime,
                               dtype=dtype)


def predictions_arrays(measurements: list[Measurement], test_labels: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image predictions of every model (in the runtime it ships for) as arrays for predictions.npz
    (``val/NAME``, ``test/NAME``, and the labels), so a decision or a figure can be recomputed without re-running
    the models."""
    arrays = {"val_labels": np.asarray(measurements[0].val_labels, np.int16), "test_labels": np.asarray(test_labels, np.int16)}
    for m in measurements:
        arrays[f"val/{m.name}"] = np.asarray(m.val_predictions, np.int16)
        arrays[f"test/{m.name}"] = np.asarray(m.test_predictions, np.int16)
    return arrays
