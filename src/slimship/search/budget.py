"""Whether a trial is within the accuracy budget: the one rule the search judges by, kept in one place.

It is the rule ``slimship run`` ships by (:func:`slimship.evaluate.decision.judge`): the paired comparison of the
candidate and the reference on the same validation images, within budget when the probability of losing at most
``budget_points`` reaches ``compress.confidence``. The search turns its verdict into Optuna's constraint
(:func:`constraint_value`), the recommendations and the summary.
"""

from __future__ import annotations

from dataclasses import dataclass

from slimship.evaluate.decision import DEFAULT_CONFIDENCE, judge
from slimship.evaluate.measure import Measurement


@dataclass(frozen=True)
class BudgetCheck:
    """A verdict: ``within``, and by how many points the model misses the budget line (negative: to spare)."""

    within: bool
    shortfall_points: float
    rule: str


def judge_budget(candidate: Measurement, reference: Measurement, budget_points: float,
                 confidence: float = DEFAULT_CONFIDENCE) -> BudgetCheck:
    """Is ``candidate`` within ``budget_points`` of ``reference``, as ``run`` decides it (paired, on validation)?
    ``shortfall_points`` is the observed difference's distance to the budget line (negative: to spare)."""
    j = judge(candidate.val_correct(), reference.val_correct(), budget_points, confidence=confidence)
    shortfall = -(j.difference_points + budget_points)
    return BudgetCheck(within=j.within_budget, shortfall_points=round(shortfall, 4),
                       rule=f"P(losing at most {budget_points:g} point(s) on the same validation images) >= "
                            f"{confidence:g}: {j.probability:.2f}")


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
