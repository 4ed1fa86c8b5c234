"""Which runtime a model ships for: the fastest one it was measured in, by a rule stated once.

Every model is measured in every installed runtime (accuracy on validation and test, latency at the recipe's batch
sizes, interleaved). A model is judged fastest in the runtime with the lowest *geometric mean of its latency
ratios* to the reference runtime (ONNX Runtime) over the batch sizes, so batch 1 and batch 64 count alike however
different their milliseconds are. Two guards:

- a runtime must be clearly faster to replace the reference: its geometric mean ratio below ``1 - margin``
  (2 %), so timing noise does not flip a package to a runtime that brings no gain;
- a runtime whose validation accuracy is more than ``accuracy_tolerance`` (0.5 points) below the model's best
  runtime is not eligible (it would mean that runtime computes the graph wrongly).

The package records the choice (manifest ``model.runtime``) and loading runs it there when that runtime is
installed, else in the reference runtime (docs/runtimes.md).
"""

from __future__ import annotations

import math

MARGIN = 0.02
ACCURACY_TOLERANCE = 0.005


def latency_ratio(latency: dict[str, float], reference: dict[str, float]) -> float:
    """Geometric mean over the batch sizes both share of ``latency[b] / reference[b]`` (below 1: faster)."""
    keys = [k for k in reference if k in latency and reference[k] > 0 and latency[k] > 0]
    if not keys:
        return math.nan
    return math.exp(sum(math.log(latency[k] / reference[k]) for k in keys) / len(keys))


def fastest_runtime(figures: dict[str, dict], reference: str, *, margin: float = MARGIN,
                    accuracy_tolerance: float = ACCURACY_TOLERANCE) -> str:
    """The runtime a model ships for, from its per-runtime figures
    ``{runtime: {"val_accuracy": float, "latency_ms": {"batch1": ms, ...}}}``; ``reference`` when it is among them
    and no other runtime is clearly faster (see the module docstring)."""
    if reference not in figures:
        return min(figures, key=lambda rt: _geomean(figures[rt]["latency_ms"]))
    best_val = max(f["val_accuracy"] for f in figures.values())
    ref_lat = figures[reference]["latency_ms"]
    ratios = {rt: latency_ratio(f["latency_ms"], ref_lat) for rt, f in figures.items()
              if rt != reference and not f["val_accuracy"] < best_val - accuracy_tolerance - 1e-12}  # NaN: no val split
    ratios = {rt: r for rt, r in ratios.items() if r < 1 - margin}
    return min(ratios, key=ratios.get) if ratios else reference


def _geomean(latency: dict[str, float]) -> float:
    vals = [v for v in latency.values() if v > 0]
    return math.exp(sum(map(math.log, vals)) / len(vals)) if vals else math.inf
