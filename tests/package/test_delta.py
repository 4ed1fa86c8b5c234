"""Task models as deltas against a shared base: exactness, approximation, sizes, refusal of damaged blobs,
and the package round trip."""

from __future__ import annotations

import hashlib
import json
import lzma
import struct
from pathlib import Path

import numpy as np
import pytest

from slimship.core.errors import PackageError
from slimship.package import delta as dl
from slimship.package.delta import DeltaConfig, apply_delta, best_delta, encode_delta, load_task_onnx, pack_delta


def _inits(onnx_bytes: bytes) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t) for t in onnx.load_from_string(onnx_bytes).graph.initializer}


def _logits(onnx_bytes: bytes, x: np.ndarray) -> np.ndarray:
    from slimship.core.runtime import ort_session

    s = ort_session(onnx_bytes, threads=1)
    return s(x)


@pytest.fixture(scope="module")
def graphs():
    """(base ONNX with 10 classes, task ONNX = base + small perturbation with a 3-class head, unchanged names)."""
    import torch

    from slimship.models import create_model
    from slimship.models.export import export_onnx

    torch.manual_seed(0)
    base_model = create_model("test_efficientnet", 10, weights=None, image_size=32).model
    task_model = create_model("test_efficientnet", 3, weights=None, image_size=32).model
    bsd, unchanged = base_model.state_dict(), []
    with torch.no_grad():
        for i, (k, v) in enumerate(task_model.state_dict().items()):
            if k in bsd and bsd[k].shape == v.shape:
                v.copy_(bsd[k])
                if v.is_floating_point() and i % 7 != 3:
                    v.add_(0.02 * torch.randn_like(v) * (torch.rand_like(v) < 0.6))  # ~60 % of entries move
                elif v.is_floating_point():
                    unchanged.append(k)
    return export_onnx(base_model, 32), export_onnx(task_model, 32)


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)


# ------------------------------------------------------------------------------------------ round trips


def test_lossless_delta_rebuilds_the_task_exactly(graphs, x):
    base, task = graphs
    blob, info = encode_delta(base, task, DeltaConfig("sparse", density=1.0, value_bits=32))
    out = apply_delta(base, blob)
    assert out == task  # byte for byte
    assert _logits(out, x).shape == (4, 3)  # the head's class count comes from the task
    np.testing.assert_array_equal(_logits(out, x), _logits(task, x))
    assert info["kept_fraction"] == pytest.approx(info["changed_fraction"])
    assert info["bytes"] == len(blob) < len(task)


@pytest.mark.parametrize("bits", [4, 8, 16])
def test_sparse_delta_is_close_and_untouched_entries_stay_base(graphs, bits):
    base, task = graphs
    blob, info = encode_delta(base, task, DeltaConfig("sparse", density=0.1, value_bits=bits))
    b, t, r = _inits(base), _inits(task), _inits(apply_delta(base, blob))
    assert set(r) == set(t)
    assert r["classifier.weight"].shape == (3, t["classifier.weight"].shape[1])
    np.testing.assert_array_equal(r["classifier.weight"], t["classifier.weight"])  # head stored whole
    closer = 0
    for name, tv in t.items():
        if name not in b or b[name].shape != tv.shape:
            continue
        moved = r[name] != b[name]
        assert moved.sum() <= np.ceil(0.1 * moved.size)  # at most the kept fraction of entries change
        if np.abs(tv - b[name]).sum() > 0:
            closer += np.linalg.norm(r[name] - tv) < np.linalg.norm(b[name] - tv)
        # every kept entry lands near the task value; every other entry is the base value, bit for bit
        d = (tv - b[name])[moved]
        tol = np.abs(d).max(initial=0) * (0.5 if bits == 4 else 0.02) + 1e-6
        np.testing.assert_allclose(r[name][moved], tv[moved], atol=tol)
        np.testing.assert_array_equal(r[name][~moved], b[name][~moved])
    assert closer >= 10
    assert 0.0 < info["kept_fraction"] <= 0.1 + 1e-3


