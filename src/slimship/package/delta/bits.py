"""Bit-level packing of delta streams: position bitmasks and LEB128 position gaps.

Bitmasks and int4 nibbles are packed by :mod:`slimship.package.bits` (one bit order for everything slimship
writes); the LEB128 gaps are the delta's own.
"""

from __future__ import annotations

import numpy as np

from slimship.package.bits import pack_mask
from slimship.package.delta.config import _bad


def _mask_bytes(pos: np.ndarray, n: int) -> bytes:
    """The bitmask of kept positions ``pos`` among ``n`` entries (written in the current, little-endian order)."""
    m = np.zeros(n, bool)
    m[pos] = True
    return pack_mask(m)


def _gaps(pos: np.ndarray) -> np.ndarray:
    if pos.size == 0:
        return pos.astype(np.uint64)
    return np.diff(pos.astype(np.int64), prepend=-1).astype(np.uint64) - np.uint64(1)


def _varint_encode(v: np.ndarray) -> bytes:
    """LEB128 of non-negative integers, vectorised."""
    v = v.astype(np.uint64)
    if v.size == 0:
        return b""
    nbytes = np.ones(v.size, np.int64)
    t = v >> np.uint64(7)
    while t.any():
        nbytes += t > 0
        t >>= np.uint64(7)
    ends = np.cumsum(nbytes)
    starts = ends - nbytes
    out = np.empty(int(ends[-1]), np.uint8)
    for j in range(int(nbytes.max())):
        sel = nbytes > j
        byte = (v[sel] >> np.uint64(7 * j)) & np.uint64(0x7F)
        cont = (nbytes[sel] > j + 1).astype(np.uint64) << np.uint64(7)
        out[starts[sel] + j] = (byte | cont).astype(np.uint8)
    return out.tobytes()


def _gaps_decode(raw: bytes, k: int, n: int, name: str) -> np.ndarray:
    """Positions from LEB128 gaps; every check before any allocation proportional to a declared size."""
    b = np.frombuffer(raw, np.uint8)
    ends = np.flatnonzero(b < 0x80)
    if ends.size != k or (b.size and b[-1] >= 0x80):
        raise _bad(f"tensor {name[:60]!r} has {ends.size} position gaps for {k} kept entries")
    if k == 0:
        return np.zeros(0, np.int64)
    starts = np.concatenate(([0], ends[:-1] + 1))
    if int((ends - starts).max()) >= 5:  # 5 bytes hold 35 bits: more than any tensor has entries
        raise _bad(f"tensor {name[:60]!r} has an over-long position gap")
    group = np.repeat(np.arange(k), ends - starts + 1)
    shift = (np.arange(b.size) - starts[group]) * 7
    vals = np.bincount(group, weights=(b & 0x7F).astype(np.float64) * np.exp2(shift), minlength=k)
    pos = np.cumsum(vals.astype(np.int64) + 1) - 1
    if pos[-1] >= n:
        raise _bad(f"tensor {name[:60]!r} has a position past its {n} entries")
    return pos
