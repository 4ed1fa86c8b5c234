"""The .slim container: one file holding a JSON manifest and named binary parts.

Layout (all integers little-endian; the full specification is docs/package-format.md)::

    magic          8 bytes   b"SLIMPKG\\x00"
    format_version u16
    header_len     u32       <= MAX_HEADER_BYTES
    header         header_len bytes of UTF-8 JSON: {"manifest": {...}, "parts": [...]}
    data area      the parts' stored bytes, back to back, in header order
    trailer        32 bytes: SHA-256 of every byte before it

Reading never executes anything from the file (JSON and raw bytes only), opens only regular files,
checks every declared size against fixed limits (per part, per package, expansion: see _header.py and
docs/security.md) and against the real file size before trusting it, verifies by streaming (parts
decoded incrementally with an output bound, hashed as they go), and reports every problem as a one-line
:class:`~slimship.core.errors.PackageError`. This module checks the container only; what the parts mean
(a self-contained graph, a sane manifest) is :mod:`slimship.package.verify`'s.
The hashes give integrity, not authenticity: anyone who can rewrite the file can recompute them.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from slimship.core.atomic import write_stream_atomically
from slimship.core.errors import PackageError
from slimship.package import _header
from slimship.package._codecs import (  # the _LZMA/_ZLIB names are re-exported for delta/ and layer_bytes
    LZMA_MEMLIMIT as _LZMA_MEMLIMIT,  # noqa: F401
    LZMA_PRESET as _LZMA_PRESET,  # noqa: F401
    WRITE_CODECS as _WRITE_CODECS,
    ZLIB_LEVEL as _ZLIB_LEVEL,  # noqa: F401
    PartsCheck,
    decode_and_verify,
    encode_part,
)
from slimship.package._header import (  # the limits are documented in docs/security.md
    EXPANSION_FREE_BYTES,
    MAX_EXPANSION,
    MAX_HEADER_BYTES,
    MAX_PACKAGE_RAW_BYTES,
    MAX_PART_BYTES,
    _bomb_like,
    _check_manifest,
    _check_limits,
    _check_total_size,
    _list_names,
    _name_problem,
    _REMEDY_CORRUPT,
    _show,
    _truncated,
)

FORMAT_VERSION: int = 1

_MAGIC = b"SLIMPKG\x00"
_PREFIX = struct.Struct("<8sHI")  # magic, format_version, header_len
_TRAILER_LEN = 32
_MIN_SIZE = _PREFIX.size + _TRAILER_LEN  # an empty header is still invalid, but this is the floor

_IO_CHUNK = 16 * 2**20  # writing
_READ_CHUNK = 2**20  # streaming verification reads the file this much at a time


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
        return decode_and_verify(self.path, info, stored)

    def _read_part_from_disk(self, info: PartInfo) -> bytes:
        # A Package from open_package (or built by hand): re-validates the header on disk so a part is never
        # served from a header that no longer matches the file, then reads just that part.
        shown = _show(self.path)
        with _open_package(self.path) as f:
            head = _read_head(f, shown)
            if next((p for p in head.infos if p.name == info.name), None) != info:
                raise PackageError(
                    f"{shown} changed on disk since it was opened (part {_show(info.name)!r} differs): open the "
                    "package again"
                )
            f.seek(_PREFIX.size + len(head.header) + info.offset)
            stored = _read_exact(f, info.stored_size, shown, head.size)
        return decode_and_verify(self.path, info, stored)


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
    total = sum(memoryview(raw).nbytes for raw in parts.values())
    if total > MAX_PACKAGE_RAW_BYTES:
        raise ValueError(f"parts hold {total} bytes, over the {MAX_PACKAGE_RAW_BYTES}-byte limit per package")
    encoded = {name: encode_part(bytes(raw), codecs.get(name, "auto")) for name, raw in parts.items()}
    for name, (_, stored, raw_size, _) in encoded.items():
        if _bomb_like(raw_size, len(stored)):
            raise ValueError(f"part {name!r} compresses from {raw_size} to {len(stored)} bytes, more than "
                             f"{MAX_EXPANSION}:1, which readers refuse as a decompression bomb: store it sparsely")
    return encoded


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


@dataclass(frozen=True)
class _Head:
    """What the prefix and header of an open package say, checked against the file's size."""

    size: int
    version: int
    header: bytes
    manifest: dict
    infos: list[PartInfo]

    @property
    def data_len(self) -> int:
        return sum(p.stored_size for p in self.infos)


def read_package(path: str | os.PathLike[str], *, verify: bool = True) -> Package:
    """Read and validate a package; raise PackageError on the first problem.

    Always checked: the path is a regular file (never a FIFO or device, which could block or never end) and a
    slimship package, its format version is not newer than FORMAT_VERSION, the header length is within
    MAX_HEADER_BYTES and the file, the header is well-formed JSON of the documented schema, parts are back to
    back with unique valid names, known codecs, raw sizes within MAX_PART_BYTES and MAX_PACKAGE_RAW_BYTES in
    all, no large part expanding more than MAX_EXPANSION times, and the file size is exactly what the header
    implies. With ``verify=True`` the trailer hash and every part (decoded incrementally, length and SHA-256
    checked) are verified too, holding only the stored bytes and a few MiB of decoded output. Older format
    versions (>= 1) load.
    """
    shown = _show(path)
    with _open_package(path) as f:
        head = _read_head(f, shown)
        data = _read_exact(f, head.data_len, shown, head.size)
        trailer = _read_exact(f, _TRAILER_LEN, shown, head.size)
    if verify:
        view = memoryview(data)
        chunks = (view[i : i + _READ_CHUNK] for i in range(0, len(view), _READ_CHUNK))
        _verify_body(shown, head, chunks, lambda: trailer)
    return Package(
        path=str(path),
        format_version=head.version,
        manifest=head.manifest,
        parts={p.name: p for p in head.infos},
        package_sha256=trailer.hex(),
        size_bytes=head.size,
        _data=data,
    )