def test_unchanged_tensors_and_zero_deltas_cost_nothing(graphs):
    base, task = graphs
    blob, info = encode_delta(base, task, DeltaConfig("sparse", density=1.0, value_bits=32))
    assert info["tensors"]["same"] >= 1  # tensors the task left alone are marked, not encoded
    # density 1.0 keeps exactly the entries that changed (zeros of the delta are never kept) ...
    assert info["kept_fraction"] == info["changed_fraction"]
    assert 0.4 < info["changed_fraction"] < 0.95
    # ... and int8 also drops the entries that quantise to 0
    q8 = encode_delta(base, task, DeltaConfig("sparse", density=1.0, value_bits=8))[1]
    assert 0.3 < q8["kept_fraction"] <= info["changed_fraction"]
    same = encode_delta(base, base, DeltaConfig("sparse", density=1.0, value_bits=8))
    assert same[1]["tensors"]["delta"] == 0 and same[1]["raw_bytes"]["values"] == 0
    assert apply_delta(base, same[0]) == base


def test_size_shrinks_with_density(graphs):
    base, task = graphs
    sizes = [len(encode_delta(base, task, DeltaConfig("sparse", density=d, value_bits=8))[0])
             for d in (0.01, 0.05, 0.2, 1.0)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1] / 4
    lossless = len(encode_delta(base, task, DeltaConfig("sparse", density=1.0, value_bits=32))[0])
    assert sizes[-1] < lossless


def test_bitdelta_is_sign_times_mean_abs_delta(graphs):
    base, task = graphs
    blob, info = encode_delta(base, task, DeltaConfig("bitdelta"))
    b, t, r = _inits(base), _inits(task), _inits(apply_delta(base, blob))
    name = next(n for n in t if n in b and t[n].ndim == 4 and not np.array_equal(t[n], b[n]))
    d = (t[name] - b[name]).astype(np.float32)
    scale = np.float32(np.abs(d).mean(dtype=np.float64))
    np.testing.assert_allclose(r[name], b[name] + np.where(d > 0, scale, -scale), rtol=1e-6, atol=1e-7)
    assert info["mode"] == "bitdelta" and "density" not in info
    # ~1 bit per element (lzma cannot squeeze random signs), far below the 32-bit dense delta
    assert len(blob) < len(encode_delta(base, task, DeltaConfig("sparse", 1.0, 32))[0]) / 5


def test_options_round_trip(graphs, x):
    base, task = graphs
    cfg = DeltaConfig("sparse", density=0.05, value_bits=8, allocation="norm", dense_vectors=True, head_bits=16)
    blob, info = encode_delta(base, task, cfg)
    r, t, b = _inits(apply_delta(base, blob)), _inits(task), _inits(base)
    # tensors without a base counterpart (the head; biases the exporter no longer shares) stored as fp16
    assert info["tensors"]["half"] == len([n for n in t if n not in b or b[n].shape != t[n].shape]) >= 2
    np.testing.assert_allclose(r["classifier.weight"], t["classifier.weight"], rtol=1e-3, atol=1e-4)
    vec = next(n for n in t if n in b and t[n].ndim == 1 and not np.array_equal(t[n], b[n]))
    np.testing.assert_allclose(r[vec], t[vec], rtol=1e-3, atol=1e-4)  # 1-D deltas kept whole (fp16)
    assert _logits(apply_delta(base, blob), x).shape == (4, 3)


