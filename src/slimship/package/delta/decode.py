"""Decoding: :func:`apply_delta`, and opening a blob (bounded decompression, hash and header checks)."""

from __future__ import annotations

import hashlib
import json
import lzma
import math
import struct
from typing import Any

import numpy as np

from slimship.core.errors import PackageError
from slimship.package._header import MAX_EXPANSION, _bomb_like
from slimship.package.bits import padding_is_clear, unpack_int4, unpack_mask
from slimship.package.delta.bits import _gaps_decode
from slimship.package.delta.config import (
    _BIT_ORDER,
    _FIX,
    _FLOAT,
    _KINDS,
    _LZMA_MEMLIMIT,
    _MAGIC,
    _MAX_HEADER,
    _MAX_PAYLOAD,
    _PREFIX,
    BLOB_VERSION,
    MODES,
    VALUE_BITS,
    _bad,
)
from slimship.package.delta.graph import _dims_numel, _is_stripped, _load_model
from slimship.package.delta.lowrank import apply_lowrank, check_lowrank


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
    bitorder = _BIT_ORDER[header["version"]]
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
                _apply_sparse(out, e, header["positions"], bitorder, streams, cursors)
            elif e["kind"] == "lowrank":
                apply_lowrank(out, e, _take(streams, cursors, "values", check_lowrank(e, n)))
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
                signs = unpack_mask(raw, n, bitorder)
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


def _apply_sparse(out: np.ndarray, e: dict, how: str, bitorder: str, streams: dict, cursors: dict) -> None:
    n, k, bits = out.size, e["k"], e["bits"]
    if k > n:
        raise _bad(f"tensor {e['name'][:60]!r} keeps {k} of {n} entries")
    raw_pos = _take(streams, cursors, "positions", e["pos_bytes"])
    if how == "mask":
        if len(raw_pos) != (n + 7) // 8:
            raise _bad(f"tensor {e['name'][:60]!r} has a {len(raw_pos)}-byte mask for {n} entries")
        if not padding_is_clear(raw_pos, n, bitorder):
            raise _bad(f"tensor {e['name'][:60]!r} has mask bits past its end")
        pos = np.flatnonzero(unpack_mask(raw_pos, n, bitorder))
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
        q = np.frombuffer(raw, np.int8) if bits == 8 else unpack_int4(raw, k)
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
    if _bomb_like(size, len(blob)):  # the container's own rule: the blob is compressed inside the package too
        raise _bad(f"it declares a {size:,}-byte payload in {len(blob):,} bytes, over the {MAX_EXPANSION}:1 limit "
                   "(a decompression bomb)")
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
    _check_header(header, version)
    streams, at = {}, 4 + hlen
    for k, n in header["streams"].items():
        streams[k] = payload[at : at + n]
        at += n
    if at != size:
        raise _bad(f"its streams cover {at} of {size} payload bytes")
    return header, streams


def _check_header(h: Any, version: int) -> None:
    def need(cond: bool, what: str) -> None:
        if not cond:
            raise _bad(f"its header is invalid ({what})")

    need(isinstance(h, dict), "not an object")
    need(set(h) == {"version", "base_sha256", "mode", "positions", "streams", "tensors"}, "unexpected keys")
    need(h["version"] == version and type(h["version"]) is int, "version")  # the prefix's version, repeated
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
                "lowrank": common | {"base", "rank", "rows", "scale", "val_bytes"},
                "sparse": common | {"base", "bits", "k", "scale", "val_bytes", "pos_bytes"}}[kind]
        need(set(e) == keys, f"keys of tensor entry {e['name'][:60]!r}")
        if "base" in e:
            need(isinstance(e["base"], str), "tensor base name")
        if "scale" in e:
            need(type(e["scale"]) in (int, float) and math.isfinite(e["scale"]), "tensor scale")
        if kind in ("sign", "codes", "lowrank"):
            need(_is_size(e["rows"]), "tensor scale rows")
        if kind == "lowrank":
            need(version >= 3, "a lowrank entry in a blob older than version 3")
            need(_is_size(e["rank"]) and _is_size(e["val_bytes"]), "tensor rank")
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


def _is_size(v: Any) -> bool:
    return type(v) is int and 0 <= v <= _MAX_PAYLOAD
