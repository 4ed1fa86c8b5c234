"""Stratified splitting and subsampling, plus the hold-outs, limits and argument checks of ``load_dataset``.

Splits and subsamples are pure functions of their arguments and seed: the same arguments always give the
same indices.
"""

from __future__ import annotations

import numpy as np

from slimship.data.arrays import ArraySplit
from slimship.core.errors import DataError

__all__ = ["stratified_split", "stratified_subsample"]


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ``fraction`` of every class.

    Per class (in label order) the indices are permuted with one ``np.random.default_rng(seed)`` and
    ``round(fraction * n_c)`` (half up) are held out, but at least 1 when ``n_c >= 2`` and at most
    ``n_c - 1``, so every class keeps a training example; a class with one example is never held out.

    Args:
        labels: int array ``[N]``.
        fraction: in (0, 1).
        seed: RNG seed; the result is a pure function of ``(labels, fraction, seed)``.

    Returns:
        ``(kept, held_out)``: disjoint sorted index arrays covering ``range(N)``; ``held_out`` may be
        empty when every class has fewer than two examples.
    """
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for members in _class_members(labels)[1]:
        members = rng.permutation(members)
        n = members.size
        k = 0 if n < 2 else min(max(int(fraction * n + 0.5), 1), n - 1)
        held.append(members[:k])
    held_out = np.sort(np.concatenate(held)) if held else np.empty(0, np.int64)
    mask = np.ones(labels.shape[0], bool)
    mask[held_out] = False
    return np.flatnonzero(mask), held_out.astype(np.int64)


def stratified_subsample(labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Pick ``limit`` indices with class proportions preserved.

    Quotas use the largest-remainder method (ties to the lower label); a class present in ``labels`` keeps
    at least one example while ``limit`` allows. Within a class, examples are drawn with
    ``np.random.default_rng(seed)``.

    Returns:
        Sorted index array of length ``min(limit, len(labels))``.
    """
    n = labels.shape[0]
    if limit >= n:
        return np.arange(n)
    classes, members = _class_members(labels)
    counts = np.array([m.size for m in members])
    exact = counts * (limit / n)
    quota = np.floor(exact).astype(np.int64)
    order = np.lexsort((np.arange(classes.size), -(exact - quota)))  # largest remainder first
    quota[order[: limit - int(quota.sum())]] += 1
    # Keep every class represented when the limit allows it: take one from the biggest quota.
    for i in np.flatnonzero(quota == 0):
        donor = int(np.argmax(quota))
        if quota[donor] <= 1:
            break
        quota[donor] -= 1
        quota[i] = 1
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(m)[:q] for m, q in zip(members, quota)]
    return np.sort(np.concatenate(picked))


def _class_members(labels: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Sorted class values and, for each, its indices in ascending order (one sort, not one scan per class)."""
    classes, counts = np.unique(labels, return_counts=True)
    order = np.argsort(labels, kind="stable")
    return classes, np.split(order, np.cumsum(counts)[:-1])


# --------------------------------------------------------------------------------------------------
# Hold-outs and limits for load_dataset
# --------------------------------------------------------------------------------------------------


def _hold_out(source: str, split: ArraySplit, fraction: float, seed: int, name: str,
              needed: int, examples: str = "images") -> tuple[ArraySplit, ArraySplit]:
    """``(rest, held out)`` via :func:`stratified_split`; an empty held-out part is a DataError (naming
    ``examples``: images or texts)."""
    kept, held = stratified_split(split.labels, fraction, seed)
    if held.size == 0:
        raise DataError(_too_few_message(source, name, split.labels, needed, examples))
    return split.subset(kept), split.subset(held)


def _limit(split: ArraySplit, limit: int | None, seed: int, name: str) -> tuple[ArraySplit, int | None]:
    """Stratified subsample to ``limit``; returns the split and its size before (None if untouched)."""
    if limit is None or limit >= len(split):
        return split, None
    n_present = len(np.unique(split.labels))
    if name == "train_limit" and limit < n_present:  # a class with no training image cannot be learnt
        raise DataError(f"train_limit {limit} is smaller than the {n_present} classes: raise it to at "
                        f"least {n_present}")
    return split.subset(stratified_subsample(split.labels, limit, seed)), len(split)


def _too_few_message(source: str, split: str, labels: np.ndarray, needed: int, examples: str = "images") -> str:
    most = int(np.bincount(labels).max()) if labels.size else 0
    return (f"data source {source} has too few {examples} for a {split} split (at most {most} per class): "
            f"need at least {needed} {examples} per class (train, validation"
            f"{', test' if needed >= 3 else ''}); add {examples} or pass a separate test source")


def _check_fraction(name: str, value: float) -> None:
    if not (0.0 < float(value) < 1.0):
        raise DataError(f"{name} is {value}: pass a fraction between 0 and 1 (exclusive), e.g. 0.1")


def _check_positive(name: str, value: int | None) -> None:
    if value is not None and (int(value) != value or value < 1):
        raise DataError(f"{name} is {value}: pass a positive whole number or leave it unset")