@pytest.mark.parametrize("scales", ["tensor", "channel"])
def test_mixed_codebooks_respect_the_budget_and_beat_bitdelta(graphs, scales):
    base, task = graphs
    b, t = _inits(base), _inits(task)
    moved = [n for n in t if n in b and b[n].shape == t[n].shape and not np.array_equal(b[n], t[n])]

    def rel_err(blob: bytes) -> float:
        r = _inits(apply_delta(base, blob))
        return sum(float(np.sum((r[n] - t[n]) ** 2)) for n in moved) / sum(float(np.sum((t[n] - b[n]) ** 2))
                                                                        for n in moved)

    sizes, errs = [], []
    for bpw in (1.0, 2.0, 3.0):
        blob, info = encode_delta(base, task, DeltaConfig("mixed", bits_per_weight=bpw, scales=scales))
        assert info["mode"] == "mixed" and set(info["levels"]) <= {"2", "3", "4", "6", "8", "12", "16", "24", "32"}
        assert info["raw_bytes"]["codes"] == info["delta_elements"]  # one byte per entry before lzma ...
        assert info["xz_bytes"]["codes"] * 8 <= (bpw + 0.35) * info["delta_elements"]  # ... entropy-coded by it
        sizes.append(len(blob))
        errs.append(rel_err(blob))
    assert sizes == sorted(sizes) and errs == sorted(errs, reverse=True) and errs[-1] < 0.05
    bit = encode_delta(base, task, DeltaConfig("bitdelta", scales=scales))[0]
    assert errs[0] < rel_err(bit)  # 1 bit per weight spent by codebooks does better than signs alone
    # a given sensitivity steers the bits: tensors weighted up get the larger codebooks
    heavy = {n: (1e6 if i % 2 else 1e-6) for i, n in enumerate(moved)}
    _, info = encode_delta(base, task, DeltaConfig("mixed", bits_per_weight=1.5), sensitivity=heavy)
    assert info["levels"] != encode_delta(base, task, DeltaConfig("mixed", bits_per_weight=1.5))[1]["levels"]


def test_sensitivity_is_measured_per_tensor(graphs, x):
    base, task = graphs
    sens = dl.tensor_sensitivity(base, task, x, min_size=2000)
    big = [n for n, v in _inits(task).items() if v.size >= 2000 and n in _inits(base)
           and _inits(base)[n].shape == v.shape]
    assert sens and set(sens) <= set(big) and all(v >= 0 and np.isfinite(v) for v in sens.values())


def test_tensors_are_matched_by_use_when_names_differ(graphs):
    import onnx

    base, task = graphs
    model = onnx.load_from_string(task)
    t = next(t for t in model.graph.initializer if t.name.startswith("onnx::Conv"))
    old, new = t.name, "renamed_by_another_exporter"
    t.name = new
    for node in model.graph.node:
        node.input[:] = [new if i == old else i for i in node.input]
    renamed = model.SerializeToString()
    plain = encode_delta(base, task, DeltaConfig("sparse", 1.0, 32))[1]
    blob, info = encode_delta(base, renamed, DeltaConfig("sparse", 1.0, 32))
    assert info["tensors"] == plain["tensors"]  # still delta-coded, not stored whole
    assert apply_delta(base, blob) == renamed


def test_varint_gaps_round_trip():
    rng = np.random.default_rng(0)
    for n, k in ((10, 0), (10, 10), (1000, 3), (3_000_000, 500)):
        pos = np.sort(rng.choice(n, k, replace=False)) if k else np.zeros(0, np.int64)
        raw = dl._varint_encode(dl._gaps(pos))
        np.testing.assert_array_equal(dl._gaps_decode(raw, k, n, "t"), pos)
    q = rng.integers(-7, 8, 11).astype(np.int8)
    np.testing.assert_array_equal(dl._unpack_int4(dl._pack_int4(q), 11), q)


def test_config_is_validated():
    for bad in ({"mode": "dense"}, {"density": 0.0}, {"density": 1.5}, {"value_bits": 2},
                {"allocation": "greedy"}, {"head_bits": 8}):
        with pytest.raises(ValueError):
            DeltaConfig(**bad)


# ------------------------------------------------------------------------------------------- best_delta


