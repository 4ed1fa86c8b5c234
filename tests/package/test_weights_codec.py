"""The weights codec: one small class per encoding, the qint encoding found from the values alone, bit-exact,
and every damaged entry refused."""

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
from slimship.package.bits import pack_bits, unpack_bits
from slimship.package.weights_codec import (
    CODECS,
    MAGIC,
    TensorCodec,
    decode_graph,
    decode_tensor,
    encode_graph,
    encode_tensor,
)

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
    assert pack_bits(v, nbits) == general
    assert np.array_equal(unpack_bits(general, v.size, nbits), v)


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


# ---- one class per encoding ----------------------------------------------------------------------------------


def _one_of_each() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    sparse = rng.standard_normal((40, 40)).astype(np.float32)
    sparse[rng.random(sparse.shape) < 0.8] = 0
    shared = rng.standard_normal(6).astype(np.float32)[rng.integers(0, 6, (40, 40))]
    scales = (rng.random((48, 7)) + 0.5).astype(np.float16).astype(np.float32)  # int4 codes, a scale per 16
    qint = rng.integers(-7, 8, (48, 100)).astype(np.float32) * np.repeat(scales, 16, axis=1)[:, :100]
    return {
        "raw": rng.standard_normal((40, 40)).astype(np.float32),
        "sparse": sparse,
        "shared": shared,
        "half": rng.standard_normal(1000).astype(np.float16).astype(np.float32),
        "qint": qint,
    }


def test_every_registered_codec_round_trips_and_is_picked_where_smallest():
    cases = _one_of_each()
    assert list(CODECS) == ["raw", "sparse", "shared", "half", "qint"]  # the order decides ties
    assert set(cases) == set(CODECS) and all(isinstance(c, TensorCodec) for c in CODECS.values())
    for name, a in cases.items():
        e, back = round_trip(a)
        assert e["enc"] == name and same_bits(back, a)
        for codec in CODECS.values():  # every codec that takes the tensor gives it back bit for bit
            got = codec.encode(a)
            if got is not None:
                entry, chunks = got
                assert entry["enc"] == codec.name
                assert same_bits(codec.decode(entry, chunks, a.shape, a.size), a)


# SHA-256 of the weights blob of _one_of_each(), as written before the codecs became classes (commit 4f20711)
BLOB_SHA256 = "ac6a15f46bfa86948f232729bd1441dfb373fbee00c4bd14ea06ceade6f09f72"


def test_weights_blob_layout_is_unchanged():
    """The bytes of weights.bin are part of the format: any change to what is written shows here."""
    import hashlib

    import onnx
    from onnx import helper, numpy_helper

    inits = [numpy_helper.from_array(a, name) for name, a in _one_of_each().items()]
    model = helper.make_model(helper.make_graph([], "g", [], [], inits)).SerializeToString()
    skeleton, blob, info = encode_graph(model)
    assert hashlib.sha256(blob).hexdigest() == BLOB_SHA256
    assert info == {"shared": 1, "sparse": 1, "qint": 1, "half": 1, "raw": 1, "bytes": info["bytes"]}
    assert onnx.load_from_string(decode_graph(skeleton, blob)) == onnx.load_from_string(model)


def test_unknown_encoding_asks_for_an_upgrade():
    e, chunks = _valid()
    with pytest.raises(PackageError, match="unknown encoding 'zeros': upgrade slimship"):
        decode_tensor({**e, "enc": "zeros"}, chunks)


class _ZerosCodec(TensorCodec):  # the example of TensorCodec's docstring
    name = "zeros"

    def encode(self, a):
        return None if a.view(np.uint32).any() else ({"enc": self.name}, [])

    def decode(self, e, chunks, shape, n):
        if chunks:
            raise PackageError("weights blob is corrupted: zeros tensor with data")
        return np.zeros(shape, np.float32)


def test_a_new_encoding_is_one_class(monkeypatch):
    from onnx import helper, numpy_helper

    monkeypatch.setitem(CODECS, "zeros", _ZerosCodec())
    a = np.zeros((30, 30), np.float32)
    model = helper.make_model(helper.make_graph([], "g", [], [], [numpy_helper.from_array(a, "z")]))
    skeleton, blob, info = encode_graph(model.SerializeToString())
    assert info["zeros"] == 1 and info["bytes"] == {"zeros": 0}
    assert decode_graph(skeleton, blob) == model.SerializeToString()
    e, _ = encode_tensor(np.full((30, 30), -0.0, np.float32))  # -0.0 is not zero bits: another encoding
    assert e["enc"] != "zeros"
