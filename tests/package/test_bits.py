"""One bit order for everything slimship packs: little-endian bits, low nibble first."""

from __future__ import annotations

import numpy as np
import pytest

from slimship.package.bits import (
    pack_bits,
    pack_int4,
    pack_mask,
    packed_size,
    padding_is_clear,
    unpack_bits,
    unpack_int4,
    unpack_mask,
)


def test_element_i_is_bit_i_and_the_first_nibble_is_the_low_one():
    assert pack_mask(np.array([1, 0, 0, 0, 0, 0, 0, 0, 0, 1], bool)) == bytes([0b1, 0b10])
    assert pack_bits(np.array([1, 2], np.uint32), 4) == bytes([0x21])
    assert pack_bits(np.array([0b101, 0b011], np.uint32), 3) == bytes([0b011101])  # value 0 in bits 0-2
    assert pack_int4(np.array([1, -1, 7], np.int8)) == bytes([0xF1, 0x07])  # two's complement nibbles


@pytest.mark.parametrize("nbits", range(1, 9))
@pytest.mark.parametrize("count", [0, 1, 7, 8, 1001])
def test_bits_round_trip(nbits, count):
    v = np.random.default_rng(nbits * count).integers(0, 2 ** nbits, count).astype(np.uint32)
    data = pack_bits(v, nbits)
    assert len(data) == packed_size(count, nbits)
    np.testing.assert_array_equal(unpack_bits(data, count, nbits), v)


@pytest.mark.parametrize("bitorder", ["little", "big"])  # big: only to read delta blobs of version 1
def test_masks_round_trip_in_either_order(bitorder):
    m = np.random.default_rng(0).random(1001) < 0.3
    data = pack_mask(m, bitorder)
    assert data == np.packbits(m, bitorder=bitorder).tobytes()
    np.testing.assert_array_equal(unpack_mask(data, m.size, bitorder), m)
    assert padding_is_clear(data, m.size, bitorder)
    assert not padding_is_clear(data[:-1] + bytes([data[-1] | (0x80 if bitorder == "little" else 0x01)]), m.size,
                                bitorder)


def test_int4_round_trip():
    q = np.arange(-8, 8, dtype=np.int8).repeat(3)[:47]
    np.testing.assert_array_equal(unpack_int4(pack_int4(q), q.size), q)


def test_wrong_lengths_are_refused():
    for data, count, nbits in ((b"\0" * 2, 7, 3), (b"\0" * 4, 7, 3), (b"", 1, 8)):  # 7 x 3 bits are 3 bytes
        with pytest.raises(ValueError):
            unpack_bits(data, count, nbits)
    with pytest.raises(ValueError):
        unpack_mask(b"\0" * 2, 17)
    with pytest.raises(ValueError):
        unpack_int4(b"\0", 3)