def test_best_delta_picks_the_smallest_blob_within_the_drop(graphs, x):
    base, task = graphs
    ref = _logits(task, x)

    def score(onnx_bytes: bytes) -> float:  # "accuracy" = closeness of the logits, 1.0 when identical
        return 1.0 - float(np.abs(_logits(onnx_bytes, x) - ref).max())

    blob, info = best_delta(base, task, score, max_drop=0.05, densities=(0.01, 1.0), budgets=(1.5,), inputs=x)
    assert len(info["trials"]) == 5 and {t["mode"] for t in info["trials"]} == {"sparse", "bitdelta", "mixed"}
    assert info["sensitivity"]
    ok = [t for t in info["trials"] if t["ok"]]
    assert ok and len(blob) == min(t["bytes"] for t in ok) and not info["fallback"]
    assert info["val_delta"] >= info["val_task"] - 0.05
    assert score(apply_delta(base, blob)) == pytest.approx(info["val_delta"])

    strict, sinfo = best_delta(base, task, score, max_drop=0.0, densities=(0.01,), modes=("sparse",))
    assert sinfo["fallback"] and apply_delta(base, strict) == task  # nothing qualified: lossless


# ---------------------------------------------------------------------------------------- damaged blobs


def _reseal(blob: bytes, edit) -> bytes:
    """Decode a blob, let ``edit(header) -> header`` change its header, and re-hash/re-compress it, so only the
    delta's own consistency checks can catch the change."""
    _, version, size, _ = dl._PREFIX.unpack_from(blob)
    payload = lzma.decompress(blob[dl._PREFIX.size:])
    (hlen,) = struct.unpack_from("<I", payload)
    header = edit(json.loads(payload[4 : 4 + hlen]))
    head = json.dumps(header).encode()
    payload = struct.pack("<I", len(head)) + head + payload[4 + hlen :]
    return dl._PREFIX.pack(dl._MAGIC, version, len(payload), hashlib.sha256(payload).digest()) + lzma.compress(
        payload, format=lzma.FORMAT_XZ)