def open_package(path: str | os.PathLike[str]) -> Package:
    """The package's header, checked as :func:`read_package` checks it, without reading its data: each
    :meth:`Package.read_part` then reads (and verifies) just that part from disk. ``package_sha256`` is the
    trailer as stored; run :func:`verify_package` to check it."""
    shown = _show(path)
    with _open_package(path) as f:
        head = _read_head(f, shown)
        f.seek(head.size - _TRAILER_LEN)
        trailer = _read_exact(f, _TRAILER_LEN, shown, head.size)
    return Package(str(path), head.version, head.manifest, {p.name: p for p in head.infos}, trailer.hex(), head.size)


def verify_package(path: str | os.PathLike[str]) -> dict:
    """Fully verify a package (trailer hash and every part) and return a JSON-ready report:
    ``{"path", "format_version", "package_sha256", "size_bytes", "parts": [{"name", "codec",
    "stored_size", "raw_size", "sha256", "ok": True}]}``. Raises PackageError on the first problem.

    The file is streamed: memory stays at a few MiB whatever the package's size or what its parts decode to.
    This checks the container only; :func:`slimship.package.verify.verify` also checks what the parts mean
    (a self-contained deploy graph, a manifest that fits it)."""
    shown = _show(path)
    with _open_package(path) as f:
        head = _read_head(f, shown)
        remaining = head.data_len

        def chunks() -> Iterable[bytes]:
            nonlocal remaining
            while remaining:
                chunk = _read_exact(f, min(_READ_CHUNK, remaining), shown, head.size)
                remaining -= len(chunk)
                yield chunk

        trailer = _verify_body(shown, head, chunks(), lambda: _read_exact(f, _TRAILER_LEN, shown, head.size))
    return {
        "path": str(path),
        "format_version": head.version,
        "package_sha256": trailer.hex(),
        "size_bytes": head.size,
        "parts": [
            {
                "name": p.name,
                "codec": p.codec,
                "stored_size": p.stored_size,
                "raw_size": p.raw_size,
                "sha256": p.sha256,
                "ok": True,
            }
            for p in head.infos
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
    """Open ``path`` for reading if it is a regular file. Opened non-blocking and checked on the open file:
    reading a FIFO would wait for a writer forever, and a device (/dev/zero) never ends."""
    shown = _show(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise PackageError(f"{shown} does not exist: check the path") from None
    except IsADirectoryError:
        raise PackageError(f"{shown} is a directory, not a package file: pass the path of the .slim file") from None
    except (OSError, TypeError, ValueError) as e:
        detail = getattr(e, "strerror", None) or e
        raise PackageError(f"cannot read {shown} ({detail}): check the path and its permissions") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise PackageError(f"{shown} is a directory, not a package file: pass the path of the .slim file")
        if not stat.S_ISREG(mode):
            raise PackageError(f"{shown} is not a regular file (a FIFO, socket or device): pass the path of a .slim "
                               "file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _read_head(f: Any, shown: str) -> _Head:
    """Read and check the prefix and header; the file offset is then at the data area."""
    size = os.fstat(f.fileno()).st_size
    version, header_len = _read_prefix(f, shown, size)
    header = _read_exact(f, header_len, shown, size)
    manifest, infos = _parse_header(header, shown)
    _check_limits(shown, infos)
    head = _Head(size, version, header, manifest, infos)
    _check_total_size(shown, size, _PREFIX.size + header_len + head.data_len + _TRAILER_LEN)
    return head


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


# ---------------------------------------------------------------------------------------- header


def _parse_header(raw: bytes, shown: str) -> tuple[dict, list[PartInfo]]:
    """Decode and validate the header (see :mod:`slimship.package._header`); PackageError on any problem."""
    manifest, fields = _header._parse_header(raw, shown, MAX_PART_BYTES)
    return manifest, [PartInfo(*f) for f in fields]


# -------------------------------------------------------------------------------------- decoding


def _verify_body(shown: str, head: _Head, chunks: Iterable[bytes | memoryview], read_trailer) -> bytes:
    """Hash the data area ``chunks`` (in order) for the trailer and decode every part from them incrementally
    (:class:`~slimship.package._codecs.PartCheck`); return the trailer. A damaged trailer is reported before a
    damaged part, as a whole-file read would: it is the more general diagnosis."""
    hasher = hashlib.sha256(_PREFIX.pack(_MAGIC, head.version, len(head.header)))
    hasher.update(head.header)
    parts, failure = PartsCheck(shown, head.infos), None
    for chunk in chunks:
        hasher.update(chunk)
        if failure is None:
            try:
                parts.feed(chunk)
            except PackageError as e:
                failure = e  # keep hashing: a trailer mismatch, if any, is the better message
    trailer = read_trailer()
    if hasher.digest() != trailer:
        raise PackageError(
            f"{shown} failed its integrity check (the SHA-256 of its contents does not match the trailer): "
            "the package was modified or corrupted after it was written; re-create or re-download it"
        )
    if failure is not None:
        raise failure
    parts.finish()
    return trailer


