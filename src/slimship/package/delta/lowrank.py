"""The ``lowrank`` delta mode: a changed weight tensor's ``task - base`` as a truncated SVD with fp16 factors.

A tensor of shape ``[rows, ...]`` is read as a ``rows x cols`` matrix (a Conv kernel ``[O, I, k, k]`` as
``O x I*k*k``, the layout LoRA on a Conv2d changes in rank). ``D = U S V^T``; the rank kept is the smallest whose
dropped singular values hold at most ``RANK_TOLERANCE`` of ``||D||`` (relative Frobenius error), capped by the
configured ``rank``. A LoRA-trained tensor changes by ``B A`` of rank <= r, so its SVD stops at r (the rest is fp32
rounding) and the code is exact up to the factors' fp16 rounding. ``L = U sqrt(S)`` and ``R = sqrt(S) V^T`` are
each divided by their largest magnitude and stored as fp16 (``rows x k`` then ``k x cols``, C order, in the
``values`` stream); the entry's ``scale`` is the product of the two maxima. When ``k (rows + cols)`` is not below
``rows x cols`` the factors would cost more than the tensor: the caller stores it as dense fp16 instead.
"""

from __future__ import annotations

import numpy as np

from slimship.package.delta.config import _bad

RANK_TOLERANCE = 1e-3  # largest relative Frobenius error of the delta that the automatic rank accepts


def encode_lowrank(d: np.ndarray, rows: int, max_rank: int | None) -> tuple[int, float, bytes] | None:
    """``(rank, scale, factor bytes)`` of the delta ``d`` (flat float32) as a ``rows``-row matrix, or None when
    the factors would not be smaller than the tensor."""
    cols = d.size // rows
    if rows < 2 or cols < 2:
        return None
    u, s, vt = np.linalg.svd(d.reshape(rows, cols).astype(np.float32, copy=False), full_matrices=False)
    energy = np.square(s.astype(np.float64))
    total = float(energy.sum())
    # tail[k] = energy dropped when k singular values are kept
    tail = total - np.concatenate([[0.0], np.cumsum(energy)])
    k = int(np.argmax(tail <= RANK_TOLERANCE**2 * total)) if total > 0 else 0
    if max_rank is not None:
        k = min(k, int(max_rank))
    if k * (rows + cols) >= rows * cols:
        return None
    root = np.sqrt(s[:k]).astype(np.float32)
    left, right = u[:, :k] * root, root[:, None] * vt[:k]
    sl, sr = float(np.abs(left).max(initial=0.0)), float(np.abs(right).max(initial=0.0))
    if k == 0 or sl == 0.0 or sr == 0.0:
        return 0, 0.0, b""
    payload = (left / sl).astype("<f2").tobytes() + (right / sr).astype("<f2").tobytes()
    return k, sl * sr, payload


def factor_bytes(rank: int, rows: int, n: int) -> int:
    """Bytes of the fp16 factors of a rank-``rank`` code of an ``n``-entry tensor with ``rows`` rows."""
    return 2 * rank * (rows + n // rows)


def apply_lowrank(out: np.ndarray, e: dict, raw: bytes) -> None:
    """Add the decoded low-rank delta of entry ``e`` (already checked: ``val_bytes`` = :func:`factor_bytes`)
    to ``out`` (the base tensor, flat float32) in place."""
    rows, k = e["rows"], e["rank"]
    if k == 0:
        return
    cols = out.size // rows
    left = np.frombuffer(raw, "<f2", count=rows * k).astype(np.float32).reshape(rows, k)
    right = np.frombuffer(raw, "<f2", offset=2 * rows * k).astype(np.float32).reshape(k, cols)
    out += (left @ right).ravel() * np.float32(e["scale"])


def check_lowrank(e: dict, n: int) -> int:
    """The factor bytes entry ``e`` must hold for an ``n``-entry tensor; raises PackageError when its rows or rank
    cannot describe that tensor."""
    rows, k = e["rows"], e["rank"]
    if rows < 2 or n % rows or n // rows < 2:
        raise _bad(f"tensor {e['name'][:60]!r} declares {rows} rows for {n} entries")
    if k > min(rows, n // rows):
        raise _bad(f"tensor {e['name'][:60]!r} declares rank {k}, above its {rows} x {n // rows} shape")
    want = factor_bytes(k, rows, n)
    if e["val_bytes"] != want:
        raise _bad(f"tensor {e['name'][:60]!r} declares {e['val_bytes']} factor bytes, {want} expected")
    return want
