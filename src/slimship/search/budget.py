"""Whether a trial is within the accuracy budget: the one rule the search judges by, kept in one place.

Today's rule is ``slimship.evaluate.decision.select_winner``'s: a model is within budget when its validation
accuracy is at most ``budget_points`` below the reference's. A rule that accounts for validation noise (a paired
test on the same images) replaces :func:`judge_budget` and nothing else: the search turns its verdict into
Optuna's constraint (:func:`constraint_value`), the recommendations and the summary.
"""

from __future__ import annotations

from dataclasses import dataclass

from slimship.evaluate.measure import Measurement


@dataclass(frozen=True)
class BudgetCheck:
    """A verdict: ``within``, and by how many points the model misses the budget line (negative: to spare)."""

    within: bool
    shortfall_points: float
    rule: str


def judge_budget(candidate: Measurement, reference: Measurement, budget_points: float) -> BudgetCheck:
    """Is ``candidate`` within ``budget_points`` of ``reference``? (validation accuracy, as select_winner)."""
    floor = reference.val_accuracy - budget_points / 100.0
    shortfall = 100.0 * (floor - candidate.val_accuracy)
    return BudgetCheck(within=shortfall <= 1e-10, shortfall_points=round(shortfall, 4),
                       rule=f"validation accuracy at most {budget_points:g} point(s) below the reference")


def constraint_value(check: BudgetCheck) -> float:
    """Optuna's constraint (feasible when <= 0), consistent with the verdict even where a rule's verdict and
    its point estimate disagree."""
    if check.within:
        return min(check.shortfall_points, 0.0)
    return max(check.shortfall_points, 1e-6)


def prefix_shortfall(val_accuracy: float, reference_val_accuracy: float, budget_points: float) -> float:
    """Points by which a chain's intermediate model (PyTorch, validation) is below the budget line: a chain is
    stopped early when this exceeds the space's ``prune_slack`` (later steps seldom win back that much)."""
    return 100.0 * (reference_val_accuracy - budget_points / 100.0 - val_accuracy)
