"""Validation of a .slim header and of its fields, for :mod:`slimship.package.format`.

Nothing here does I/O: header bytes (or sizes) in, validated values or a one-line error out. ``format.py`` owns
the file layout, the I/O and the public types; it turns each :class:`_PartFields` into a ``PartInfo``.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, NamedTuple

from slimship.core.errors import PackageError

_CODECS = ("none", "lzma", "zlib")
_MAX_NAME_CHARS = 255
_HEX64 = re.compile(r"[0-9a-f]{64}")
_PART_KEYS = frozenset({"name", "codec", "offset", "stored_size", "raw_size", "sha256"})
_HEADER_KEYS = frozenset({"manifest", "parts"})

_REMEDY_CORRUPT = "the file is corrupted; re-create or re-download it"

# Limits, all checked from the header BEFORE anything is allocated or decoded (docs/security.md):
MAX_HEADER_BYTES = 16 * 2**20
MAX_PART_BYTES = 2 * 2**30  # raw size of one part
# Raw size of all parts together. Protobuf cannot serialise an ONNX graph over 2 GiB without external data, which
# a package may not use, so no kind of package (whole graph, encoded weights, delta) needs more.
MAX_PACKAGE_RAW_BYTES = 2 * 2**30
# A part over EXPANSION_FREE_BYTES raw must be stored in at least 1/MAX_EXPANSION of that: real weights, graphs and
# encoded blobs compress far less (about 1.1:1 to 10:1); a gigabyte of zeros in a few megabytes is a bomb.
MAX_EXPANSION = 256
EXPANSION_FREE_BYTES = 64 * 2**20


class _PartFields(NamedTuple):
    """One validated header entry, in ``PartInfo``'s field order."""

    name: str
    codec: str
    offset: int
    stored_size: int
    raw_size: int
    sha256: str


# ---------------------------------------------------------------------------------------- header


class _HeaderInvalid(Exception):
    """Internal: a structural problem in the header, turned into a PackageError by _parse_header."""


def _parse_header(raw: bytes, shown: str, max_part_bytes: int) -> tuple[dict, list[_PartFields]]:
    """Decode and validate the header JSON by hand, so no hostile value can surface as anything
    but PackageError. ``max_part_bytes`` bounds every declared raw size."""
    try:
        text = raw.decode("utf-8")
        header = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise PackageError(f"{shown} has a header that is not UTF-8: {_REMEDY_CORRUPT}") from None
    except RecursionError:
        raise PackageError(f"{shown} has a header nested too deeply to read: {_REMEDY_CORRUPT}") from None
    except ValueError as e:  # JSONDecodeError, duplicate keys, NaN, oversized integers
        detail = _show(str(e).splitlines()[0] if str(e) else type(e).__name__)[:200]
        raise PackageError(
            f"{shown} has a header that is not valid JSON ({detail}): {_REMEDY_CORRUPT}"
        ) from None
    try:
        return _check_header(header, max_part_bytes)
    except _HeaderInvalid as e:
        raise PackageError(f"{shown} has an invalid header ({e}): {_REMEDY_CORRUPT}") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    # Duplicate keys would let two readers disagree about what a package contains.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"duplicate key {_show(dup)[:80]!r}")
    return obj


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _check_header(header: Any, max_part_bytes: int) -> tuple[dict, list[_PartFields]]:
    if not isinstance(header, dict):
        raise _HeaderInvalid(f"expected a JSON object, got {_json_type(header)}")
    if set(header) != _HEADER_KEYS:
        raise _HeaderInvalid(f"expected exactly the keys manifest and parts, got {_list_names(header)}")
    manifest, parts = header["manifest"], header["parts"]
    if not isinstance(manifest, dict):
        raise _HeaderInvalid(f"manifest must be an object, got {_json_type(manifest)}")
    if not isinstance(parts, list):
        raise _HeaderInvalid(f"parts must be an array, got {_json_type(parts)}")
    infos, names, next_offset = [], set(), 0
    for index, entry in enumerate(parts):
        info = _check_part(index, entry, max_part_bytes)
        if info.name in names:
            raise _HeaderInvalid(f"part name {info.name!r} appears twice")
        if info.offset != next_offset:
            raise _HeaderInvalid(
                f"part {info.name!r} starts at offset {info.offset} but must start at {next_offset} "
                "(parts are stored back to back, in header order, without overlap or gaps)"
            )
        names.add(info.name)
        next_offset += info.stored_size
        infos.append(info)
    return manifest, infos


