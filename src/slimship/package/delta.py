"""One base, many tasks: a task model stored as a small, compressed delta against a shared base graph.

Models fine-tuned from the same base (say ImageNet EfficientNet-Lite0) differ from it by a small change per
weight. :func:`encode_delta` turns two fp32 ONNX graphs of the same architecture into one self-contained blob:

* the task's graph **skeleton**: the task ONNX with the data of every delta-coded initializer removed. It keeps
  the task's own structure, so a task head with another class count (or any tensor the base lacks, or holds at
  another shape) is simply stored whole inside it;
* per matched fp32 initializer (same name, or same place of use, and same shape in base and task) one
  encoding of ``task - base``:

  - ``sparse``: the top ``density`` fraction of entries by ``|delta|`` (per tensor, or allocated across tensors
    with ``allocation="norm"``), values as int8 / int4 with one scale per tensor (MSE-chosen clipping), fp16,
    or 32 bits (lossless: the difference of the fp32 bit patterns), positions as a bitmask or as varint-coded
    gaps, whichever compresses smaller;
  - ``bitdelta`` (BitDelta-style): one sign bit per entry and one fp32 scale per tensor, ``mean |delta|``
    (or per output channel);
  - ``mixed``: every entry coded with a per-tensor Lloyd-Max codebook of 2 to 32 levels, the sizes allocated
    across tensors by rate-distortion under a bits-per-weight budget, optionally weighted by measured
    sensitivities (:func:`tensor_sensitivity`);
  - unchanged tensors cost nothing.

The payload is lzma-compressed as a whole. :func:`apply_delta` rebuilds the task ONNX from the base graph and
the blob, :func:`best_delta` picks the smallest blob whose reconstruction keeps a caller-given score (validation
accuracy) within ``max_drop``, :func:`pack_delta` writes it as a ``.slim`` package and :func:`load_task_onnx`
reads it back against the base package, refusing a base that is not the one the delta was made from.

Decoding is bounded and never executes anything: the blob is JSON + raw arrays, its payload size is checked
before decompressing (with an output bound), its SHA-256 is checked, and every declared size is compared with
the bytes actually present before anything is allocated. Any malformed blob raises
:class:`~slimship.errors.PackageError`. numpy + onnx only (no torch). Layout and figures: docs/delta.md.
"""

from __future__ import annotations

import copy
import hashlib
import json
import lzma
import math
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from slimship.errors import PackageError

__all__ = [
    "DeltaConfig",
    "encode_delta",
    "apply_delta",
    "best_delta",
    "pack_delta",
    "load_task_onnx",
    "tensor_sensitivity",
    "DELTA_PART",
]

DELTA_PART = "delta.bin"
BLOB_VERSION = 1
MODES = ("sparse", "bitdelta", "mixed")
VALUE_BITS = (4, 8, 16, 32)
ALLOCATIONS = ("uniform", "norm")

_MAGIC = b"SLIMDLT\x00"
_PREFIX = struct.Struct("<8sHQ32s")  # magic, version, payload size, sha256(payload); then the xz stream
_MAX_PAYLOAD = 2 * 2**30
_MAX_HEADER = 16 * 2**20
_LZMA_PRESET = 9 | lzma.PRESET_EXTREME
_LZMA_MEMLIMIT = 256 * 2**20
_FLOAT = 1  # onnx.TensorProto.FLOAT
_NUMERIC_TYPES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}  # type: itemsize
_KINDS = ("same", "sparse", "sign", "codes", "half")
# Codebook sizes the mixed mode chooses from. At least 2: dropping a tensor's delta (1 level) looked cheap
# by the error measure but cost far more accuracy than a sign-like 2-level code on real fine-tunes.
_LEVELS = (2, 3, 4, 6, 8, 12, 16, 24, 32)
_FIX = "re-create the delta with slimship.package.delta.encode_delta"


# --------------------------------------------------------------------------------------------- config


@dataclass
class DeltaConfig:
    """How to encode a task against its base.

    mode: ``"sparse"`` (top-``density`` entries, quantised), ``"bitdelta"`` (sign + one scale per tensor) or
        ``"mixed"`` (every entry, coded with a per-tensor codebook whose size is chosen per tensor).
    density: fraction of entries kept per tensor (sparse; ``1.0`` keeps every changed entry).
    value_bits: 4 or 8 (int, per-tensor scale), 16 (fp16 delta) or 32 (lossless) for kept values.
    allocation: ``"uniform"`` keeps ``density`` of every tensor; ``"norm"`` keeps the same total but gives each
        tensor a share proportional to its relative change ``rms(delta) / rms(base)`` (clipped to
        ``[density/4, 1]``), so tensors that moved more keep more entries.
    scales: bitdelta / mixed scale per ``"tensor"`` (BitDelta) or per output ``"channel"`` (row of axis 0:
        one fp16 multiplier per channel on top of the tensor's fp32 scale, which follows per-channel effects
        such as BatchNorm folded into the weights).
    bits_per_weight: mixed mode's budget: average bits per delta entry (entropy estimate; lzma lands close).
        Each tensor's delta is quantised with a Lloyd-Max codebook of 2 to 32 levels; the sizes are allocated
        across tensors greedily by rate-distortion, the distortion of a tensor being its squared error relative
        to the energy of its base weights (an estimate of the noise it adds to its layer's output), times its
        measured sensitivity when one is given.
    dense_vectors: store the deltas of 1-D tensors (biases, the folded BatchNorm shifts) completely, as fp16.
    head_bits: 32 keeps tensors without a base counterpart (the new head) in fp32; 16 stores them as fp16.
    """

    mode: str = "sparse"
    density: float = 0.05
    value_bits: int = 8
    allocation: str = "uniform"
    scales: str = "tensor"
    bits_per_weight: float = 1.4
    dense_vectors: bool = False
    head_bits: int = 32

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"DeltaConfig.mode must be one of {MODES}, got {self.mode!r}")
        if not isinstance(self.density, (int, float)) or not 0.0 < float(self.density) <= 1.0:
            raise ValueError(f"DeltaConfig.density must be in (0, 1], got {self.density!r}")
        if self.value_bits not in VALUE_BITS:
            raise ValueError(f"DeltaConfig.value_bits must be one of {VALUE_BITS}, got {self.value_bits!r}")
        if self.allocation not in ALLOCATIONS:
            raise ValueError(f"DeltaConfig.allocation must be one of {ALLOCATIONS}, got {self.allocation!r}")
        if not isinstance(self.bits_per_weight, (int, float)) or not 0.0 < float(self.bits_per_weight) <= 8.0:
            raise ValueError(f"DeltaConfig.bits_per_weight must be in (0, 8], got {self.bits_per_weight!r}")
        if self.scales not in ("tensor", "channel"):
            raise ValueError(f"DeltaConfig.scales must be 'tensor' or 'channel', got {self.scales!r}")
        if self.head_bits not in (16, 32):
            raise ValueError(f"DeltaConfig.head_bits must be 16 or 32, got {self.head_bits!r}")


