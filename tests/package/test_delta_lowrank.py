"""The lowrank delta mode: a low-rank change is rebuilt within fp16 rounding at a fraction of sparse coding's bytes,
a full-rank change falls back to dense fp16, and damaged lowrank entries are refused."""

from __future__ import annotations

import numpy as np
import pytest

from slimship.core.errors import PackageError
from slimship.package import delta as dl
from slimship.package.delta import DeltaConfig, apply_delta, encode_delta
from tests.package.test_delta import _inits, _reseal, _restream

SHAPES = {"w1": (64, 96), "w2": (96, 48), "conv": (16, 8, 3, 3)}


def _graph(weights: dict[str, np.ndarray]) -> bytes:
    """An ONNX graph using each weight (MatMul for matrices, Conv for the kernel): enough to hold initializers."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("MatMul", ["h", "w2"], ["y"]),
             helper.make_node("Conv", ["img", "conv"], ["z"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64]),
                                       helper.make_tensor_value_info("img", TensorProto.FLOAT, [1, 8, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 48]),
                           helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(v, k) for k, v in weights.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _low_rank(rng, shape, r: int) -> np.ndarray:
    rows, cols = shape[0], int(np.prod(shape[1:]))
    return (0.01 * rng.standard_normal((rows, r)) @ rng.standard_normal((r, cols))).reshape(shape).astype(np.float32)


@pytest.fixture(scope="module")
def lowrank_pair():
    """(base, task, exact deltas): every weight changed by a rank-4 update, as LoRA changes a layer."""
    rng = np.random.default_rng(0)
    base = {k: rng.standard_normal(s).astype(np.float32) * 0.1 for k, s in SHAPES.items()}
    task = {k: (v + _low_rank(rng, v.shape, 4)).astype(np.float32) for k, v in base.items()}
    return _graph(base), _graph(task), {k: task[k] - base[k] for k in base}


def test_a_low_rank_change_is_rebuilt_at_its_rank_and_costs_far_less_than_sparse(lowrank_pair):
    base, task, deltas = lowrank_pair
    blob, info = encode_delta(base, task, DeltaConfig("lowrank"))
    assert info["ranks"] == {"4": 3} and info["dense_fp16"] == 0  # the SVD stops at the change's rank
    rebuilt, want, b = _inits(apply_delta(base, blob)), _inits(task), _inits(base)
    for k, d in deltas.items():
        err = np.linalg.norm((rebuilt[k] - b[k]) - d) / np.linalg.norm(d)
        assert err < 2e-3, (k, err)  # fp16 factors
        np.testing.assert_allclose(rebuilt[k], want[k], atol=1e-3)
    sparse, _ = encode_delta(base, task, DeltaConfig("sparse", density=1.0, value_bits=16))
    assert len(blob) * 4 < len(sparse)
    header, _ = dl._open_blob(blob)
    assert header["version"] == 3 and header["mode"] == "lowrank"


def test_a_rank_cap_truncates_and_a_full_rank_change_goes_dense(lowrank_pair):
    base, task, deltas = lowrank_pair
    blob, info = encode_delta(base, task, DeltaConfig("lowrank", rank=1))
    b, rebuilt = _inits(base), _inits(apply_delta(base, blob))
    assert info["ranks"] == {"1": 3}
    assert np.linalg.norm((rebuilt["w1"] - b["w1"]) - deltas["w1"]) / np.linalg.norm(deltas["w1"]) > 0.1
    rng = np.random.default_rng(1)
    noisy = {k: (v + 0.01 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in b.items()}
    blob, info = encode_delta(base, _graph(noisy), DeltaConfig("lowrank"))
    assert info["ranks"] == {} and info["dense_fp16"] == 3
    np.testing.assert_allclose(_inits(apply_delta(base, blob))["w2"], noisy["w2"], atol=1e-4)
    header, _ = dl._open_blob(blob)
    assert header["version"] == 2  # no lowrank entry: older readers still read it
    with pytest.raises(ValueError, match="rank"):
        DeltaConfig("lowrank", rank=0)


def test_damaged_lowrank_entries_are_refused(lowrank_pair):
    base, task, _ = lowrank_pair
    blob, _ = encode_delta(base, task, DeltaConfig("lowrank"))

    def first(h, **over):
        next(e for e in h["tensors"] if e["kind"] == "lowrank").update(over)
        return h

    def beyond_the_shape(h, s):  # the last lowrank tensor (conv: 16 x 72) at rank 17, its bytes all present
        e = [e for e in h["tensors"] if e["kind"] == "lowrank"][-1]
        assert e["name"] == "conv"
        extra = 2 * 17 * (16 + 72) - e["val_bytes"]
        e.update(rank=17, val_bytes=e["val_bytes"] + extra)
        s["values"] += bytes(extra)
        h["streams"]["values"] = len(s["values"])

    cases = [
        _restream(blob, 3, beyond_the_shape),
        _reseal(blob, lambda h: first(h, rank=500)),  # above the shape
        _reseal(blob, lambda h: first(h, rank=5)),  # the factor bytes no longer fit
        _reseal(blob, lambda h: first(h, rows=7)),  # rows that do not divide the tensor
        _reseal(blob, lambda h: first(h, val_bytes=3)),
        _reseal(blob, lambda h: first(h, rank=-1)),
        _restream(blob, 2, lambda h, s: None),  # a lowrank entry in a version-2 blob
    ]
    for bad in cases:
        with pytest.raises(PackageError, match="malformed"):
            apply_delta(base, bad)
