"""Encoding a task against its base: :func:`encode_delta` and the sparse, BitDelta and mixed-codebook coders."""

from __future__ import annotations

import copy
import hashlib
import json
import lzma
import math
import struct
from dataclasses import asdict

import numpy as np

from slimship.package.bits import pack_int4, pack_mask
from slimship.package.delta.bits import _gaps, _mask_bytes, _varint_encode
from slimship.package.delta.config import _FLOAT, _LEVELS, _LZMA_PRESET, _MAGIC, _PREFIX, LOWRANK_VERSION, DeltaConfig
from slimship.package.delta.graph import (
    _is_vector,
    _load_model,
    _match_initializers,
    _numel,
    _plain_numeric,
    _rows,
    _strip,
)
from slimship.package.delta.lowrank import encode_lowrank


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
            sign_chunks.append(pack_mask(d > 0))
            if rows:
                per_row = np.abs(d).reshape(rows, -1).mean(axis=1, dtype=np.float64)
                scale_chunks.append(np.minimum(per_row / scale if scale else per_row, 65504).astype("<f2").tobytes())
            kept_total += n
            continue
        if cfg.mode == "lowrank" and not vector and not _is_vector(task, entry["name"]):
            rows = _rows(task, entry["name"])
            coded = encode_lowrank(d, rows, cfg.rank) if rows else None
            if coded is not None:
                rank, scale, payload = coded
                entry.update(kind="lowrank", rank=rank, rows=rows, scale=scale, val_bytes=len(payload))
                val_chunks.append(payload)
                kept_total += n
                continue
        # lowrank mode: vectors and matrices that factors would not make smaller go as dense fp16 deltas
        bits = 16 if (vector or cfg.mode == "lowrank") and cfg.value_bits < 16 else cfg.value_bits
        if vector or cfg.mode == "lowrank":
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
    # the lowest version that holds these entries, so older readers still read the blobs they can decode
    version = LOWRANK_VERSION if any(e.get("kind") == "lowrank" for e in entries) else 2
    header = {
        "version": version,
        "base_sha256": hashlib.sha256(base_onnx).hexdigest(),
        "mode": cfg.mode,
        "positions": how,
        "streams": {k: len(v) for k, v in streams.items()},
        "tensors": entries,
    }
    head = json.dumps(header, allow_nan=False, separators=(",", ":")).encode()
    payload = struct.pack("<I", len(head)) + head + b"".join(streams.values())
    blob = _PREFIX.pack(_MAGIC, version, len(payload), hashlib.sha256(payload).digest()) + _xz(payload)

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
    drop = {"sparse": ("scales", "bits_per_weight", "rank"), "bitdelta": ("density", "value_bits", "allocation",
            "bits_per_weight", "rank"), "mixed": ("density", "value_bits", "allocation", "rank"),
            "lowrank": ("density", "allocation", "scales", "bits_per_weight")}[cfg.mode]
    for k in drop:
        info.pop(k)
    if cfg.mode == "mixed":
        levels = [e["levels"] for e in entries if e.get("kind") == "codes"]
        info["levels"] = {str(L): levels.count(L) for L in sorted(set(levels))}
    if cfg.mode == "lowrank":
        ranks = [e["rank"] for e in entries if e.get("kind") == "lowrank"]
        info["ranks"] = {str(r): ranks.count(r) for r in sorted(set(ranks))}
        info["dense_fp16"] = sum(1 for e in entries if e.get("kind") == "sparse")
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
    return pos, pack_int4(q), scale


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
    if cfg.mode in ("bitdelta", "lowrank") or not pairs:
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


def _xz(data: bytes, fast: bool = False) -> bytes:
    return lzma.compress(data, format=lzma.FORMAT_XZ, preset=6 if fast else _LZMA_PRESET)