# ------------------------------------------------------------------------------------------- encoding


def encode_delta(base_onnx: bytes, task_onnx: bytes, cfg: DeltaConfig | None = None, *,
                 sensitivity: dict[str, float] | None = None) -> tuple[bytes, dict]:
    """Encode ``task_onnx`` against ``base_onnx`` (both fp32 graphs of the same architecture).

    ``sensitivity`` (mixed mode only; from :func:`tensor_sensitivity`) weighs each tensor's error when the
    codebook sizes are allocated.

    Returns ``(blob, info)``; ``info`` holds the blob size, the configuration, the kept fraction, and
    bytes per kind of content (raw, and each stream compressed on its own as an estimate of its share).
    Raises ValueError when a graph cannot be parsed or keeps its weights in external files.
    """
    from onnx import numpy_helper

    cfg = cfg or DeltaConfig()
    base = _load_model(base_onnx, "base_onnx")
    task = _load_model(task_onnx, "task_onnx")
    base_inits = {t.name: t for t in base.graph.initializer}
    matches = _match_initializers(base, task)

    skeleton = copy.deepcopy(task)
    entries: list[dict] = []
    plans: list[tuple[int, np.ndarray, np.ndarray, dict]] = []  # (skeleton index, base, task, entry)
    half_chunks: list[bytes] = []
    n_inline = 0
    for i, t in enumerate(skeleton.graph.initializer):
        bname = matches.get(t.name)
        if bname is not None:
            b_arr = numpy_helper.to_array(base_inits[bname]).astype(np.float32, copy=False).ravel()
            t_arr = numpy_helper.to_array(task.graph.initializer[i]).astype(np.float32, copy=False).ravel()
            entry = {"name": t.name, "base": bname}
            if np.array_equal(b_arr.view(np.uint32), t_arr.view(np.uint32)):
                entry["kind"] = "same"
            plans.append((i, b_arr, t_arr, entry))
            entries.append(entry)
            _strip(t)
        elif cfg.head_bits == 16 and t.data_type == _FLOAT and _plain_numeric(t):
            arr = numpy_helper.to_array(t).astype(np.float16).ravel()
            entries.append({"name": t.name, "kind": "half"})
            half_chunks.append(arr.astype("<f2").tobytes())
            _strip(t)
        else:
            n_inline += 1  # stays whole inside the skeleton (head, integer constants, anything unusual)

    live = [p for p in plans if p[3].get("kind") != "same"]
    kept_k = _allocate(cfg, [(b, t) for _, b, t, _ in live])
    if cfg.mode == "mixed":
        coded_live = [(e["name"], b, t, _rows(task, e["name"]) if cfg.scales == "channel" else 0)
                      for _, b, t, e in live if not (cfg.dense_vectors and _is_vector(task, e["name"]))]
        mixed = iter(_mixed_plan(coded_live, cfg.bits_per_weight, sensitivity))
    pos_items: list[np.ndarray] = []  # per sparse tensor: sorted kept positions; per sign tensor: packed signs
    val_chunks: list[bytes] = []
    sign_chunks: list[bytes] = []
    scale_chunks: list[bytes] = []
    code_chunks: list[bytes] = []
    book_chunks: list[bytes] = []
    total_elems = kept_total = changed_total = 0
    for (_, b_arr, t_arr, entry), k in zip(live, kept_k):
        d = t_arr.astype(np.float32) - b_arr
        n = d.size
        total_elems += n
        changed_total += int(np.count_nonzero(t_arr.view(np.uint32) != b_arr.view(np.uint32)))
        vector = cfg.dense_vectors and _is_vector(task, entry["name"])
        if cfg.mode == "mixed" and not vector:
            book, codes, scale, mult = next(mixed)
            entry.update(kind="codes", levels=int(book.size), scale=scale, rows=0 if mult is None else mult.size)
            book_chunks.append(book.astype("<f4").tobytes())
            code_chunks.append(codes.tobytes())
            if mult is not None:
                scale_chunks.append(mult.astype("<f2").tobytes())
            kept_total += n if book.size > 1 else 0
            continue
        if cfg.mode == "bitdelta" and not vector:
            scale = float(np.mean(np.abs(d), dtype=np.float64))
            rows = _rows(task, entry["name"]) if cfg.scales == "channel" else 0
            entry.update(kind="sign", scale=scale, rows=rows)
            sign_chunks.append(np.packbits(d > 0).tobytes())
            if rows:
                per_row = np.abs(d).reshape(rows, -1).mean(axis=1, dtype=np.float64)
                scale_chunks.append(np.minimum(per_row / scale if scale else per_row, 65504).astype("<f2").tobytes())
            kept_total += n
            continue
        bits = 16 if vector and cfg.value_bits < 16 else cfg.value_bits
        if vector:
            k = n
        pos, payload, scale = _encode_sparse(b_arr, t_arr, d, k, bits)
        entry.update(kind="sparse", bits=bits, k=int(pos.size), scale=scale, val_bytes=len(payload))
        pos_items.append(pos)
        val_chunks.append(payload)
        kept_total += int(pos.size)
    sparse_entries = [e for e in entries if e.get("kind") == "sparse"]
    skel_bytes = skeleton.SerializeToString()

    # Positions: bitmask or varint gaps, whichever compresses smaller (decided for the whole blob).
    sizes = [e_n for e_n in (_numel(task, e["name"]) for e in sparse_entries)]
    coded = {"mask": [_mask_bytes(p, n) for p, n in zip(pos_items, sizes)],
             "gaps": [_varint_encode(_gaps(p)) for p in pos_items]}
    packed = {how: _xz(b"".join(chunks), fast=True) for how, chunks in coded.items()}
    how = min(packed, key=lambda h: (len(packed[h]), h != "mask"))
    for e, chunk in zip(sparse_entries, coded[how]):
        e["pos_bytes"] = len(chunk)
    streams = {
        "skeleton": skel_bytes,
        "positions": b"".join(coded[how]),
        "values": b"".join(val_chunks),
        "signs": b"".join(sign_chunks),
        "scales": b"".join(scale_chunks),
        "codebooks": b"".join(book_chunks),
        "codes": b"".join(code_chunks),
        "half": b"".join(half_chunks),
    }
    header = {
        "version": BLOB_VERSION,
        "base_sha256": hashlib.sha256(base_onnx).hexdigest(),
        "mode": cfg.mode,
        "positions": how,
        "streams": {k: len(v) for k, v in streams.items()},
        "tensors": entries,
    }
    head = json.dumps(header, allow_nan=False, separators=(",", ":")).encode()
    payload = struct.pack("<I", len(head)) + head + b"".join(streams.values())
    blob = _PREFIX.pack(_MAGIC, BLOB_VERSION, len(payload), hashlib.sha256(payload).digest()) + _xz(payload)

    info = {
        **asdict(cfg),
        "bytes": len(blob),
        "positions": how,
        "tensors": {"delta": len(live), "same": len(plans) - len(live), "inline": n_inline,
                    "half": len(half_chunks)},
        "delta_elements": total_elems,
        "changed_fraction": changed_total / total_elems if total_elems else 0.0,
        "kept_fraction": kept_total / total_elems if total_elems else 0.0,
        "raw_bytes": {k: len(v) for k, v in streams.items()},
        # each stream compressed on its own (faster preset): an estimate of its share of the blob
        "xz_bytes": {"skeleton": len(_xz(skel_bytes, fast=True)), "positions": len(packed[how]),
                     **{k: len(_xz(v, fast=True)) for k in ("values", "signs", "scales", "codebooks", "codes", "half")
                        if (v := streams[k])}},
    }
    drop = {"sparse": ("scales", "bits_per_weight"), "bitdelta": ("density", "value_bits", "allocation",
            "bits_per_weight"), "mixed": ("density", "value_bits", "allocation")}[cfg.mode]
    for k in drop:
        info.pop(k)
    if cfg.mode == "mixed":
        levels = [e["levels"] for e in entries if e.get("kind") == "codes"]
        info["levels"] = {str(L): levels.count(L) for L in sorted(set(levels))}
    return blob, info


