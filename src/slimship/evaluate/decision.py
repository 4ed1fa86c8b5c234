"""Which model ships: the rule, applied to measured figures."""

from __future__ import annotations

from slimship.core.errors import SlimshipError
from slimship.evaluate.measure import Measurement


def select_winner(measured: list[Measurement], *, reference: str, budget_points: float) -> Measurement:
    """The smallest compressed package whose *validation* accuracy is within ``budget_points`` of the
    ``reference`` model; the reference itself when none is. Returns the winner and marks each model's
    ``within_budget`` (in its ``extra``)."""
    ref = next((m for m in measured if m.name == reference), None)
    if ref is None:
        raise SlimshipError(f"internal: reference model {reference} was not measured")
    floor = ref.val_accuracy - budget_points / 100.0
    for m in measured:
        m.extra["within_budget"] = bool(m.val_accuracy >= floor - 1e-12)
    ok = [m for m in measured if m.compressed and m.extra["within_budget"]]
    return min(ok, key=lambda m: m.size_bytes) if ok else ref
