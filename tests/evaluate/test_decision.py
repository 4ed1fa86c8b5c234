"""The shipping decision: a paired judgement with its uncertainty, and the choice among candidates."""

from __future__ import annotations

import numpy as np
import pytest

from slimship.core.errors import SlimshipError
from slimship.evaluate.decision import decide, judge
from slimship.evaluate.measure import Measurement


def _pair(n: int, cand_only: int, ref_only: int, both: int):
    """Correctness vectors with the given counts of images only one model gets right (the rest: both right up to
    ``both``, then both wrong)."""
    c, r = np.zeros(n, bool), np.zeros(n, bool)
    c[:cand_only] = True
    r[cand_only:cand_only + ref_only] = True
    s = cand_only + ref_only
    c[s:s + both] = r[s:s + both] = True
    return c, r


def test_identical_models_are_within_budget_but_not_certainly_equal():
    c, r = _pair(100, 0, 0, 90)
    j = judge(c, r, 1.0)
    assert j.within_budget and j.difference_points == 0 and j.agreement is None
    lo, hi = j.interval_points
    assert lo < 0 < hi  # 100 images cannot prove two models equal
    assert 0.5 < j.probability < 1.0


def test_a_clearly_worse_candidate_is_outside():
    c, r = _pair(200, 1, 21, 160)  # 10 points worse
    j = judge(c, r, 1.0)
    assert not j.within_budget and j.probability < 0.01 and j.interval_points[1] < -1.0
    assert (j.candidate_only, j.reference_only, j.n) == (1, 21, 200)


def test_probability_grows_with_evidence_and_answers_are_reproducible():
    # the same observed drop of 0.5 points: more images make "within 1 point" surer
    probs = [judge(*_pair(n, n // 100, 3 * n // 200, n * 8 // 10), 1.0).probability for n in (200, 800, 3200)]
    assert probs[0] < probs[1] < probs[2]
    c, r = _pair(300, 3, 6, 250)
    assert judge(c, r, 1.0) == judge(c, r, 1.0)


def test_a_drop_of_exactly_the_budget_is_a_coin_flip():
    c, r = _pair(400, 4, 8, 350)  # -1.0 point observed
    assert 0.4 < judge(c, r, 1.0).probability < 0.6


def test_confidence_moves_the_line():
    c, r = _pair(200, 2, 3, 170)  # -0.5 observed on 200 images: likely, not surely, within 1 point
    assert judge(c, r, 1.0, confidence=0.5).within_budget
    assert not judge(c, r, 1.0, confidence=0.95).within_budget


def test_interval_covers_the_true_difference_as_often_as_it_says():
    """Simulated paired models with a known true difference: the 90 % interval must cover it ~90 % of the time."""
    rng = np.random.default_rng(7)
    p_cand_only, p_ref_only, n, hits, trials = 0.03, 0.05, 150, 0, 300
    for _ in range(trials):
        u = rng.random(n)
        c = u < p_cand_only
        r = (u >= p_cand_only) & (u < p_cand_only + p_ref_only)
        both = u > 0.3
        lo, hi = judge(c | both, r | both, 1.0, draws=4000).interval_points
        hits += lo <= 100 * (p_cand_only - p_ref_only) <= hi
    assert 0.84 <= hits / trials <= 0.96


def test_bad_inputs():
    with pytest.raises(SlimshipError, match="same validation examples"):
        judge([True, False], [True], 1.0)
    with pytest.raises(SlimshipError, match="between 0 and 1"):
        judge([True], [True], 1.0, confidence=1.0)


def _m(name, correct, size, compressed=True):
    labels = np.zeros(len(correct), np.int64)
    return Measurement(name=name, kind="x", accuracy=0.0, val_accuracy=float(np.mean(correct)), onnx_bytes=0,
                       params=1, nonzero_params=1, macs=1, compressed=compressed, size_bytes=size,
                       val_predictions=np.where(correct, 0, 1), val_labels=labels)


def test_decide_ships_the_smallest_candidate_within_budget_else_the_reference():
    ref_c, _ = _pair(300, 0, 0, 270)
    ok_big = ref_c.copy()
    ok_small = ref_c.copy()
    ok_small[:1] = False  # one image lost: within 1 point
    bad_tiny = ref_c.copy()
    bad_tiny[:30] = False  # ten points lost
    ms = [_m("ref", ref_c, 1000, compressed=False), _m("big", ok_big, 500), _m("small", ok_small, 200),
          _m("tiny", bad_tiny, 50), _m("probe", bad_tiny, 1000, compressed=False)]
    d = decide(ms, reference="ref", budget_points=1.0)
    assert d.shipped == "small" and d.shipped_compressed and set(d.judgements) == {"big", "small", "tiny"}
    assert ms[3].extra["within_budget"] is False and ms[2].extra["decision"]["within_budget"] is True
    assert "probe" not in d.judgements and "decision" in ms[4].extra  # judged for the report, never shipped
    assert "shipped small" in d.summary() and d.to_dict()["judgements"]["tiny"]["probability"] < 0.01
    d = decide([ms[0], ms[3]], reference="ref", budget_points=1.0)
    assert d.shipped == "ref" and not d.shipped_compressed and "no candidate reached" in d.summary()
