"""Bit and nibble packing for package blobs, in one bit order.

Everything slimship writes packs bits **little-endian**: element ``8 * j + i`` is bit ``i`` (value ``1 << i``)
of byte ``j``, and an ``nbits``-wide value occupies the next ``nbits`` bits, least significant bit first. For
4-bit values this is the usual nibble order, the first value in the low nibble. The last byte is padded with
zero bits.

One exception is kept for reading only: delta blobs of version 1 stored their bitmasks and sign bits
big-endian (numpy's ``packbits`` default), so :func:`pack_mask` / :func:`unpack_mask` take a ``bitorder`` that
the delta decoder sets from the blob's version. Nothing new is written that way.

The unpacking functions trust nothing but also explain nothing: they raise ``ValueError`` on a length that does
not match, and each caller checks lengths first to report the problem in its own blob's terms.
"""

from __future__ import annotations

import numpy as np

BIT_ORDER = "little"


def packed_size(count: int, nbits: int) -> int:
    """Bytes that ``count`` values of ``nbits`` bits take when packed."""
    return (count * nbits + 7) // 8


def pack_mask(mask: np.ndarray, bitorder: str = BIT_ORDER) -> bytes:
    """One bit per entry of the boolean array ``mask`` (flattened), ``ceil(n / 8)`` bytes."""
    return np.packbits(np.asarray(mask, bool).reshape(-1), bitorder=bitorder).tobytes()


def unpack_mask(data: bytes, n: int, bitorder: str = BIT_ORDER) -> np.ndarray:
    """The ``n`` booleans packed by :func:`pack_mask`; ``data`` must be exactly ``ceil(n / 8)`` bytes."""
    if len(data) != packed_size(n, 1):
        raise ValueError(f"{len(data)} mask bytes for {n} entries")
    return np.unpackbits(np.frombuffer(data, np.uint8), count=n, bitorder=bitorder).astype(bool)


def padding_is_clear(data: bytes, n: int, bitorder: str = BIT_ORDER) -> bool:
    """Whether the bits after the first ``n`` in ``data`` (the last byte's padding) are all zero."""
    return not np.unpackbits(np.frombuffer(data, np.uint8), bitorder=bitorder)[n:].any()


def pack_bits(values: np.ndarray, nbits: int) -> bytes:
    """Pack unsigned integers below ``2 ** nbits`` (1 <= nbits <= 8) into ``packed_size(len, nbits)`` bytes."""
    values = np.asarray(values).reshape(-1)
    if values.size == 0:
        return b""
    if nbits == 8:  # fast paths, the same bytes as the general case
        return values.astype(np.uint8).tobytes()
    if nbits == 4:
        v = values.astype(np.uint8)
        if v.size % 2:
            v = np.append(v, np.uint8(0))
        return (v[0::2] | (v[1::2] << 4)).tobytes()
    bits = ((values[:, None] >> np.arange(nbits, dtype=values.dtype)) & 1).astype(np.uint8)
    return np.packbits(bits.reshape(-1), bitorder=BIT_ORDER).tobytes()


def unpack_bits(data: bytes, count: int, nbits: int) -> np.ndarray:
    """The ``count`` unsigned values (uint32) packed by :func:`pack_bits`; ``data`` must be exactly
    ``packed_size(count, nbits)`` bytes."""
    if len(data) != packed_size(count, nbits):
        raise ValueError(f"{len(data)} bytes for {count} values of {nbits} bits")
    raw = np.frombuffer(data, np.uint8)
    if nbits == 8:
        return raw.astype(np.uint32)
    if nbits == 4:
        return np.stack([raw & 15, raw >> 4], 1).reshape(-1)[:count].astype(np.uint32)
    bits = np.unpackbits(raw, bitorder=BIT_ORDER)[: count * nbits].reshape(count, nbits)
    return (bits.astype(np.uint32) << np.arange(nbits, dtype=np.uint32)).sum(1)


def pack_int4(q: np.ndarray) -> bytes:
    """Signed values in [-8, 7] as 4-bit two's complement nibbles (:func:`pack_bits` with ``nbits=4``)."""
    return pack_bits((np.asarray(q).astype(np.int16) & 0xF).astype(np.uint8), 4)


def unpack_int4(data: bytes, count: int) -> np.ndarray:
    """The ``count`` int8 values packed by :func:`pack_int4`; ``data`` must be ``ceil(count / 2)`` bytes."""
    u = unpack_bits(data, count, 4).astype(np.int8)
    return np.where(u >= 8, u - 16, u).astype(np.int8)
