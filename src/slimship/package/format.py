"""The .slim container: one file holding a JSON manifest and named binary parts.

Layout (all integers little-endian; the full specification is docs/package-format.md)::

    magic          8 bytes   b"SLIMPKG\\x00"
    format_version u16
    header_len     u32       <= MAX_HEADER_BYTES
    header         header_len bytes of UTF-8 JSON: {"manifest": {...}, "parts": [...]}
    data area      the parts' stored bytes, back to back, in header order
    trailer        32 bytes: SHA-256 of every byte before it

Reading never executes anything from the file (JSON and raw bytes only), checks every declared size
against a fixed bound and against the real file size before trusting it, decodes with an output
bound, and reports every problem as a one-line :class:`~slimship.core.errors.PackageError`.
The hashes give integrity, not authenticity: anyone who can rewrite the file can recompute them.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimship.core.atomic import write_stream_atomically
from slimship.core.errors import PackageError
from slimship.package import _header
from slimship.package._header import (
    _CODECS,
    _REMEDY_CORRUPT,
    _list_names,
    _name_problem,
    _show,
)

FORMAT_VERSION: int = 1
MAX_HEADER_BYTES = 16 * 2**20
MAX_PART_BYTES = 2 * 2**30  # raw size bound, checked BEFORE allocating/decompressing

_MAGIC = b"SLIMPKG\x00"
_PREFIX = struct.Struct("<8sHI")  # magic, format_version, header_len
_TRAILER_LEN = 32
_MIN_SIZE = _PREFIX.size + _TRAILER_LEN  # an empty header is still invalid, but this is the floor

_WRITE_CODECS = _CODECS + ("auto",)
_LZMA_PRESET = 9 | lzma.PRESET_EXTREME
# Preset 9 needs ~65 MiB to decode; the limit stops a hostile stream that declares a huge dictionary.
_LZMA_MEMLIMIT = 256 * 2**20
_ZLIB_LEVEL = 9

_IO_CHUNK = 16 * 2**20


@dataclass(frozen=True)
class PartInfo:
    """One part as declared in the header. ``offset`` is relative to the start of the data area;
    ``sha256`` is the hex digest of the raw (decoded) bytes."""

    name: str
    codec: str
    offset: int
    stored_size: int
    raw_size: int
    sha256: str


@dataclass
class Package:
    """A validated package. With ``read_package(verify=False)`` only the structure was checked and
    ``package_sha256`` is the trailer as stored, not a verified hash; :meth:`read_part` always
    verifies the part it returns."""

    path: str
    format_version: int
    manifest: dict
    parts: dict[str, PartInfo]
    package_sha256: str
    size_bytes: int
    # The data area as read at open time: read_part then serves exactly the bytes that were
    # validated, even if the file is replaced on disk afterwards.
    _data: bytes | None = field(default=None, repr=False, compare=False)

    def read_part(self, name: str) -> bytes:
        """Return the decoded bytes of part ``name``, decoding with an output bound and checking
        its length and SHA-256 against the header. Raises PackageError if the part is missing,
        undecodable, of the wrong length or fails its hash."""
        info = self.parts.get(name)
        if info is None:
            raise PackageError(
                f"{_show(self.path)} has no part named {_show(name)!r} "
                f"(it has: {_list_names(self.parts)}): ask for one of the listed parts"
            )
        if self._data is None:
            return self._read_part_from_disk(info)
        stored = memoryview(self._data)[info.offset : info.offset + info.stored_size]
        if len(stored) != info.stored_size:
            raise PackageError(
                f"{_show(self.path)} part {_show(name)!r} lies outside the package data: "
                f"{_REMEDY_CORRUPT}"
            )
        return _decode_and_verify(self.path, info, stored)

    def _read_part_from_disk(self, info: PartInfo) -> bytes:
        # Only reached for a Package built by hand; re-validates the file so a part is never
        # served from a header that no longer matches what is on disk.
        fresh = read_package(self.path, verify=False)
        if fresh.parts.get(info.name) != info:
            raise PackageError(
                f"{_show(self.path)} changed on disk since it was opened "
                f"(part {_show(info.name)!r} differs): open the package again"
            )
        return fresh.read_part(info.name)


# --------------------------------------------------------------------------------------- writing


def write_package(
    path: str | os.PathLike[str],
    manifest: dict,
    parts: dict[str, bytes],
    codecs: dict[str, str] | None = None,
) -> int:
    """Write a package atomically and return the number of bytes written.

    Everything is validated and encoded before the file system is touched: a manifest that is not
    a JSON object with string keys raises TypeError, NaN/Infinity or an oversized header raises
    ValueError, a bad part name (empty, over 255 characters, containing '/', '\\\\', '..', NUL or
    control characters), a part over MAX_PART_BYTES, an unknown codec or a codec for a part that
    does not exist raises ValueError, a part that is not bytes-like raises TypeError.

    ``codecs`` maps part name to "none", "lzma", "zlib" or "auto" (the default for unlisted parts:
    lzma if that makes the part smaller, else none).

    The file is written with :func:`slimship.core.atomic.write_stream_atomically`: to a hidden
    temporary file ``.{name}.tmp-{pid}-{random}`` in the target's directory (created, with its
    parents, if missing), which is flushed, fsynced and then renamed over the target, so the target
    is either the complete old file or the complete new one. On any exception the temporary file is
    removed; a folder that cannot be written raises SlimshipError. A writer killed with SIGKILL can
    leave that hidden file behind; it is safe to delete.
    """
    header_manifest = _check_manifest(manifest)
    encoded = _encode_parts(parts, codecs or {})
    infos, offset = [], 0
    for name, (codec, stored, raw_size, digest) in encoded.items():
        infos.append(PartInfo(name, codec, offset, len(stored), raw_size, digest))
        offset += len(stored)
    header = _encode_header(header_manifest, infos)
    prefix = _PREFIX.pack(_MAGIC, FORMAT_VERSION, len(header))
    chunks = [prefix, header, *(stored for _, stored, _, _ in encoded.values())]
    return write_stream_atomically(Path(path), lambda f: _write_with_trailer(f, chunks))


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


def _encode_parts(
    parts: Any, codecs: dict[str, str]
) -> dict[str, tuple[str, bytes, int, str]]:
    """name -> (codec, stored bytes, raw size, raw sha256 hex), in the caller's order."""
    if not isinstance(parts, dict):
        raise TypeError(f"parts must be a dict of name -> bytes, got {type(parts).__name__}")
    if not isinstance(codecs, dict):
        raise TypeError(f"codecs must be a dict of part name -> codec, got {type(codecs).__name__}")
    for name, codec in codecs.items():
        if name not in parts:
            raise ValueError(f"codecs names part {name!r}, which is not in parts ({_list_names(parts)})")
        if codec not in _WRITE_CODECS:
            raise ValueError(
                f"unknown codec {codec!r} for part {name!r}: use one of {', '.join(_WRITE_CODECS)}"
            )
    for name, raw in parts.items():
        problem = _name_problem(name)
        if problem:
            raise ValueError(f"invalid part name {name!r}: {problem}")
        if not isinstance(raw, (bytes, bytearray, memoryview)):
            raise TypeError(f"part {name!r} must be bytes, got {type(raw).__name__}")
        nbytes = memoryview(raw).nbytes
        if nbytes > MAX_PART_BYTES:
            raise ValueError(f"part {name!r} is {nbytes} bytes, over the {MAX_PART_BYTES}-byte limit")
    return {name: _encode_part(bytes(raw), codecs.get(name, "auto")) for name, raw in parts.items()}