def _encode_sparse(b: np.ndarray, t: np.ndarray, d: np.ndarray, k: int, bits: int) -> tuple[np.ndarray, bytes, float]:
    """Top-k entries of |d| (only changed ones), quantised; returns (sorted positions, value bytes, scale)."""
    changed = np.flatnonzero(t.view(np.uint32) != b.view(np.uint32))
    if k < changed.size:
        mag = np.abs(d[changed])
        sel = np.argpartition(mag, changed.size - k)[changed.size - k:]
        pos = np.sort(changed[sel])
    else:
        pos = changed
    if bits == 32:  # lossless: difference of the fp32 bit patterns (wraps), so base + it == task exactly
        diff = t.view(np.uint32)[pos] - b.view(np.uint32)[pos]
        return pos, diff.astype("<u4").tobytes(), 1.0
    vals = d[pos]
    if bits == 16:
        h = vals.astype(np.float16)
        keep = h != 0
        return pos[keep], h[keep].astype("<f2").tobytes(), 1.0
    qmax = (1 << (bits - 1)) - 1
    scale = _best_scale(vals, qmax)
    if scale == 0.0:
        return pos[:0], b"", 0.0
    q = np.clip(np.rint(vals / np.float32(scale)), -qmax, qmax).astype(np.int8)
    keep = q != 0  # an entry that quantises to 0 would cost bits and change nothing
    pos, q = pos[keep], q[keep]
    if bits == 8:
        return pos, q.tobytes(), scale
    return pos, _pack_int4(q), scale


def _best_scale(vals: np.ndarray, qmax: int) -> float:
    """Per-tensor scale: the clipping of max|v| (from a small grid) with the least squared error."""
    if vals.size == 0:
        return 0.0
    amax = float(np.max(np.abs(vals)))
    if not math.isfinite(amax) or amax == 0.0:
        return 0.0
    best, best_err = amax / qmax, math.inf
    for clip in (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3):
        s = np.float32(amax * clip / qmax)
        r = np.clip(np.rint(vals / s), -qmax, qmax) * s
        err = float(np.sum((r - vals) ** 2, dtype=np.float64))
        if err < best_err:
            best, best_err = float(s), err
    return best


