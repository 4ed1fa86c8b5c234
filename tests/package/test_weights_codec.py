"""The weights codec's qint encoding: found from the values alone, bit-exact, and every damaged entry refused."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slimship.compress.weight_only import WeightOnlyConfig, block_scales, fake_quant
from slimship.core.errors import PackageError
from slimship.package.weights_codec import MAGIC, _pack_bits, _unpack_bits, decode_graph, decode_tensor, encode_tensor

FUZZ = settings(deadline=None, database=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])


def quantized(shape, bits=4, granularity="group", group_size=16, sparsity=0.0, seed=0) -> np.ndarray:
    """Weights the way the weight_only method leaves them (PyTorch [out, in...] layout)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g) * 0.05
    if sparsity:
        w[torch.rand(shape, generator=g) < sparsity] = 0
    cfg = WeightOnlyConfig(bits=bits, granularity=granularity, group_size=group_size)
    return fake_quant(w, block_scales(w, cfg), bits).numpy()


def round_trip(a: np.ndarray) -> tuple[dict, np.ndarray]:
    e, chunks = encode_tensor(a)
    e["shape"] = list(a.shape)
    return e, decode_tensor(e, chunks)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.mark.parametrize("bits,granularity,shape,transposed,sparsity", [
    (4, "group", (48, 100), False, 0.0),  # ragged last group
    (4, "group", (48, 100), True, 0.0),  # ONNX MatMul layout [in, out]
    (8, "channel", (40, 64), True, 0.5),  # pruned first
    (8, "channel", (16, 8, 3, 3), False, 0.0),  # a conv kernel
    (4, "group", (32, 64, 1, 1), False, 0.9),  # very sparse: bitmask + codes of the nonzeros
])
def test_quantized_weights_decode_bit_for_bit(bits, granularity, shape, transposed, sparsity):
    a = quantized(shape, bits, granularity, 16, sparsity)
    if transposed:
        a = np.ascontiguousarray(a.T)
    e, back = round_trip(a)
    assert e["enc"] == "qint" and e["nbits"] == bits and e["layout"] == ("cols" if transposed else "rows")
    if granularity == "group":
        assert e["block"] == 16
    assert e["scale"] == "f16"  # the quantizer's 11-bit scales fit float16 here
    assert same_bits(back, a)
    assert np.array_equal(back == 0, a == 0)  # every zero kept, and only those
    assert not np.signbit(back[back == 0]).any()


def test_qint_is_small_and_float_weights_stay_raw():
    a = quantized((64, 256), bits=4, group_size=128)
    e, chunks = encode_tensor(a)
    assert sum(map(len, chunks)) <= a.size // 2 + 2 * a.size // 128 + 8  # 4 bits + a float16 per 128
    rng = np.random.default_rng(0)
    assert encode_tensor(rng.standard_normal((64, 64)).astype(np.float32))[0]["enc"] == "raw"
    assert encode_tensor(np.arange(512, dtype=np.float32))[0]["enc"] != "qint"  # vectors are never qint


@pytest.mark.parametrize("nbits", [2, 3, 4, 5, 8])
def test_bit_packing_fast_paths_match_the_general_one(nbits):
    v = np.random.default_rng(nbits).integers(0, 2 ** nbits, 1001).astype(np.uint32)
    bits = ((v[:, None] >> np.arange(nbits, dtype=np.uint32)) & 1).astype(np.uint8)
    general = np.packbits(bits.reshape(-1), bitorder="little").tobytes()
    assert _pack_bits(v, nbits) == general
    assert np.array_equal(_unpack_bits(general, v.size, nbits), v)


def _valid():
    a = quantized((8, 40), bits=4, sparsity=0.5)
    e, chunks = encode_tensor(a)
    e["shape"] = list(a.shape)
    return e, chunks


@pytest.mark.parametrize("damage", [
    lambda e, c: ({**e, "nbits": 9}, c),
    lambda e, c: ({**e, "nbits": 1}, c),
    lambda e, c: ({**e, "block": 0}, c),
    lambda e, c: ({**e, "block": 41}, c),
    lambda e, c: ({**e, "layout": "diagonal"}, c),
    lambda e, c: ({**e, "layout": "cols", "shape": [8, 5, 8]}, c),
    lambda e, c: ({**e, "scale": "f8"}, c),
    lambda e, c: ({**e, "nnz": e["nnz"] + 1}, c),
    lambda e, c: ({**e, "nnz": -1}, c),
    lambda e, c: ({**e, "shape": [16, 40]}, c),
    lambda e, c: ({**e, "shape": [-8, -40]}, c),
    lambda e, c: ({**e, "shape": [2 ** 40, 2 ** 40]}, c),
    lambda e, c: ({**e, "nbits": float("inf")}, c),
    lambda e, c: ({k: v for k, v in e.items() if k != "block"}, c),
    lambda e, c: (e, [c[0][:-1], c[1], c[2]]),
    lambda e, c: (e, [c[0], c[1][:-1], c[2]]),
    lambda e, c: (e, [c[0], c[1], c[2] + b"\0"]),
    lambda e, c: (e, [c[0], c[1]]),
    lambda e, c: (e, [np.full(len(c[0]) // 2, np.inf, np.float16).tobytes(), c[1], c[2]]),
    lambda e, c: (e, [c[0], c[1], b"\xff" * len(c[2])]),  # code 15 > 2 * 7
    lambda e, c: (e, [c[0], c[1], b"\x77" * len(c[2])]),  # masked codes of 0
    lambda e, c: ({**e, "nnz": 320}, [c[0], b"", c[2]]),  # dense codes missing
])
def test_damaged_qint_entries_are_refused(damage):
    e, chunks = _valid()
    assert decode_tensor(e, chunks).shape == (8, 40)
    with pytest.raises(PackageError):
        decode_tensor(*damage(e, chunks))


_JSONISH = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.floats(allow_nan=True),
                     st.text(max_size=5), st.lists(st.integers(-3, 50), max_size=4))


@FUZZ
@given(data=st.data())
def test_fuzzed_qint_entries_decode_or_raise_package_error(data):
    e, chunks = _valid()
    for _ in range(data.draw(st.integers(1, 3))):
        if data.draw(st.booleans()):
            e = {**e, data.draw(st.sampled_from(sorted(e))): data.draw(_JSONISH)}
        else:
            i = data.draw(st.integers(0, len(chunks) - 1))
            b = bytearray(chunks[i])
            cut = data.draw(st.integers(0, len(b)))
            b = b[:cut] + data.draw(st.binary(max_size=8)) + b[cut + data.draw(st.integers(0, 3)):]
            chunks = [*chunks[:i], bytes(b), *chunks[i + 1:]]
    try:
        out = decode_tensor(e, chunks)
    except PackageError:
        return
    assert isinstance(out, np.ndarray) and list(out.shape) == [int(d) for d in e["shape"]]


def _blob(entries: list[dict], chunks: list[bytes]) -> bytes:
    header = json.dumps({"tensors": entries}).encode()
    return MAGIC + struct.pack("<I", len(header)) + header + b"".join(chunks)


@FUZZ
@given(data=st.data())
def test_fuzzed_weights_blobs_are_refused_with_package_error(data):
    e, chunks = _valid()
    blob = bytearray(_blob([{**e, "name": "w", "lengths": [len(c) for c in chunks]}], chunks))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] = data.draw(st.integers(0, 255))
    with pytest.raises(PackageError):  # and nothing else: a hostile blob must never surface as another error
        decode_graph(b"", bytes(blob))  # even intact, the blob does not fit the empty graph: always PackageError
