"""Part codecs of the .slim container, for :mod:`slimship.package.format`: encoding a part, decoding one whole
with an output bound (:func:`decode_and_verify`), and decoding parts incrementally (:class:`PartCheck`,
:class:`PartsCheck`) so that a package is verified in a fixed amount of memory, however large its parts decode.

Nothing here knows the file layout; ``format.py`` owns it. Parts are anything with the fields of ``PartInfo``.
"""

from __future__ import annotations

import hashlib
import lzma
import zlib
from typing import Any

from slimship.core.errors import PackageError
from slimship.package._header import _CODECS, _REMEDY_CORRUPT, _show

WRITE_CODECS = _CODECS + ("auto",)
LZMA_PRESET = 9 | lzma.PRESET_EXTREME
# Preset 9 needs ~65 MiB to decode; the limit stops a hostile stream that declares a huge dictionary.
LZMA_MEMLIMIT = 256 * 2**20
ZLIB_LEVEL = 9

# Incremental decoding hands out at most this many decoded bytes at a time (the verifier's memory bound).
OUT_CHUNK = 2**20


class DecodeFailed(Exception):
    """The stored bytes are not a complete, valid stream of the declared codec."""


class TooLong(DecodeFailed):
    """The stream decodes to more bytes than the header declares."""


# ---------------------------------------------------------------------------------------- encoding


def encode_part(raw: bytes, codec: str) -> tuple[str, bytes, int, str]:
    """(codec, stored bytes, raw size, raw sha256 hex) of ``raw``; ``auto`` picks the smallest of none, zlib
    and (where zlib finds real redundancy) lzma."""
    digest = hashlib.sha256(raw).hexdigest()
    if codec == "auto":
        # zlib first (fast): fp32 weights barely compress (~7 %), and lzma would spend seconds to gain 0.01 %.
        # Where zlib finds real redundancy (int8, sparse, packed codes) lzma is worth its time.
        packed = compress(raw, "zlib")
        codec, stored = ("zlib", packed) if len(packed) < len(raw) else ("none", raw)
        if len(packed) < 0.85 * len(raw):
            xz = compress(raw, "lzma")
            if len(xz) < len(stored):
                codec, stored = "lzma", xz
    else:
        stored = compress(raw, codec)
    return codec, stored, len(raw), digest


def compress(raw: bytes, codec: str) -> bytes:
    if codec == "lzma":
        return lzma.compress(raw, format=lzma.FORMAT_XZ, preset=LZMA_PRESET)
    if codec == "zlib":
        return zlib.compress(raw, ZLIB_LEVEL)
    return raw


# ---------------------------------------------------------------------------------------- decoding


def decode(codec: str, stored: bytes | memoryview, raw_size: int) -> bytes:
    """Decode at most raw_size + 1 bytes, so a stream that inflates beyond its declared size is caught after
    one extra byte instead of exhausting memory. Returns the decoded bytes (longer than ``raw_size`` when the
    stream is too long: the caller reports it); raises DecodeFailed on an invalid or incomplete stream."""
    if codec == "none":
        return bytes(stored)
    limit = raw_size + 1  # never 0: zlib reads max_length=0 as "unlimited"
    try:
        if codec == "lzma":
            d = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=LZMA_MEMLIMIT)
            raw = d.decompress(stored, max_length=limit)
        elif codec == "zlib":
            d = zlib.decompressobj()
            raw = d.decompress(stored, limit)
        else:  # header validation makes this unreachable; kept so a new codec cannot slip through
            raise DecodeFailed(f"unknown codec {codec!r}")
    except (lzma.LZMAError, zlib.error) as e:
        raise DecodeFailed(_show(str(e))[:120]) from None
    if len(raw) > raw_size:
        return raw
    if not d.eof:
        raise DecodeFailed("the compressed stream is incomplete")
    if d.unused_data:
        raise DecodeFailed(f"{len(d.unused_data)} stray bytes follow the compressed stream")
    return raw