def test_damaged_blobs_are_refused(graphs):
    base, task = graphs
    blob, _ = encode_delta(base, task, DeltaConfig("sparse", density=0.05, value_bits=8))
    cases = [blob[:n] for n in (0, 7, dl._PREFIX.size, len(blob) // 2, len(blob) - 1)]
    cases += [blob + b"\0", b"NOTADLT\0" + blob[8:]]
    for at in (9, 12, 20, dl._PREFIX.size + 5, len(blob) // 2, len(blob) - 3):  # flip one byte anywhere
        cases.append(blob[:at] + bytes([blob[at] ^ 0x5A]) + blob[at + 1 :])
    cases.append(blob[:8] + struct.pack("<H", 99) + blob[10:])  # newer version
    cases.append(blob[:10] + struct.pack("<Q", 2**40) + blob[18:])  # absurd payload size

    def first_sparse(h, **over):
        e = next(e for e in h["tensors"] if e["kind"] == "sparse")
        e.update(over)
        return h

    edits = [
        lambda h: first_sparse(h, k=h["tensors"][0].get("k", 0) + 10**9),
        lambda h: first_sparse(h, val_bytes=1),
        lambda h: first_sparse(h, pos_bytes=10**6),
        lambda h: first_sparse(h, bits=3),
        lambda h: first_sparse(h, base="no-such-tensor"),
        lambda h: first_sparse(h, scale="x"),
        lambda h: first_sparse(h, scale=float("inf")),
        lambda h: {**h, "streams": {**h["streams"], "values": h["streams"]["values"] + 1}},
        lambda h: {**h, "tensors": h["tensors"][1:]},  # a tensor left without data
        lambda h: {**h, "tensors": h["tensors"] + h["tensors"][:1]},  # a tensor given twice
        lambda h: {**h, "extra": 1},
        lambda h: {**h, "positions": "zip"},
        lambda h: [],
    ]
    cases += [_reseal(blob, e) for e in edits]

    def first(which, h, **over):
        next(e for e in h["tensors"] if e["kind"] == which).update(over)
        return h

    mixed = encode_delta(base, task, DeltaConfig("mixed", bits_per_weight=2.0, scales="channel"))[0]
    signs = encode_delta(base, task, DeltaConfig("bitdelta", scales="channel"))[0]
    cases += [
        _reseal(mixed, lambda h: first("codes", h, levels=1)),  # codes past the codebook
        _reseal(mixed, lambda h: first("codes", h, levels=300)),
        _reseal(mixed, lambda h: first("codes", h, rows=7)),  # rows that do not divide the tensor
        _reseal(mixed, lambda h: first("codes", h, rows=-1)),
        _reseal(signs, lambda h: first("sign", h, rows=3)),
        _reseal(signs, lambda h: first("sign", h, kind="codes")),
        _reseal(signs, lambda h: first("sign", h, name="no-such-initializer")),
    ]
    for bad in cases:
        with pytest.raises(PackageError):
            apply_delta(base, bad)
    with pytest.raises(PackageError, match="base"):
        apply_delta(task, blob)  # another base graph


# -------------------------------------------------------------------------------- versions and bit order

V1 = Path(__file__).parent / "fixtures" / "delta-v1"


def _restream(blob: bytes, version: int, edit) -> bytes:
    """The blob re-sealed under ``version`` with ``edit(header, streams)`` applied to its decoded streams."""
    payload = lzma.decompress(blob[dl._PREFIX.size:])
    (hlen,) = struct.unpack_from("<I", payload)
    header, at, streams = json.loads(payload[4 : 4 + hlen]), 4 + hlen, {}
    for k, n in header["streams"].items():
        streams[k], at = payload[at : at + n], at + n
    edit(header, streams)
    header["version"] = version
    head = json.dumps(header).encode()
    payload = struct.pack("<I", len(head)) + head + b"".join(streams[k] for k in header["streams"])
    return dl._PREFIX.pack(dl._MAGIC, version, len(payload), hashlib.sha256(payload).digest()) + lzma.compress(
        payload, format=lzma.FORMAT_XZ)


def _reverse_bits(raw: bytes) -> bytes:
    """Every byte with its bits in the other order: a little-endian bitmask becomes the big-endian one (each
    tensor's mask starts on a byte of its own)."""
    return np.packbits(np.unpackbits(np.frombuffer(raw, np.uint8), bitorder="little"), bitorder="big").tobytes()


@pytest.mark.parametrize("name", ["sparse-mask", "bitdelta"])
def test_version_1_blobs_with_big_endian_bits_still_decode(name):
    """Blobs written by slimship 0.1 (delta version 1, bitmasks and sign bits big-endian) rebuild as they did."""
    base, blob = (V1 / "base.onnx").read_bytes(), (V1 / f"{name}.bin").read_bytes()
    assert dl._PREFIX.unpack_from(blob)[1] == 1 and dl.BLOB_VERSION == 3
    expected = np.load(V1 / "expected.npz")
    got = _inits(apply_delta(base, blob))
    assert sorted(got) == ["w1", "w2"]
    for k, v in got.items():
        np.testing.assert_array_equal(v, expected[f"{name}/{k}"])


@pytest.mark.parametrize("cfg", [DeltaConfig("sparse", density=0.6, value_bits=4), DeltaConfig("bitdelta")])
def test_new_blobs_pack_bits_little_endian_and_the_version_selects_the_order(graphs, cfg):
    base, task = graphs
    blob, _ = encode_delta(base, task, cfg)
    header, streams = dl._open_blob(blob)
    assert header["version"] == 2  # version 3 only adds lowrank entries: a blob without them stays readable by 2
    stream = "signs" if cfg.mode == "bitdelta" else "positions"
    assert cfg.mode == "bitdelta" or header["positions"] == "mask"
    if cfg.mode == "bitdelta":  # the first tensor's sign bits: element 0 is bit 0 of byte 0
        e = next(e for e in header["tensors"] if e["kind"] == "sign")
        d = (_inits(task)[e["name"]].astype(np.float32) - _inits(base)[e["base"]]).ravel()
        assert streams["signs"][: (d.size + 7) // 8] == np.packbits(d > 0, bitorder="little").tobytes()

    def flip(header, streams):
        streams[stream] = _reverse_bits(streams[stream])

    rebuilt = apply_delta(base, blob)
    assert apply_delta(base, _restream(blob, 1, flip)) == rebuilt  # the same bits, in version 1's order
    try:
        wrong = apply_delta(base, _restream(blob, 2, flip))  # version 2 reads them little-endian: not the task
    except PackageError:
        wrong = None  # (positions may no longer match their counts: refused, also fine)
    assert wrong != rebuilt


# --------------------------------------------------------------------------------------------- packages


def test_pack_and_load_round_trip_and_wrong_base(graphs, tmp_path):
    from slimship.data.transforms import ImagePreprocessing
    from slimship.package.format import read_package
    from slimship.package.pack import pack

    base, task = graphs
    pre = ImagePreprocessing(32, 1, (0.5,) * 3, (0.5,) * 3)
    pack(tmp_path / "base.slim", onnx=base, architecture="test_efficientnet", class_names=[str(i) for i in range(10)],
         preprocessing=pre)
    pack(tmp_path / "task.slim", onnx=task, architecture="test_efficientnet", class_names=["a", "b", "c"],
         preprocessing=pre, metrics={"accuracy": 0.9})
    blob, info = encode_delta(base, task, DeltaConfig("sparse", density=1.0, value_bits=32))
    n = pack_delta(tmp_path / "task.delta.slim", base_package=str(tmp_path / "base.slim"),
                   task_package=str(tmp_path / "task.slim"), blob=blob, info=info)
    pkg = read_package(tmp_path / "task.delta.slim")
    assert n == pkg.size_bytes == (tmp_path / "task.delta.slim").stat().st_size
    assert list(pkg.parts) == ["delta.bin"]
    m = pkg.manifest
    assert m["model"]["class_names"] == ["a", "b", "c"] and m["metrics"] == {"accuracy": 0.9}
    assert m["delta"]["base_package_sha256"] == read_package(tmp_path / "base.slim").package_sha256
    assert m["delta"]["base_graph_sha256"] == hashlib.sha256(base).hexdigest()
    assert m["delta"]["mode"] == "sparse" and m["delta"]["info"]["bytes"] == len(blob)
    assert load_task_onnx(tmp_path / "task.delta.slim", tmp_path / "base.slim") == task

    # a re-pack of the same base graph still fits (the graph is what the reconstruction depends on)
    pack(tmp_path / "base2.slim", onnx=base, architecture="x", class_names=list("abcdefghij"), preprocessing=pre, card="again")
    assert load_task_onnx(tmp_path / "task.delta.slim", tmp_path / "base2.slim") == task
    # another base is refused with a one-line message naming what to do
    with pytest.raises(PackageError, match="is not the base of .*pass the base package") as e:
        load_task_onnx(tmp_path / "task.delta.slim", tmp_path / "task.slim")
    assert "\n" not in str(e.value)
    with pytest.raises(PackageError, match="not a delta package"):
        load_task_onnx(tmp_path / "task.slim", tmp_path / "base.slim")
    with pytest.raises(ValueError, match="made against base graph"):
        pack_delta(tmp_path / "bad.slim", base_package=str(tmp_path / "task.slim"),
                   task_package=str(tmp_path / "task.slim"), blob=blob, info=info)
    assert not (tmp_path / "bad.slim").exists()
