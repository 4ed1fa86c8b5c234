"""Classification figures from predicted and true labels: confusion matrix, per-class accuracy, macro-F1 and
a Wilson interval on accuracy. Pure numpy."""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.959963984540054


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``correct / n`` (95 % by default); (nan, nan) when ``n`` is 0.

    Unlike the normal approximation it stays inside [0, 1] and is not zero-width at 0 % or 100 %, which is
    where small validation sets often land."""
    if n <= 0:
        return float("nan"), float("nan")
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """``m[true, predicted]`` counts, int64 ``[num_classes, num_classes]``."""
    labels, predictions = np.asarray(labels, np.int64), np.asarray(predictions, np.int64)
    m = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(m, (labels, predictions), 1)
    return m


def classification_figures(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> dict:
    """Accuracy with its 95 % Wilson interval, per-class accuracy (recall), macro-F1 and the confusion matrix
    (rows: true class, columns: predicted), as plain lists for metrics.json."""
    m = confusion_matrix(labels, predictions, num_classes)
    n, correct = int(m.sum()), int(np.trace(m))
    support, predicted = m.sum(1), m.sum(0)
    diag = np.diag(m).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, diag / support, np.nan)
        precision = np.where(predicted > 0, diag / predicted, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = support > 0  # a class absent from the split has no F1 to average
    lo, hi = wilson_interval(correct, n)
    return {
        "n": n,
        "accuracy": correct / n if n else float("nan"),
        "accuracy_ci95": [round(lo, 5), round(hi, 5)],
        "per_class_accuracy": [None if np.isnan(v) else round(float(v), 5) for v in recall],
        "macro_f1": round(float(f1[present].mean()), 5) if present.any() else float("nan"),
        "confusion": m.tolist(),
    }