def _check_part(index: int, entry: Any, max_part_bytes: int) -> _PartFields:
    where = f"part {index}"
    if not isinstance(entry, dict):
        raise _HeaderInvalid(f"{where} must be an object, got {_json_type(entry)}")
    if set(entry) != _PART_KEYS:
        raise _HeaderInvalid(
            f"{where} must have exactly the keys {', '.join(sorted(_PART_KEYS))}, got {_list_names(entry)}"
        )
    name = entry["name"]
    if not isinstance(name, str):
        raise _HeaderInvalid(f"{where} name must be a string, got {_json_type(name)}")
    problem = _name_problem(name)
    if problem:
        raise _HeaderInvalid(f"{where} name {_show(name)[:80]!r} is invalid: {problem}")
    where = f"part {name!r}"
    codec = entry["codec"]
    if not isinstance(codec, str) or codec not in _CODECS:
        raise _HeaderInvalid(
            f"{where} has unknown codec {_show(repr(codec))[:40]} (known: {', '.join(_CODECS)})"
        )
    offset, stored, raw = (
        _non_negative_int(where, key, entry[key]) for key in ("offset", "stored_size", "raw_size")
    )
    if raw > max_part_bytes:
        raise _HeaderInvalid(f"{where} declares {raw} raw bytes, over the {max_part_bytes}-byte limit")
    if codec == "none" and stored != raw:
        raise _HeaderInvalid(f"{where} is stored uncompressed but stored_size {stored} != raw_size {raw}")
    digest = entry["sha256"]
    if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
        raise _HeaderInvalid(f"{where} sha256 must be 64 lowercase hex characters")
    return _PartFields(name, codec, offset, stored, raw, digest)


def _non_negative_int(where: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _HeaderInvalid(f"{where} {key} must be a non-negative integer, got {_show(repr(value))[:40]}")
    return value


def _name_problem(name: Any) -> str | None:
    """Why ``name`` is not a valid part name, or None. Names may become file names on extraction,
    so anything path-like is refused."""
    if not isinstance(name, str):
        return f"must be a string, got {type(name).__name__}"
    if not name:
        return "must not be empty"
    if len(name) > _MAX_NAME_CHARS:
        return f"must be at most {_MAX_NAME_CHARS} characters (got {len(name)})"
    if "/" in name or "\\" in name:
        return "must not contain '/' or '\\'"
    if ".." in name:
        return "must not contain '..'"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return "must not contain NUL or other control characters"
    return None


# -------------------------------------------------------------------------------------- manifest


def _check_manifest(manifest: Any) -> dict:
    if not isinstance(manifest, dict):
        raise TypeError(f"manifest must be a dict (a JSON object), got {type(manifest).__name__}")
    _require_str_keys(manifest, "manifest")
    try:
        # Round trip now so a non-serialisable value fails before any file exists.
        json.dumps(manifest, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except TypeError as e:
        raise TypeError(f"manifest is not JSON-serialisable: {e}") from e
    except ValueError as e:
        raise ValueError(f"manifest is not JSON-serialisable: {e}") from e
    return manifest


def _require_str_keys(value: Any, where: str) -> None:
    # json.dumps silently turns {1: x} into {"1": x}; a manifest must read back as it was written.
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where} has a non-string key {key!r}: JSON object keys must be str")
            _require_str_keys(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _require_str_keys(item, f"{where}[{i}]")


# ---------------------------------------------------------------------------------------- limits


def _check_total_size(shown: str, size: int, expected: int) -> None:
    if size < expected:
        raise _truncated(shown, expected, size, at_least=False)
    if size > expected:
        raise PackageError(
            f"{shown} has {size - expected} unexpected bytes after its end (expected {expected} bytes, "
            f"found {size}): the file was corrupted or appended to; re-create or re-download it"
        )


def _truncated(shown: str, expected: int, found: int, *, at_least: bool) -> PackageError:
    qualifier = "at least " if at_least else ""
    return PackageError(
        f"{shown} is truncated (expected {qualifier}{expected} bytes, found {found}): the file was not "
        "fully written or copied, or its header is corrupted; re-create or re-download it"
    )


def _bomb_like(raw_size: int, stored_size: int) -> bool:
    return raw_size > EXPANSION_FREE_BYTES and raw_size > MAX_EXPANSION * stored_size


def _check_limits(shown: str, infos: list[PartInfo]) -> None:
    """The limits on what the parts decode to, from the header alone: nothing is decoded before they pass."""
    total = sum(p.raw_size for p in infos)
    if total > MAX_PACKAGE_RAW_BYTES:
        raise PackageError(
            f"{shown} declares {total:,} bytes of decoded parts, over the {MAX_PACKAGE_RAW_BYTES:,}-byte limit "
            "per package: refused without decoding (a larger package cannot hold a self-contained ONNX graph; "
            "see docs/security.md)"
        )
    for p in infos:
        if _bomb_like(p.raw_size, p.stored_size):
            raise PackageError(
                f"{shown} part {_show(p.name)!r} declares {p.raw_size:,} decoded bytes from {p.stored_size:,} "
                f"stored, over the {MAX_EXPANSION}:1 limit for parts over {EXPANSION_FREE_BYTES // 2**20} MiB: "
                "a decompression bomb, refused without decoding (see docs/security.md)"
            )


# ----------------------------------------------------------------------------------------- misc


def _show(value: Any) -> str:
    """Render a path or name for a one-line message: control characters are escaped."""
    text = os.fspath(value) if isinstance(value, os.PathLike) else str(value)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _list_names(mapping: Any, limit: int = 10) -> str:
    names = [_show(n)[:80] for n in list(mapping)[: limit + 1]]
    if not names:
        return "none"
    more = ", ..." if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    names = {dict: "object", list: "array", str: "string", int: "number", float: "number"}
    return names.get(type(value), type(value).__name__)