class PartCheck:
    """Decode one part incrementally and hash what it decodes to, holding at most :data:`OUT_CHUNK` decoded
    bytes at a time: ``feed`` the stored bytes in order (any chunking), then :meth:`finish`.

    ``feed`` raises :class:`TooLong` as soon as the output passes ``raw_size`` and :class:`DecodeFailed` on an
    invalid stream; ``finish`` raises DecodeFailed for an incomplete stream and returns (decoded length, hex
    SHA-256 of the decoded bytes) for the caller to compare with the header.
    """

    def __init__(self, codec: str, raw_size: int) -> None:
        if codec not in _CODECS:
            raise DecodeFailed(f"unknown codec {codec!r}")
        self.codec, self.raw_size, self.n = codec, raw_size, 0
        self._hash = hashlib.sha256()
        self._d: lzma.LZMADecompressor | zlib._Decompress | None = None
        if codec == "lzma":
            self._d = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=LZMA_MEMLIMIT)
        elif codec == "zlib":
            self._d = zlib.decompressobj()

    def feed(self, chunk: bytes | memoryview) -> None:
        if not len(chunk):
            return
        if self._d is None:
            self._take(chunk)
            return
        if self._d.eof:
            raise DecodeFailed(f"{len(chunk)} stray bytes follow the compressed stream")
        try:
            if self.codec == "lzma":
                self._feed_lzma(chunk)
            else:
                self._feed_zlib(chunk)
        except (lzma.LZMAError, zlib.error) as e:
            raise DecodeFailed(_show(str(e))[:120]) from None
        if self._d.eof and self._d.unused_data:
            raise DecodeFailed(f"{len(self._d.unused_data)} stray bytes follow the compressed stream")

    def _cap(self) -> int:
        # Never decode more than one byte past the declared size (and never 0: zlib reads 0 as "unlimited").
        return min(OUT_CHUNK, self.raw_size - self.n + 1)

    def _feed_lzma(self, chunk: bytes | memoryview) -> None:
        d = self._d
        self._take(d.decompress(chunk, max_length=self._cap()))
        while not d.eof and not d.needs_input:  # output was capped: drain what the buffered input holds
            self._take(d.decompress(b"", max_length=self._cap()))

    def _feed_zlib(self, chunk: bytes | memoryview) -> None:
        d, data = self._d, chunk
        while True:
            cap = self._cap()
            out = d.decompress(data, cap)
            self._take(out)
            data = d.unconsumed_tail
            # A full buffer may leave output pending even when all input was consumed: go round until not full.
            if d.eof or (not data and len(out) < cap):
                return

    def _take(self, out: bytes | memoryview) -> None:
        self.n += len(out)
        if self.n > self.raw_size:
            raise TooLong(f"more than {self.raw_size}")
        self._hash.update(out)

    def finish(self) -> tuple[int, str]:
        if self._d is not None and not self._d.eof:
            raise DecodeFailed("the compressed stream is incomplete")
        return self.n, self._hash.hexdigest()


# ------------------------------------------------------------------------------- checking parts


class PartsCheck:
    """Feeds the data area, in order and in any chunking, to one :class:`PartCheck` per part."""

    def __init__(self, shown: str, infos: list[Any]) -> None:
        self.shown, self.infos, self.index, self.left = shown, infos, -1, 0
        self.check: PartCheck | None = None
        self._next()

    def _next(self) -> None:
        """Finish the current part once all its stored bytes arrived, and open the next (empty ones at once)."""
        while self.left == 0:
            if self.check is not None:
                check_decoded(self.shown, self.infos[self.index], self.check)
                self.check = None
            if self.index + 1 >= len(self.infos):
                return
            self.index += 1
            info = self.infos[self.index]
            self.check, self.left = PartCheck(info.codec, info.raw_size), info.stored_size

    def feed(self, chunk: bytes | memoryview) -> None:
        view = memoryview(chunk)
        while len(view) and self.check is not None:
            piece, view = view[: self.left], view[self.left :]
            try:
                self.check.feed(piece)
            except DecodeFailed as e:
                raise _part_error(self.shown, self.infos[self.index], e) from None
            self.left -= len(piece)
            self._next()

    def finish(self) -> None:
        self._next()
        if self.check is not None or self.index + 1 < len(self.infos):  # unreachable: sizes were checked
            raise PackageError(f"{self.shown} ended inside its data area: {_REMEDY_CORRUPT}")


def check_decoded(shown: str, info: Any, check: PartCheck) -> None:
    try:
        n, digest = check.finish()
    except DecodeFailed as e:
        raise _part_error(shown, info, e) from None
    if n != info.raw_size:
        raise _length_error(shown, info, str(n))
    if digest != info.sha256:
        raise _hash_error(shown, info)


def decode_and_verify(path: str, info: Any, stored: bytes | memoryview) -> bytes:
    shown = _show(path)
    try:
        raw = decode(info.codec, stored, info.raw_size)
    except DecodeFailed as e:
        raise _part_error(shown, info, e) from None
    if len(raw) != info.raw_size:
        raise _length_error(shown, info, f"more than {info.raw_size}" if len(raw) > info.raw_size else str(len(raw)))
    if hashlib.sha256(raw).hexdigest() != info.sha256:
        raise _hash_error(shown, info)
    return raw


def _part_error(shown: str, info: Any, e: DecodeFailed) -> PackageError:
    if isinstance(e, TooLong):
        return _length_error(shown, info, str(e))
    return PackageError(
        f"{shown} part {_show(info.name)!r} cannot be decoded as {info.codec} ({e}): "
        "the package is corrupted; re-create or re-download it"
    )


def _length_error(shown: str, info: Any, got: str) -> PackageError:
    return PackageError(
        f"{shown} part {_show(info.name)!r} decodes to {got} bytes but the header says {info.raw_size}: "
        "the package is corrupted; re-create or re-download it"
    )


def _hash_error(shown: str, info: Any) -> PackageError:
    return PackageError(
        f"{shown} part {_show(info.name)!r} failed its SHA-256 check: the package was modified or corrupted; "
        "re-create or re-download it"
    )