def _allocate(cfg: DeltaConfig, pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[int]:
    """Entries to keep per changed tensor."""
    sizes = np.array([b.size for b, _ in pairs], np.float64)
    if cfg.mode == "bitdelta" or not pairs:
        return [int(n) for n in sizes]
    if cfg.allocation == "uniform" or cfg.density >= 1.0:
        return [int(math.ceil(cfg.density * n)) for n in sizes]
    rel = np.array([_rms(t - b) / max(_rms(b), 1e-12) for b, t in pairs])
    budget = cfg.density * sizes.sum()
    # density_i = c * rel_i, clipped to [density/4, 1]; find c so that the total matches the budget.
    lo, hi = 0.0, 1.0 / max(rel.min(initial=0.0), 1e-12) + 1.0
    lo_d, hi_d = cfg.density / 4, 1.0
    for _ in range(60):
        c = (lo + hi) / 2
        used = (np.clip(c * rel, lo_d, hi_d) * sizes).sum()
        lo, hi = (c, hi) if used < budget else (lo, c)
    dens = np.clip(lo * rel, lo_d, hi_d)
    return [int(math.ceil(d * n)) for d, n in zip(dens, sizes)]


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def _mixed_plan(pairs: list[tuple[str, np.ndarray, np.ndarray, int]], bits_per_weight: float,
                sensitivity: dict[str, float] | None) -> list[tuple]:
    """Per tensor (name, base, task, rows): (codebook float32 [L], codes uint8 [n], scale, fp16 row multipliers
    or None), the codebook sizes allocated
    greedily by rate-distortion under ``bits_per_weight`` x all entries. Rate: entropy of the codes plus the
    codebook. Distortion: squared error relative to the base weights' energy, times the tensor's sensitivity
    (1 without one; tensors missing from a given ``sensitivity`` get its median)."""
    fill = float(np.median(list(sensitivity.values()))) if sensitivity else 1.0
    options, weights, total = [], [], 0
    for name, b, t, rows in pairs:
        total += b.size
        options.append(_code_options(b, t, rows))
        energy = max(float(np.dot(b.astype(np.float64), b)), 1e-30)
        weights.append((sensitivity or {}).get(name, fill) / energy)
    budget = bits_per_weight * total
    choice = [0] * len(options)
    spent = sum(o[0][0] for o in options)
    while True:  # take the step that buys the most distortion per bit while the budget lasts
        best, best_slope = -1, 0.0
        for i, o in enumerate(options):
            j = choice[i]
            if j + 1 < len(o):
                dr, dd = o[j + 1][0] - o[j][0], (o[j][1] - o[j + 1][1]) * weights[i]
                if spent + dr <= budget and dd / max(dr, 1e-9) > best_slope:
                    best, best_slope = i, dd / max(dr, 1e-9)
        if best < 0:
            break
        j = choice[best]
        spent += options[best][j + 1][0] - options[best][j][0]
        choice[best] = j + 1
    return [o[j][2:] for o, j in zip(options, choice)]


# Lloyd fits are the slow part of the mixed mode and do not depend on the budget: best_delta tries several
# budgets on the same pair of graphs, so the fits of the last few tensors seen are kept.
_OPTIONS: dict[bytes, list[tuple]] = {}


def _code_options(b: np.ndarray, t: np.ndarray, rows: int) -> list[tuple]:
    """(rate bits, squared error, codebook, codes, scale, row multipliers) for each codebook size, on the
    lower convex hull. With ``rows`` the delta is divided by a per-row scale (fp32 tensor scale x fp16 row
    multiplier: mean |delta| of the row) before the codebook is fitted, and multiplied back on decoding."""
    key = hashlib.sha256(b.tobytes() + t.tobytes() + str(rows).encode()).digest()
    hit = _OPTIONS.get(key)
    if hit is not None:
        return hit
    d = t - b
    scale, mult, unit = 1.0, None, d
    if rows:
        scale = float(np.mean(np.abs(d), dtype=np.float64)) or 1.0
        per_row = np.abs(d).reshape(rows, -1).mean(axis=1, dtype=np.float64) / scale
        mult = np.minimum(per_row, 65504).astype(np.float16)
        rs = np.repeat(mult.astype(np.float32) * np.float32(scale), d.size // rows)
        unit = np.divide(d, rs, out=np.zeros_like(d), where=rs > 0)
    pts = []
    for levels in _LEVELS:
        book, codes = _lloyd(unit, levels)
        counts = np.bincount(codes, minlength=levels)
        p = counts[counts > 0] / d.size
        rate = float(-(p * np.log2(p)).sum()) * d.size + 32 * levels + 16 * rows
        err = d - (book[codes] * rs if rows else book[codes])
        pts.append((rate, float(np.dot(err.astype(np.float64), err)), book, codes, scale, mult))
    hull = _lower_hull(pts)
    if len(_OPTIONS) >= 512:
        _OPTIONS.pop(next(iter(_OPTIONS)))
    _OPTIONS[key] = hull
    return hull


def _lower_hull(pts: list[tuple]) -> list[tuple]:
    """Options sorted by rate, keeping only those on the lower convex hull of (rate, distortion)."""
    pts = sorted(pts, key=lambda p: (p[0], p[1]))
    hull: list[tuple] = []
    for p in pts:
        if hull and p[1] >= hull[-1][1]:
            continue  # costs more and is no better
        while len(hull) >= 2:
            (r1, d1), (r2, d2) = hull[-2][:2], hull[-1][:2]
            if (d1 - d2) * (p[0] - r2) <= (d2 - p[1]) * (r2 - r1):  # hull[-1] lies above the chord
                hull.pop()
            else:
                break
        hull.append(p)
    return hull


def _lloyd(x: np.ndarray, levels: int, iters: int = 15, sample: int = 1 << 16) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd-Max codebook (sorted float32 [levels]) fitted on a strided sample, then codes for every entry,
    and the codebook re-centred on the full data."""
    xs = x[:: max(1, x.size // sample)].astype(np.float64)
    book = np.quantile(xs, (np.arange(levels) + 0.5) / levels) if levels > 1 else np.array([xs.mean()])
    for _ in range(iters if levels > 1 else 0):
        idx = np.searchsorted((book[1:] + book[:-1]) / 2, xs)
        cnt = np.bincount(idx, minlength=levels)
        book = np.where(cnt > 0, np.bincount(idx, weights=xs, minlength=levels) / np.maximum(cnt, 1), book)
        book.sort()
    codes = np.searchsorted((book[1:] + book[:-1]) / 2, x).astype(np.uint8)
    cnt = np.bincount(codes, minlength=levels)
    full = np.bincount(codes, weights=x.astype(np.float64), minlength=levels)
    book = np.where(cnt > 0, full / np.maximum(cnt, 1), book)  # stays sorted: each mean lies in its cell
    return book.astype(np.float32), codes


# ------------------------------------------------------------------------------------------- decoding


def apply_delta(base_onnx: bytes, blob: bytes) -> bytes:
    """Rebuild the task ONNX from its base graph and a blob from :func:`encode_delta`.

    Raises PackageError when the blob is malformed, truncated or tampered with, or was made against
    another base graph.
    """
    from onnx import numpy_helper

    header, streams = _open_blob(blob)
    have = hashlib.sha256(base_onnx).hexdigest()
    if header["base_sha256"] != have:
        raise PackageError(
            f"this delta was made against base graph sha256 {header['base_sha256'][:16]}..., but the base given "
            f"has {have[:16]}...: pass the base it was made from"
        )
    try:
        base = _load_model(base_onnx, "base graph")
    except ValueError as e:
        raise PackageError(f"the base graph cannot be read ({e}): pass a valid base ONNX") from None
    skeleton = _parse_skeleton(streams["skeleton"])
    base_inits = {t.name: t for t in base.graph.initializer}
    inits = {t.name: t for t in skeleton.graph.initializer}
    if len(inits) != len(skeleton.graph.initializer):
        raise _bad("its graph repeats an initializer name")
    cursors = {k: 0 for k in ("positions", "values", "signs", "scales", "codebooks", "codes", "half")}
    seen: set[str] = set()
    for e in header["tensors"]:
        name = e["name"]
        if name in seen or name not in inits:
            raise _bad(f"tensor entry {name[:60]!r} is repeated or not in its graph")
        seen.add(name)
        t = inits[name]
        if t.data_type != _FLOAT or not _is_stripped(t):
            raise _bad(f"tensor {name[:60]!r} is not an empty fp32 tensor in its graph")
        n = _dims_numel(t.dims)
        if e["kind"] == "half":
            raw = _take(streams, cursors, "half", 2 * n)
            out = np.frombuffer(raw, "<f2").astype(np.float32)
        else:
            b = base_inits.get(e["base"])
            if b is None or b.data_type != _FLOAT or list(b.dims) != list(t.dims):
                raise _bad(f"tensor {name[:60]!r} refers to base tensor {e['base'][:60]!r}, which the base "
                           f"graph does not hold at that shape")
            out = numpy_helper.to_array(b).astype(np.float32).ravel()  # a fresh, writable copy
            if e["kind"] == "sparse":
                _apply_sparse(out, e, header["positions"], streams, cursors)
            elif e["kind"] == "codes":
                levels, rows = e["levels"], e["rows"]
                book = np.frombuffer(_take(streams, cursors, "codebooks", 4 * levels), "<f4")
                codes = np.frombuffer(_take(streams, cursors, "codes", n), np.uint8)
                if codes.size and int(codes.max()) >= levels:
                    raise _bad(f"tensor {name[:60]!r} has a code past its {levels}-entry codebook")
                if rows:
                    out += book[codes] * _row_scales(t, e, n, streams, cursors)
                else:
                    out += book[codes]
            elif e["kind"] == "sign":
                raw = _take(streams, cursors, "signs", (n + 7) // 8)
                signs = np.unpackbits(np.frombuffer(raw, np.uint8), count=n).astype(bool)
                s = _row_scales(t, e, n, streams, cursors) if e["rows"] else np.float32(e["scale"])
                out += np.where(signs, s, -s)
        t.raw_data = out.astype("<f4").tobytes()
    missing = [t.name for t in skeleton.graph.initializer if _is_stripped(t) and t.name not in seen
               and _dims_numel(t.dims) > 0]
    if missing:
        raise _bad(f"its graph has {len(missing)} initializer(s) without data (e.g. {missing[0][:60]!r})")
    for k, at in cursors.items():
        if at != len(streams[k]):
            raise _bad(f"{len(streams[k]) - at} unused bytes in its {k} stream")
    return skeleton.SerializeToString()


def _row_scales(t, e: dict, n: int, streams: dict, cursors: dict) -> np.ndarray:
    """Per-entry scale: the tensor's fp32 scale times the fp16 multiplier of the entry's row (axis 0)."""
    rows = e["rows"]
    if not t.dims or t.dims[0] != rows or n % rows:
        raise _bad(f"tensor {e['name'][:60]!r} declares {rows} scale rows for shape {list(t.dims)}")
    mult = np.frombuffer(_take(streams, cursors, "scales", 2 * rows), "<f2").astype(np.float32)
    return np.repeat(mult * np.float32(e["scale"]), n // rows)


def _apply_sparse(out: np.ndarray, e: dict, how: str, streams: dict, cursors: dict) -> None:
    n, k, bits = out.size, e["k"], e["bits"]
    if k > n:
        raise _bad(f"tensor {e['name'][:60]!r} keeps {k} of {n} entries")
    raw_pos = _take(streams, cursors, "positions", e["pos_bytes"])
    if how == "mask":
        if len(raw_pos) != (n + 7) // 8:
            raise _bad(f"tensor {e['name'][:60]!r} has a {len(raw_pos)}-byte mask for {n} entries")
        bitsarr = np.unpackbits(np.frombuffer(raw_pos, np.uint8))
        if bitsarr[n:].any():
            raise _bad(f"tensor {e['name'][:60]!r} has mask bits past its end")
        pos = np.flatnonzero(bitsarr[:n])
    else:
        pos = _gaps_decode(raw_pos, k, n, e["name"])
    if pos.size != k:
        raise _bad(f"tensor {e['name'][:60]!r} declares {k} kept entries but its positions give {pos.size}")
    want = {32: 4 * k, 16: 2 * k, 8: k, 4: (k + 1) // 2}[bits]
    if e["val_bytes"] != want:
        raise _bad(f"tensor {e['name'][:60]!r} declares {e['val_bytes']} value bytes, {want} expected")
    raw = _take(streams, cursors, "values", want)
    if bits == 32:
        bitsum = out.view(np.uint32)[pos] + np.frombuffer(raw, "<u4")
        out.view(np.uint32)[pos] = bitsum
        return
    if bits == 16:
        vals = np.frombuffer(raw, "<f2").astype(np.float32)
    else:
        q = np.frombuffer(raw, np.int8) if bits == 8 else _unpack_int4(raw, k)
        vals = q.astype(np.float32) * np.float32(e["scale"])
    out[pos] += vals


def _open_blob(blob: bytes) -> tuple[dict, dict[str, bytes]]:
    """Check prefix, decompress with a bound, verify, split: (validated header, streams)."""
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise PackageError(f"a delta blob must be bytes, got {type(blob).__name__}: pass the bytes of delta.bin")
    blob = bytes(blob)
    if len(blob) < _PREFIX.size or blob[:8] != _MAGIC:
        raise PackageError(f"this is not a slimship delta blob (too short or wrong signature): {_FIX}")
    _, version, size, digest = _PREFIX.unpack_from(blob)
    if version == 0 or version > BLOB_VERSION:
        raise PackageError(f"the delta blob has version {version}, this slimship reads 1 to {BLOB_VERSION}: "
                           f"upgrade slimship or {_FIX}")
    if size > _MAX_PAYLOAD:
        raise _bad(f"it declares a {size}-byte payload, over the {_MAX_PAYLOAD}-byte limit")
    d = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=_LZMA_MEMLIMIT)
    try:
        payload = d.decompress(blob[_PREFIX.size:], max_length=size + 1)
    except lzma.LZMAError as e:
        raise _bad(f"its compressed data is damaged ({str(e)[:80]})") from None
    if len(payload) != size or not d.eof or d.unused_data:
        raise _bad(f"it is truncated or padded (payload {len(payload)} bytes, {size} declared)")
    if hashlib.sha256(payload).digest() != digest:
        raise _bad("its payload fails its SHA-256 check")
    if size < 4:
        raise _bad("its payload is too short")
    (hlen,) = struct.unpack_from("<I", payload)
    if hlen > min(_MAX_HEADER, size - 4):
        raise _bad(f"it declares a {hlen}-byte header in a {size}-byte payload")
    header = _parse_json(payload[4 : 4 + hlen])
    _check_header(header)
    streams, at = {}, 4 + hlen
    for k, n in header["streams"].items():
        streams[k] = payload[at : at + n]
        at += n
    if at != size:
        raise _bad(f"its streams cover {at} of {size} payload bytes")
    return header, streams


def _check_header(h: Any) -> None:
    def need(cond: bool, what: str) -> None:
        if not cond:
            raise _bad(f"its header is invalid ({what})")

    need(isinstance(h, dict), "not an object")
    need(set(h) == {"version", "base_sha256", "mode", "positions", "streams", "tensors"}, "unexpected keys")
    need(h["version"] == BLOB_VERSION and type(h["version"]) is int, "version")
    need(isinstance(h["base_sha256"], str) and len(h["base_sha256"]) == 64
         and all(c in "0123456789abcdef" for c in h["base_sha256"]), "base_sha256")
    need(h["mode"] in MODES, "mode")
    need(h["positions"] in ("mask", "gaps"), "positions")
    s = h["streams"]
    need(isinstance(s, dict) and list(s) == ["skeleton", "positions", "values", "signs", "scales", "codebooks",
                                                                "codes", "half"], "streams")
    need(all(_is_size(v) for v in s.values()), "stream sizes")
    need(isinstance(h["tensors"], list), "tensors")
    common = {"name", "kind"}
    for e in h["tensors"]:
        need(isinstance(e, dict) and isinstance(e.get("name"), str) and e.get("kind") in _KINDS, "tensor entry")
        kind = e["kind"]
        keys = {"same": common | {"base"}, "half": common, "sign": common | {"base", "scale", "rows"},
                "codes": common | {"base", "levels", "scale", "rows"},
                "sparse": common | {"base", "bits", "k", "scale", "val_bytes", "pos_bytes"}}[kind]
        need(set(e) == keys, f"keys of tensor entry {e['name'][:60]!r}")
        if "base" in e:
            need(isinstance(e["base"], str), "tensor base name")
        if "scale" in e:
            need(type(e["scale"]) in (int, float) and math.isfinite(e["scale"]), "tensor scale")
        if kind in ("sign", "codes"):
            need(_is_size(e["rows"]), "tensor scale rows")
        if kind == "codes":
            need(type(e["levels"]) is int and 1 <= e["levels"] <= 256, "tensor codebook size")
        if kind == "sparse":
            need(e["bits"] in VALUE_BITS and type(e["bits"]) is int, "tensor value bits")
            need(all(_is_size(e[k]) for k in ("k", "val_bytes", "pos_bytes")), "tensor sizes")


def _take(streams: dict, cursors: dict, key: str, n: int) -> bytes:
    at = cursors[key]
    if n < 0 or at + n > len(streams[key]):
        raise _bad(f"its {key} stream is shorter than its tensors declare")
    cursors[key] = at + n
    return streams[key][at : at + n]


def _parse_skeleton(raw: bytes):
    import onnx

    try:
        model = onnx.load_from_string(raw)
    except Exception as e:  # protobuf DecodeError and friends: the bytes are not a ModelProto
        raise _bad(f"its graph cannot be parsed ({type(e).__name__})") from None
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            raise _bad(f"its graph refers to external data ({t.name[:60]!r})")
    return model


def _parse_json(raw: bytes) -> Any:
    def pairs(items: list) -> dict:
        obj = dict(items)
        if len(obj) != len(items):
            raise ValueError("duplicate key")
        return obj

    def const(name: str) -> Any:
        raise ValueError(f"{name} is not allowed")

    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=pairs, parse_constant=const)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise _bad(f"its header is not valid JSON ({str(e)[:80]})") from None


def _bad(what: str) -> PackageError:
    return PackageError(f"the delta blob is malformed: {what}; the file is corrupted, {_FIX}")


def _is_size(v: Any) -> bool:
    return type(v) is int and 0 <= v <= _MAX_PAYLOAD


# ------------------------------------------------------------------------------------------- choosing


def tensor_sensitivity(base_onnx: bytes, task_onnx: bytes, inputs: np.ndarray, *, min_size: int = 4096,
                       batch_size: int = 128) -> dict[str, float]:
    """How much each changed tensor's delta matters, measured in ONNX Runtime on ``inputs`` (model-ready
    float32 ``[N, C, H, W]``, e.g. a few hundred validation images; never the test split).

    For every matched tensor of at least ``min_size`` entries whose delta is not zero, only that tensor is
    replaced by its 2-level (sign-like) code and the mean KL divergence of the outputs from the task's is
    measured; the result is that KL per unit of relative squared error (error energy / base energy), the
    weight :func:`encode_delta`'s mixed mode gives the tensor. Smaller tensors get the median.
    One session per tensor: about a second each for EfficientNet-Lite0 on 256 images of 64 px.
    """
    from onnx import numpy_helper

    from slimship.evaluate.runtime import ort_logits, ort_session

    base, task = _load_model(base_onnx, "base_onnx"), _load_model(task_onnx, "task_onnx")
    base_inits = {t.name: t for t in base.graph.initializer}
    ref = _log_softmax(ort_logits(ort_session(task_onnx), inputs, batch_size))
    matches = _match_initializers(base, task)
    out: dict[str, float] = {}
    for t in task.graph.initializer:
        bname = matches.get(t.name)
        if bname is None or _dims_numel(t.dims) < min_size:
            continue
        b = numpy_helper.to_array(base_inits[bname]).astype(np.float32).ravel()
        v = numpy_helper.to_array(t).astype(np.float32).ravel()
        if np.array_equal(b.view(np.uint32), v.view(np.uint32)):
            continue
        book, codes = _lloyd(v - b, 2)
        err = (v - b) - book[codes]
        rel = float(np.dot(err.astype(np.float64), err)) / max(float(np.dot(b.astype(np.float64), b)), 1e-30)
        saved = copy.deepcopy(t)
        _strip(t)
        t.raw_data = (b + book[codes]).astype("<f4").tobytes()
        logp = _log_softmax(ort_logits(ort_session(task.SerializeToString()), inputs, batch_size))
        t.CopyFrom(saved)
        kl = float(np.mean(np.sum(np.exp(ref) * (ref - logp), axis=1)))
        out[t.name] = max(kl, 0.0) / max(rel, 1e-30)
    return out


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def best_delta(
    base_onnx: bytes,
    task_onnx: bytes,
    score: Callable[[bytes], float],
    max_drop: float,
    densities: Iterable[float] = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2),
    modes: Iterable[str] = ("sparse", "bitdelta", "mixed"),
    *,
    budgets: Iterable[float] = (1.0, 1.2, 1.4, 1.7, 2.0, 2.5, 3.0),
    inputs: np.ndarray | None = None,
    value_bits: int = 8,
    allocation: str = "uniform",
    scales: str = "tensor",
    dense_vectors: bool = False,
    head_bits: int = 32,
    configs: Iterable[DeltaConfig] | None = None,
) -> tuple[bytes, dict]:
    """The smallest blob whose reconstruction scores at least ``score(task_onnx) - max_drop``.

    ``score`` maps ONNX bytes to a quality figure (validation accuracy; never the test split). The candidates
    are ``sparse`` at every density, ``bitdelta`` with per-tensor and per-channel scales, ``mixed`` at every
    budget (bits per weight; ``scales`` applies to it), each with the keyword options given, or the explicit
    ``configs``; every one is encoded, rebuilt and scored. With
    ``inputs`` (model-ready validation images, a few hundred) the mixed mode allocates its bits by measured
    :func:`tensor_sensitivity`. If none qualifies the lossless delta (density 1, 32-bit values) is returned,
    marked ``"fallback": True``. The info dict is the chosen blob's, plus ``val_task``, ``val_delta``,
    ``max_drop``, ``fallback`` and ``trials`` (one row per candidate: its config, bytes, score, reference, ok).
    """
    common = {"dense_vectors": dense_vectors, "head_bits": head_bits}
    if configs is None:
        cands: list[DeltaConfig] = []
        for mode in modes:
            if mode == "bitdelta":
                cands += [DeltaConfig(mode="bitdelta", scales=sc, **common) for sc in ("tensor", "channel")]
            elif mode == "mixed":
                cands += [DeltaConfig(mode="mixed", bits_per_weight=float(b), scales=scales, **common)
                          for b in budgets]
            elif mode == "sparse":
                cands += [DeltaConfig(mode="sparse", density=float(d), value_bits=value_bits,
                                      allocation=allocation, **common) for d in densities]
            else:
                raise ValueError(f"unknown mode {mode!r}: use {', '.join(MODES)}")
    else:
        cands = list(configs)
    if not cands:
        raise ValueError("best_delta needs at least one candidate (modes x densities/budgets, or configs)")
    reference = float(score(task_onnx))
    sensitivity = None
    if inputs is not None and any(c.mode == "mixed" for c in cands):
        sensitivity = tensor_sensitivity(base_onnx, task_onnx, inputs)
    trials, best = [], None
    for cfg in cands:
        blob, info = encode_delta(base_onnx, task_onnx, cfg, sensitivity=sensitivity)
        s = float(score(apply_delta(base_onnx, blob)))
        ok = s >= reference - max_drop
        trials.append({**{k: v for k, v in info.items() if k not in ("raw_bytes", "xz_bytes", "tensors")},
                       "score": s, "reference": reference, "ok": ok})
        if ok and (best is None or len(blob) < len(best[0])):
            best = (blob, info, s)
    fallback = best is None
    if best is None:
        blob, info = encode_delta(base_onnx, task_onnx, DeltaConfig("sparse", 1.0, 32, head_bits=32))
        best = (blob, info, float(score(apply_delta(base_onnx, blob))))
    blob, info, s = best
    return blob, {**info, "sensitivity": sensitivity is not None, "val_task": reference, "val_delta": s,
                  "max_drop": max_drop, "fallback": fallback, "trials": trials}


# ------------------------------------------------------------------------------------------- packages


def pack_delta(path: str | Path, *, base_package: str | Path, task_package: str | Path, blob: bytes,
               info: dict) -> int:
    """Write a delta package; returns its size in bytes.

    The manifest is the task package's (its ``metrics`` are the full fine-tune's) plus ``delta``:
    ``base_package_sha256``, ``base_graph_sha256``, ``mode`` and ``info``. The only part is ``delta.bin``:
    the blob is self-contained (it carries the task's graph skeleton, head included). Raises ValueError if
    the blob was not made against the base package's graph, PackageError if a package does not read.
    """
    from slimship.package.format import read_package, write_package
    from slimship.package.pack import ONNX_PART

    base = read_package(base_package)
    if ONNX_PART not in base.parts:
        raise PackageError(f"{base_package} has no {ONNX_PART}: pass a full package as the base")
    base_graph = hashlib.sha256(base.read_part(ONNX_PART)).hexdigest()
    header, _ = _open_blob(blob)
    if header["base_sha256"] != base_graph:
        raise ValueError(f"the blob was made against base graph {header['base_sha256'][:16]}..., not the graph of "
                         f"{base_package} ({base_graph[:16]}...): encode it against this base")
    task = read_package(task_package)
    manifest = copy.deepcopy(task.manifest)
    manifest["delta"] = {
        "base_package_sha256": base.package_sha256,
        "base_graph_sha256": base_graph,
        "mode": header["mode"],
        "info": json.loads(json.dumps(info, default=str, allow_nan=False)),
    }
    return write_package(path, manifest, {DELTA_PART: bytes(blob)}, codecs={DELTA_PART: "none"})


def load_task_onnx(delta_package_path: str | Path, base_package_path: str | Path) -> bytes:
    """Rebuild the task ONNX from a delta package and its base package (both fully verified).

    The base must be the package the delta was made from, or a re-pack of the same base graph (the graph
    hash decides: it is what the reconstruction depends on). Raises PackageError otherwise.
    """
    from slimship.package.format import read_package
    from slimship.package.pack import ONNX_PART

    pkg = read_package(delta_package_path)
    meta = pkg.manifest.get("delta")
    if (not isinstance(meta, dict) or DELTA_PART not in pkg.parts
            or not all(isinstance(meta.get(k), str) for k in ("base_package_sha256", "base_graph_sha256"))):
        raise PackageError(f"{delta_package_path} is not a delta package (no delta manifest entry or no "
                           f"{DELTA_PART}): load it with slimship.package.pack.load_package instead")
    base = read_package(base_package_path)
    if ONNX_PART not in base.parts:
        raise PackageError(f"{base_package_path} has no {ONNX_PART}: pass the full base package the delta was "
                           f"made from")
    base_onnx = base.read_part(ONNX_PART)
    graph = hashlib.sha256(base_onnx).hexdigest()
    if base.package_sha256 != meta["base_package_sha256"] and graph != meta["base_graph_sha256"]:
        raise PackageError(
            f"{base_package_path} is not the base of {delta_package_path} (package sha256 "
            f"{base.package_sha256[:16]}..., expected {meta['base_package_sha256'][:16]}...): pass the base "
            f"package the delta was made from"
        )
    return apply_delta(base_onnx, pkg.read_part(DELTA_PART))


# -------------------------------------------------------------------------------------------- helpers


def _load_model(data: bytes, what: str):
    import onnx

    try:
        model = onnx.load_from_string(bytes(data))
    except Exception as e:
        raise ValueError(f"{what} is not an ONNX model ({type(e).__name__})") from None
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            raise ValueError(f"{what} keeps initializer {t.name!r} in external data: embed the weights")
    return model


def _plain_numeric(t) -> bool:
    return t.data_type in _NUMERIC_TYPES and t.data_location == 0


def _strip(t) -> None:
    """Remove a tensor's data, keep its name, type and shape."""
    t.ClearField("raw_data")
    for f in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data"):
        t.ClearField(f)


def _is_stripped(t) -> bool:
    return not (t.raw_data or t.float_data or t.int32_data or t.int64_data or t.double_data or t.uint64_data
                or t.string_data)


def _dims_numel(dims) -> int:
    n = 1
    for d in dims:
        if d < 0:
            raise _bad("a tensor has a negative dimension")
        n *= int(d)
        if n > _MAX_PAYLOAD:
            raise _bad("a tensor is larger than any payload could fill")
    return n


def _numel(model, name: str) -> int:
    for t in model.graph.initializer:
        if t.name == name:
            return _dims_numel(t.dims)
    raise KeyError(name)


def _rows(model, name: str) -> int:
    """Output channels (axis 0) of a tensor with 2+ dimensions, else 0 (one scale for the tensor)."""
    for t in model.graph.initializer:
        if t.name == name:
            return int(t.dims[0]) if len(t.dims) >= 2 and t.dims[0] > 1 else 0
    return 0


def _is_vector(model, name: str) -> bool:
    for t in model.graph.initializer:
        if t.name == name:
            return len([d for d in t.dims if d != 1]) <= 1
    return False


def _match_initializers(base, task) -> dict[str, str]:
    """task initializer name -> base initializer name, for fp32 tensors of equal shape.

    By name first; names the exporter generated (``onnx::Conv_123``) can shift between exports, so any
    tensor left over is matched by where it is used (see _use_keys) when that place is unique in both
    graphs."""
    bt = {t.name: t for t in base.graph.initializer if t.data_type == _FLOAT and _plain_numeric(t)}
    out: dict[str, str] = {}
    left = []
    for t in task.graph.initializer:
        if t.data_type != _FLOAT or not _plain_numeric(t):
            continue
        b = bt.get(t.name)
        if b is not None and list(b.dims) == list(t.dims):
            out[t.name] = t.name
        else:
            left.append(t)
    if left:
        used = set(out.values())
        bkeys = _use_keys(base, {n for n in bt if n not in used})
        tkeys = _use_keys(task, {t.name for t in left})
        by_key: dict[tuple, list[str]] = {}
        for n, key in bkeys.items():
            by_key.setdefault(key, []).append(n)
        tcount: dict[tuple, int] = {}
        for key in tkeys.values():
            tcount[key] = tcount.get(key, 0) + 1
        for t in left:
            key = tkeys.get(t.name)
            cands = by_key.get(key, []) if key else []
            if len(cands) == 1 and tcount[key] == 1 and list(bt[cands[0]].dims) == list(t.dims):
                out[t.name] = cands[0]
    return out


def _use_keys(model, names: set[str]) -> dict[str, tuple]:
    """Where each named tensor is used: sorted (op type, ordinal among nodes of that op type, input slot),
    looking through Identity nodes (the exporter inserts them where it deduplicated equal tensors, so their
    number differs between exports)."""
    alias: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type == "Identity" and len(node.input) == 1 and len(node.output) == 1:
            alias[node.output[0]] = node.input[0]

    def root(name: str) -> str:
        for _ in range(64):  # Identity chains are short; the bound keeps a cyclic graph from looping
            if name not in alias:
                break
            name = alias[name]
        return name

    keys: dict[str, list] = {n: [] for n in names}
    ordinal: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type == "Identity":
            continue
        i = ordinal[node.op_type] = ordinal.get(node.op_type, -1) + 1
        for slot, inp in enumerate(node.input):
            r = root(inp)
            if r in keys:
                keys[r].append((node.op_type, i, slot))
    return {n: tuple(sorted(v)) for n, v in keys.items() if v}


def _xz(data: bytes, fast: bool = False) -> bytes:
    return lzma.compress(data, format=lzma.FORMAT_XZ, preset=6 if fast else _LZMA_PRESET)


def _mask_bytes(pos: np.ndarray, n: int) -> bytes:
    m = np.zeros(n, bool)
    m[pos] = True
    return np.packbits(m).tobytes()


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


def _pack_int4(q: np.ndarray) -> bytes:
    u = (q.astype(np.int16) & 0xF).astype(np.uint8)
    if u.size % 2:
        u = np.concatenate([u, np.zeros(1, np.uint8)])
    return (u[0::2] | (u[1::2] << 4)).tobytes()


def _unpack_int4(raw: bytes, k: int) -> np.ndarray:
    b = np.frombuffer(raw, np.uint8)
    u = np.empty(b.size * 2, np.uint8)
    u[0::2], u[1::2] = b & 0xF, b >> 4
    u = u[:k].astype(np.int8)
    return np.where(u >= 8, u - 16, u).astype(np.int8)
