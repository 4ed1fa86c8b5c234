"""Which model ships, judged with the validation noise in view (the rule and its measurements: docs/decision.md).

A compressed candidate is compared with the reference on the *same* validation images. Only the images where
exactly one of the two is right carry information about the difference; from their counts the rule computes
the posterior of the true accuracy difference (a Dirichlet over the four outcomes of a paired image, Jeffreys
prior: a Bayesian paired bootstrap) and ships the candidate when the probability that it loses at most the
budget reaches ``confidence``. Every judgement carries that probability and an interval, so a decision made
on 100 images says how sure it is.

Pure functions of per-example correctness; no model, no runtime. Example::

    j = judge(cand_pred == labels, ref_pred == labels, budget_points=1.0)
    j.within_budget, j.probability, j.interval_points
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, Sequence, TypeVar

import numpy as np

from slimship.core.errors import SlimshipError


class Candidate(Protocol):
    """What a decision reads of a measured model (:class:`slimship.evaluate.measure.Measurement` is one; this module
    does not import it, so the measure stage may use :func:`judge`)."""

    name: str
    compressed: bool
    size_bytes: int
    extra: dict
    val_predictions: Any

    def val_correct(self) -> np.ndarray: ...


M = TypeVar("M", bound=Candidate)

#: The probability a candidate must reach to count as within budget. Not 0.5: the smallest of several candidates
#: judged within ships, and candidates are tuned on the same validation images, so the one that ships tends to be
#: the one whose validation luck was best. On the small-data benchmark (docs/decision.md) 0.7 made fewer wrong
#: decisions than 0.5 in both runs and at every validation size of the resampling study.
DEFAULT_CONFIDENCE = 0.7
PRIOR = 0.5  # Dirichlet concentration per outcome (Jeffreys): two identical models on 100 images are not "surely equal"
DRAWS = 20000
LEVEL = 0.9  # the interval reported with every judgement


@dataclass(frozen=True)
class Judgement:
    """One candidate against the reference on the same validation images (figures in percentage points)."""

    n: int  # validation images
    candidate_accuracy: float  # observed, fraction
    reference_accuracy: float
    difference_points: float  # observed candidate − reference
    interval_points: tuple[float, float]  # credible interval of the true difference at ``level``
    level: float
    probability: float  # P(true difference >= −budget | the validation images)
    budget_points: float
    confidence: float  # the probability needed to count as within budget
    within_budget: bool
    candidate_only: int  # images only the candidate gets right
    reference_only: int  # images only the reference gets right
    agreement: float | None = None  # fraction of images where both predict the same class (when given)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["interval_points"] = [round(v, 3) for v in self.interval_points]
        for k in ("difference_points", "probability"):
            d[k] = round(d[k], 4)
        return d

    def describe(self) -> str:
        lo, hi = self.interval_points
        return (f"{self.difference_points:+.2f} points on {self.n} validation examples "
                f"({100 * self.level:.0f} % interval {lo:+.2f} to {hi:+.2f}); "
                f"P(within {self.budget_points:g} point(s)) = {self.probability:.2f}")


def judge(candidate_correct: Sequence[bool] | np.ndarray, reference_correct: Sequence[bool] | np.ndarray,
          budget_points: float, *, confidence: float = DEFAULT_CONFIDENCE, level: float = LEVEL,
          candidate_pred: np.ndarray | None = None, reference_pred: np.ndarray | None = None,
          draws: int = DRAWS, seed: int = 0) -> Judgement:
    """Is the candidate within ``budget_points`` of the reference, judged on the same validation images?

    Args:
        candidate_correct / reference_correct: per validation image, whether each model is right (same order).
        budget_points: accuracy the candidate may lose, in percentage points (1.0 = one point).
        confidence: probability the candidate must reach to be ``within_budget``, in (0, 1).
        level: the credible interval reported, in (0, 1).
        candidate_pred / reference_pred: predicted classes, optional: only for the reported ``agreement``.
        draws / seed: Monte Carlo draws of the posterior (fixed seed: the same inputs give the same answer).

    Returns:
        a :class:`Judgement`. Raises SlimshipError when the two vectors differ in length or are empty.
    """
    c = np.asarray(candidate_correct, dtype=bool).ravel()
    r = np.asarray(reference_correct, dtype=bool).ravel()
    if c.shape != r.shape or c.size == 0:
        raise SlimshipError(f"judge needs per-example correctness of both models on the same validation examples "
                            f"(got {c.size} and {r.size}): measure both on the validation split")
    if not 0 < confidence < 1 or not 0 < level < 1:
        raise SlimshipError(f"confidence {confidence} and level {level} must lie between 0 and 1 (exclusive)")
    n = int(c.size)
    cand_only, ref_only = int((c & ~r).sum()), int((r & ~c).sum())
    same = n - cand_only - ref_only
    # Posterior of the four outcomes' probabilities, collapsed to the three that matter: (only the candidate
    # right, only the reference right, both agree on correctness). True difference = p_cand_only − p_ref_only.
    rng = np.random.default_rng(seed)
    g = rng.standard_gamma(np.array([cand_only, ref_only, same], float) + PRIOR, size=(draws, 3))
    delta = 100.0 * (g[:, 0] - g[:, 1]) / g.sum(1)
    prob = float((delta >= -budget_points - 1e-9).mean())
    lo, hi = np.quantile(delta, [(1 - level) / 2, (1 + level) / 2])
    agreement = None
    if candidate_pred is not None and reference_pred is not None:
        agreement = float((np.asarray(candidate_pred) == np.asarray(reference_pred)).mean())
    return Judgement(n=n, candidate_accuracy=float(c.mean()), reference_accuracy=float(r.mean()),
                     difference_points=100.0 * (cand_only - ref_only) / n, interval_points=(float(lo), float(hi)),
                     level=level, probability=prob, budget_points=float(budget_points), confidence=confidence,
                     within_budget=prob >= confidence, candidate_only=cand_only, reference_only=ref_only,
                     agreement=agreement)


@dataclass
class Decision:
    """Which model ships and why: every compressed candidate's judgement against the reference."""

    shipped: str
    reference: str
    budget_points: float
    confidence: float
    judgements: dict[str, Judgement] = field(default_factory=dict)

    @property
    def shipped_compressed(self) -> bool:
        return self.shipped != self.reference

    def summary(self) -> str:
        """One or two sentences for the log and the report."""
        if self.shipped_compressed:
            j = self.judgements[self.shipped]
            return (f"shipped {self.shipped}: the smallest package judged within {self.budget_points:g} point(s) of "
                    f"{self.reference}: {j.describe()}")
        if not self.judgements:
            return f"shipped {self.reference}: no compressed candidate to judge"
        best = max(self.judgements.items(), key=lambda kv: kv[1].probability)
        return (f"shipped {self.reference} (uncompressed): no candidate reached P >= {self.confidence:g} of being "
                f"within {self.budget_points:g} point(s); the closest, {best[0]}: {best[1].describe()}")

    def to_dict(self) -> dict:
        return {"shipped": self.shipped, "reference": self.reference, "budget_points": self.budget_points,
                "confidence": self.confidence, "rule": RULE, "summary": self.summary(),
                "judgements": {k: j.to_dict() for k, j in self.judgements.items()}}