def _encode_part(raw: bytes, codec: str) -> tuple[str, bytes, int, str]:
    digest = hashlib.sha256(raw).hexdigest()
    if codec == "auto":
        # zlib first (fast): fp32 weights barely compress (~7 %), and lzma would spend seconds to gain 0.01 %.
        # Where zlib finds real redundancy (int8, sparse, packed codes) lzma is worth its time.
        packed = _compress(raw, "zlib")
        codec, stored = ("zlib", packed) if len(packed) < len(raw) else ("none", raw)
        if len(packed) < 0.85 * len(raw):
            xz = _compress(raw, "lzma")
            if len(xz) < len(stored):
                codec, stored = "lzma", xz
    else:
        stored = _compress(raw, codec)
    return codec, stored, len(raw), digest


def _compress(raw: bytes, codec: str) -> bytes:
    if codec == "lzma":
        return lzma.compress(raw, format=lzma.FORMAT_XZ, preset=_LZMA_PRESET)
    if codec == "zlib":
        return zlib.compress(raw, _ZLIB_LEVEL)
    return raw


def _encode_header(manifest: dict, infos: list[PartInfo]) -> bytes:
    header = {
        "manifest": manifest,
        "parts": [
            {
                "name": p.name,
                "codec": p.codec,
                "offset": p.offset,
                "stored_size": p.stored_size,
                "raw_size": p.raw_size,
                "sha256": p.sha256,
            }
            for p in infos
        ],
    }
    data = json.dumps(header, allow_nan=False, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    if len(data) > MAX_HEADER_BYTES:
        raise ValueError(
            f"package header would be {len(data)} bytes, over the {MAX_HEADER_BYTES}-byte limit: "
            "store large data as a part, not in the manifest"
        )
    return data


def _write_with_trailer(f: Any, chunks: list[bytes]) -> int:
    hasher, written = hashlib.sha256(), 0
    for chunk in chunks:
        view = memoryview(chunk)
        for start in range(0, len(view), _IO_CHUNK):
            piece = view[start : start + _IO_CHUNK]
            hasher.update(piece)
            f.write(piece)
            written += len(piece)
    f.write(hasher.digest())
    return written + _TRAILER_LEN


# --------------------------------------------------------------------------------------- reading


def read_package(path: str | os.PathLike[str], *, verify: bool = True) -> Package:
    """Read and validate a package; raise PackageError on the first problem.

    Always checked: the file exists and is a slimship package, its format version is not newer
    than FORMAT_VERSION, the header length is within MAX_HEADER_BYTES and the file, the header is
    well-formed JSON of the documented schema, parts are back to back with unique valid names,
    known codecs and raw sizes within MAX_PART_BYTES, and the file size is exactly what the header
    implies. With ``verify=True`` the trailer hash and every part (decoded with a bound, length and
    SHA-256 checked) are verified too. Older format versions (>= 1) load.
    """
    shown = _show(path)
    with _open_package(path) as f:
        size = os.fstat(f.fileno()).st_size
        version, header_len = _read_prefix(f, shown, size)
        header = _read_exact(f, header_len, shown, size)
        manifest, infos = _parse_header(header, shown)
        data_len = sum(p.stored_size for p in infos)
        _check_total_size(shown, size, _PREFIX.size + header_len + data_len + _TRAILER_LEN)
        data = _read_exact(f, data_len, shown, size)
        trailer = _read_exact(f, _TRAILER_LEN, shown, size)
    if verify:
        _verify_trailer(shown, header_len, version, header, data, trailer)
    package = Package(
        path=str(path),
        format_version=version,
        manifest=manifest,
        parts={p.name: p for p in infos},
        package_sha256=trailer.hex(),
        size_bytes=size,
        _data=data,
    )
    if verify:
        for name in package.parts:
            package.read_part(name)
    return package


def verify_package(path: str | os.PathLike[str]) -> dict:
    """Fully verify a package (trailer hash and every part) and return a JSON-ready report:
    ``{"path", "format_version", "package_sha256", "size_bytes", "parts": [{"name", "codec",
    "stored_size", "raw_size", "sha256", "ok": True}]}``. Raises PackageError on the first problem."""
    package = read_package(path, verify=True)
    return {
        "path": package.path,
        "format_version": package.format_version,
        "package_sha256": package.package_sha256,
        "size_bytes": package.size_bytes,
        "parts": [
            {
                "name": p.name,
                "codec": p.codec,
                "stored_size": p.stored_size,
                "raw_size": p.raw_size,
                "sha256": p.sha256,
                "ok": True,
            }
            for p in package.parts.values()
        ],
    }


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of the whole file, read in chunks. For a package this covers the trailer too,
    so it differs from ``Package.package_sha256`` (which covers everything before the trailer)."""
    hasher = hashlib.sha256()
    with _open_package(path) as f:
        while chunk := f.read(_IO_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def _open_package(path: str | os.PathLike[str]) -> Any:
    shown = _show(path)
    try:
        if os.path.isdir(path):
            raise PackageError(f"{shown} is a directory, not a package file: pass the path of the .slim file")
        return open(path, "rb")
    except FileNotFoundError:
        raise PackageError(f"{shown} does not exist: check the path") from None
    except OSError as e:
        raise PackageError(
            f"cannot read {shown} ({e.strerror or e}): check the path and its permissions"
        ) from None


def _read_prefix(f: Any, shown: str, size: int) -> tuple[int, int]:
    """Check magic, version and header_len; return (format_version, header_len)."""
    head = f.read(_PREFIX.size)
    if size == 0:
        raise PackageError(
            f"{shown} is empty (0 bytes): the file was not written; re-create or re-download it"
        )
    magic = head[: len(_MAGIC)]
    if magic != _MAGIC[: len(magic)]:
        raise PackageError(
            f"{shown} is not a slimship package (it does not start with the SLIMPKG signature): "
            "pass a .slim file written by slimship"
        )
    if size < _MIN_SIZE:
        raise _truncated(shown, _MIN_SIZE, size, at_least=True)
    _, version, header_len = _PREFIX.unpack(head)
    if version == 0:
        raise PackageError(f"{shown} declares format version 0, which does not exist: {_REMEDY_CORRUPT}")
    if version > FORMAT_VERSION:
        # Checked before the header: a newer version may lay the header out differently.
        raise PackageError(
            f"{shown} was written by format version {version}, this slimship reads up to "
            f"{FORMAT_VERSION}: upgrade slimship"
        )
    if header_len > MAX_HEADER_BYTES:
        raise PackageError(
            f"{shown} declares a {header_len}-byte header, over the {MAX_HEADER_BYTES}-byte limit: "
            f"{_REMEDY_CORRUPT}"
        )
    if _PREFIX.size + header_len + _TRAILER_LEN > size:
        raise _truncated(shown, _PREFIX.size + header_len + _TRAILER_LEN, size, at_least=True)
    return version, header_len


def _read_exact(f: Any, n: int, shown: str, size: int) -> bytes:
    # Callers have already compared n with the file size; a short read means the file shrank.
    data = f.read(n)
    if len(data) != n:
        raise PackageError(
            f"{shown} changed size while being read (it was {size} bytes): "
            "retry once nothing is writing it"
        )
    return data


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


def _verify_trailer(
    shown: str, header_len: int, version: int, header: bytes, data: bytes, trailer: bytes
) -> None:
    hasher = hashlib.sha256(_PREFIX.pack(_MAGIC, version, header_len))
    hasher.update(header)
    hasher.update(data)
    if hasher.digest() != trailer:
        raise PackageError(
            f"{shown} failed its integrity check (the SHA-256 of its contents does not match the trailer): "
            "the package was modified or corrupted after it was written; re-create or re-download it"
        )


# ---------------------------------------------------------------------------------------- header


def _parse_header(raw: bytes, shown: str) -> tuple[dict, list[PartInfo]]:
    """Decode and validate the header (see :mod:`slimship.package._header`); PackageError on any problem."""
    manifest, fields = _header._parse_header(raw, shown, MAX_PART_BYTES)
    return manifest, [PartInfo(*f) for f in fields]


# -------------------------------------------------------------------------------------- decoding


def _decode_and_verify(path: str, info: PartInfo, stored: bytes | memoryview) -> bytes:
    shown, name = _show(path), _show(info.name)
    try:
        raw = _decode(info.codec, stored, info.raw_size)
    except _DecodeFailed as e:
        raise PackageError(
            f"{shown} part {name!r} cannot be decoded as {info.codec} ({e}): "
            "the package is corrupted; re-create or re-download it"
        ) from None
    if len(raw) != info.raw_size:
        got = f"more than {info.raw_size}" if len(raw) > info.raw_size else str(len(raw))
        raise PackageError(
            f"{shown} part {name!r} decodes to {got} bytes but the header says {info.raw_size}: "
            "the package is corrupted; re-create or re-download it"
        )
    if hashlib.sha256(raw).hexdigest() != info.sha256:
        raise PackageError(
            f"{shown} part {name!r} failed its SHA-256 check: the package was modified or corrupted; "
            "re-create or re-download it"
        )
    return raw


class _DecodeFailed(Exception):
    """Internal: the stored bytes are not a complete, valid stream of the declared codec."""


def _decode(codec: str, stored: bytes | memoryview, raw_size: int) -> bytes:
    """Decode at most raw_size + 1 bytes, so a stream that inflates beyond its declared size is
    caught after one extra byte instead of exhausting memory."""
    if codec == "none":
        return bytes(stored)
    limit = raw_size + 1  # never 0: zlib reads max_length=0 as "unlimited"
    try:
        if codec == "lzma":
            d = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=_LZMA_MEMLIMIT)
            raw = d.decompress(stored, max_length=limit)
        elif codec == "zlib":
            d = zlib.decompressobj()
            raw = d.decompress(stored, limit)
        else:  # header validation makes this unreachable; kept so a new codec cannot slip through
            raise _DecodeFailed(f"unknown codec {codec!r}")
    except (lzma.LZMAError, zlib.error) as e:
        raise _DecodeFailed(_show(str(e))[:120]) from None
    if len(raw) > raw_size:
        return raw  # the caller reports the length mismatch
    if not d.eof:
        raise _DecodeFailed("the compressed stream is incomplete")
    if d.unused_data:
        raise _DecodeFailed(f"{len(d.unused_data)} stray bytes follow the compressed stream")
    return raw
