"""Which runtime a model ships for, at each batch size: the fastest one it was measured in, by a rule stated once.

Every model is measured in every installed runtime (accuracy on validation and test, latency at the recipe's batch
sizes, interleaved). No runtime is fastest at every batch size: on this project's reference CPU, ONNX Runtime
runs a small int8 graph fastest one image at a time and OpenVINO fastest 64 at a time. So the choice is made per
batch size: at each one the model ships for the runtime with the lowest latency there. Two guards:

- a runtime must be clearly faster to replace the reference at a batch size: its latency below ``1 - margin``
  (2 %) of the reference's, so timing noise does not move a batch size to a runtime that brings no gain;
- a runtime that is surely more than ``accuracy_tolerance`` (0.5 points) less accurate than the model's most accurate
  runtime is not eligible at any batch size (it would mean that runtime computes the graph wrongly). "Surely" is
  judged like every accuracy decision (:func:`slimship.evaluate.decision.judge`): both runtimes on the same
  validation images, the paired posterior of the difference, ineligible when P(more than 0.5 points worse) is at
  least 0.95. Two runtimes round an int8 graph a little differently, so on a small validation set they part by a
  few images: a W0 model scored 87.7 % in ONNX Runtime and 88.3 % in OpenVINO on 1,000 images (and 89.67 % against
  89.52 % on the 10k test images); the bare 0.5-point threshold once moved its batch 1 to OpenVINO, 1.6x slower.
  Without per-image results (figures only) the bare threshold applies.

The runtime chosen for the largest batch size measured is the model's *main* runtime: the one its accuracy
figures come from (scoring a data set runs in large batches) and the one a caller gets for batch sizes beyond
the table. The package records both (manifest ``model.runtime`` and ``model.runtime_by_batch``) and loading
dispatches each batch to the runtime chosen for the nearest batch size measured, when that runtime is installed
(docs/runtimes.md).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

MARGIN = 0.02
ACCURACY_TOLERANCE = 0.005
SURELY_WORSE = 0.95  # P(more than the tolerance less accurate) that makes a runtime ineligible


def batch_size_of(key: str) -> int:
    """``"batch64"`` → 64 (the keys latency figures are stored under)."""
    return int(key.removeprefix("batch"))


def runtime_by_batch(figures: dict[str, dict], reference: str, *, margin: float = MARGIN,
                     accuracy_tolerance: float = ACCURACY_TOLERANCE,
                     val_correct: Mapping[str, np.ndarray] | None = None) -> dict[str, str]:
    """The runtime a model ships for at each batch size it was timed at (``{"batch1": runtime, ...}``, in
    increasing batch size), from its per-runtime figures ``{runtime: {"val_accuracy": float, "latency_ms":
    {"batch1": ms, ...}}}`` and, when given, each runtime's per-image validation correctness ``val_correct``
    (see the module docstring). Without the reference among them, the fastest eligible runtime at each batch size."""
    eligible = {rt: figures[rt]["latency_ms"] for rt in eligible_runtimes(figures, accuracy_tolerance, val_correct)}
    keys = sorted({k for lat in eligible.values() for k in lat}, key=batch_size_of)
    out = {}
    for k in keys:
        timed = {rt: lat[k] for rt, lat in eligible.items() if lat.get(k, 0) > 0}
        if not timed:
            continue
        fastest = min(timed, key=timed.get)
        ref = timed.get(reference)
        out[k] = reference if ref is not None and not timed[fastest] < (1 - margin) * ref else fastest
    return out


def eligible_runtimes(figures: dict[str, dict], accuracy_tolerance: float = ACCURACY_TOLERANCE,
                      val_correct: Mapping[str, np.ndarray] | None = None) -> list[str]:
    """The runtimes not surely more than ``accuracy_tolerance`` less accurate than the most accurate one on
    validation (the module docstring), in the order of ``figures``."""
    from slimship.evaluate.decision import judge

    best_val = max(f["val_accuracy"] for f in figures.values())
    best = next((rt for rt, f in figures.items() if f["val_accuracy"] == best_val), None)
    per_image = val_correct or {}
    out = []
    for rt, f in figures.items():
        mine, theirs = per_image.get(rt), per_image.get(best)
        if mine is not None and theirs is not None and len(mine) == len(theirs) > 0:
            worse = 1 - judge(mine, theirs, 100 * accuracy_tolerance).probability
            ok = rt == best or worse < SURELY_WORSE
        else:
            ok = not f["val_accuracy"] < best_val - accuracy_tolerance - 1e-12  # NaN (no val split): eligible
        if ok:
            out.append(rt)
    return out


def main_runtime(by_batch: dict[str, str], reference: str) -> str:
    """The runtime chosen for the largest batch size (the reference when nothing was timed)."""
    return by_batch[max(by_batch, key=batch_size_of)] if by_batch else reference


def describe(by_batch: dict[str, str], main: str, short: bool = False) -> str:
    """``"onnxruntime"``, or ``"onnxruntime at batch 1, openvino at batch 64"`` when batch sizes differ
    (``short``, for a table whose latency columns are per batch size: ``"onnxruntime / openvino"``)."""
    if len(set(by_batch.values()) | {main}) == 1:
        return main
    if short:
        return " / ".join(by_batch.values())
    return ", ".join(f"{rt} at batch {batch_size_of(k)}" for k, rt in by_batch.items())


def ships_at(by_batch: dict[str, str], main: str, runtime: str) -> str:
    """Where ``runtime`` ships for a model: ``"yes"`` (every batch size), ``"b64"`` (some), or ``""``."""
    keys = [k for k, rt in by_batch.items() if rt == runtime]
    if not by_batch:
        return "yes" if runtime == main else ""
    return "yes" if len(keys) == len(by_batch) else ", ".join(f"b{batch_size_of(k)}" for k in keys)