RULE = ("paired comparison on the validation examples: posterior of the accuracy difference (Dirichlet, "
        "Jeffreys prior, over examples only one model gets right); a candidate is within budget when P(difference >= "
        "-budget) >= confidence; the smallest package within budget ships, else the reference")


def decide(measured: list[Candidate], *, reference: str, budget_points: float,
           confidence: float = DEFAULT_CONFIDENCE) -> Decision:
    """Judge every compressed model against ``reference`` on validation and pick the smallest package within
    budget (the reference when none is). Marks each model's ``extra["within_budget"]`` and, for compressed
    ones, ``extra["decision"]`` (its judgement). Needs ``val_predictions`` and ``val_labels`` on each."""
    ref = next((m for m in measured if m.name == reference), None)
    if ref is None:
        raise SlimshipError(f"internal: reference model {reference} was not measured")
    ref_correct = ref.val_correct()
    decision = Decision(reference, reference, budget_points, confidence)
    for m in measured:
        if m.name == reference:
            m.extra["within_budget"] = True
            continue
        # Uncompressed models (probe, scratch, ...) are judged too, for the report; only compressed ones ship.
        j = judge(m.val_correct(), ref_correct, budget_points, confidence=confidence,
                  candidate_pred=m.val_predictions, reference_pred=ref.val_predictions)
        m.extra["within_budget"] = j.within_budget
        m.extra["decision"] = j.to_dict()
        if m.compressed:
            decision.judgements[m.name] = j
    ok = [m for m in measured if m.name in decision.judgements and decision.judgements[m.name].within_budget]
    if ok:
        decision.shipped = min(ok, key=lambda m: m.size_bytes).name
    return decision


def select_winner(measured: list[M], *, reference: str, budget_points: float,
                  confidence: float = DEFAULT_CONFIDENCE) -> M:
    """The measured model :func:`decide` ships."""
    d = decide(measured, reference=reference, budget_points=budget_points, confidence=confidence)
    return next(m for m in measured if m.name == d.shipped)
