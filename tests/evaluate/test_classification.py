"""Confusion matrix, per-class accuracy, macro-F1 and Wilson intervals against hand-computed values."""

from __future__ import annotations

import json

import numpy as np
import pytest

from slimship.evaluate.classification import classification_figures, wilson_interval
from slimship.evaluate.jsonfmt import dumps


def test_figures_of_a_small_example():
    labels = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 1, 1, 2, 2])
    f = classification_figures(labels, pred, 4)  # class 3 never occurs
    assert f["confusion"] == [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert f["per_class_accuracy"][:3] == pytest.approx([2 / 3, 1 / 2, 1.0], abs=1e-5)
    assert f["per_class_accuracy"][3] is None
    # F1 per present class: 0: p=1, r=2/3 -> 0.8; 1: p=1/2, r=1/2 -> 0.5; 2: p=1/2, r=1 -> 2/3
    assert f["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3, abs=1e-5)
    assert f["accuracy"] == pytest.approx(4 / 6) and f["n"] == 6
    lo, hi = f["accuracy_ci95"]
    assert lo < 4 / 6 < hi


def test_wilson_interval_known_values():
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.72247, 1.0), abs=1e-4)
    lo, hi = wilson_interval(940, 1000)
    assert lo == pytest.approx(0.9245, abs=1e-3) and hi == pytest.approx(0.9524, abs=1e-3)
    assert all(np.isnan(wilson_interval(0, 0)))


def test_metrics_json_keeps_number_lists_on_one_line():
    obj = {"confusion": [[1, 2], [3, 4]], "ci": [0.1, 0.2], "nan": float("nan"), "np": np.int64(3), "rows": [{"a": 1}]}
    text = dumps(obj)
    assert "[1, 2]" in text and "[0.1, 0.2]" in text
    assert json.loads(text) == {"confusion": [[1, 2], [3, 4]], "ci": [0.1, 0.2], "nan": None, "np": 3, "rows": [{"a": 1}]}
