"""Tasks stored in a model store as deltas against a base package (``push_delta``): the rebuilt full package on
pull (fp16 within tolerance, lossless bit-exact), per-task bytes in ``stats``, the full-package fallback, the
refusals (base not in the store, a rebuild that flips a top-1 class, tampered blobs), and ``load_package`` on
a delta package with and without a findable base — on a local folder and on S3 (moto)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from slimship.data.transforms import ImagePreprocessing
from slimship.core.errors import PackageError
from slimship.package.format import read_package, sha256_file
from slimship.package.pack import load_package, pack
from slimship.package.store import Store, delta_config, push_delta

PRE = ImagePreprocessing(image_size=32, channels=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
X = np.random.default_rng(1).standard_normal((6, 3, 32, 32)).astype(np.float32)


def make_task_packages(root: Path) -> dict[str, Path]:
    """base.slim (10 classes) and, fine-tuned from it as base + a sparse change: task1.slim (5 % of the
    shared weights moved, 3 classes) and task2.slim (10 %, 4 classes); other.slim is an unrelated model."""
    import torch

    from slimship.models import create_model
    from slimship.models.export import export_onnx

    torch.manual_seed(0)
    base = create_model("test_efficientnet", 10, weights=None, image_size=32).model
    shared = base.state_dict()
    graphs = {"base": export_onnx(base, 32)}
    for name, seed, classes, moved in (("task1", 1, 3, 0.05), ("task2", 2, 4, 0.1), ("other", 3, 3, None)):
        torch.manual_seed(seed)
        model = create_model("test_efficientnet", classes, weights=None, image_size=32).model
        with torch.no_grad():
            for key, value in model.state_dict().items():
                if moved is not None and key in shared and shared[key].shape == value.shape:
                    value.copy_(shared[key])
                    if value.is_floating_point():
                        value.add_(0.02 * torch.randn_like(value) * (torch.rand_like(value) < moved))
        graphs[name] = export_onnx(model, 32)
    out = {}
    for name, graph in graphs.items():
        classes = 10 if name == "base" else (4 if name == "task2" else 3)
        out[name] = root / f"{name}.slim"
        pack(out[name], onnx=graph, architecture="test_efficientnet", class_names=[f"c{i}" for i in range(classes)],
             preprocessing=PRE, metrics={"accuracy": 0.5})
    return out


def logits(onnx: bytes) -> np.ndarray:
    from slimship.core.runtime import ort_session

    s = ort_session(onnx, threads=1)
    return s(X)


def graph_of(path) -> bytes:
    return read_package(path).read_part("model.onnx")


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> dict[str, Path]:
    return make_task_packages(tmp_path_factory.mktemp("delta-packages"))


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> Store:
    if request.param == "local":
        return Store(tmp_path / "store")
    endpoint = request.getfixturevalue("s3_endpoint")
    return Store("s3://slimship/tasks", storage_options={"client_kwargs": {"endpoint_url": endpoint},
                                                         "skip_instance_cache": True})


def _record(store: Store, package_id: str) -> dict:
    return json.loads(store._backend.read(f"packages/{package_id}.json"))


# ------------------------------------------------------------------------------------------ round trips


def test_base_and_two_tasks_push_pull_and_stats(store, packages, tmp_path):
    base = store.push(packages["base"], name="base", version="1")
    t1 = push_delta(store, packages["task1"], "base@1")  # the default: every changed entry as an fp16 delta
    t2 = push_delta(store, packages["task2"], packages["base"], name="task2", version="v1", mode="lossless")
    for r, name in ((t1, "task1"), (t2, "task2")):
        assert r.base == base.package and r.full_bytes == packages[name].stat().st_size
        assert r.size_bytes < r.full_bytes / 3  # only the changed entries cost anything
        assert r.check["inputs"] == 8 and r.check["top1_agreement"] == 1.0
        record = _record(store, r.package)
        assert record["base"] == base.package
        assert record["manifest"]["delta"]["info"]["full_bytes"] == r.full_bytes
    assert 0 < t1.check["max_abs_logit_diff"] < 1e-3 and not t1.check["bit_exact"]
    assert t2.check["max_abs_logit_diff"] == 0.0 and t2.check["bit_exact"]

    # pull: the full task package, rebuilt from base + delta, that loads like any package
    p1 = store.pull("task1", tmp_path / "t1.slim")
    p2 = store.pull("task2@v1", tmp_path / "t2.slim")
    assert p1.rebuilt_from == p2.rebuilt_from == base.package and p1.package == t1.package
    for pulled, name in ((p1, "task1"), (p2, "task2")):
        full = read_package(pulled.path)
        assert list(full.parts) == ["model.onnx"] and "delta" not in full.manifest
        assert full.manifest["rebuilt_from"] == {"base_package": base.package, "delta_package": pulled.package,
                                                 "mode": "sparse"}
        assert full.manifest["model"]["class_names"] == read_package(packages[name]).manifest["model"]["class_names"]
        assert pulled.size_bytes == Path(pulled.path).stat().st_size
    np.testing.assert_allclose(logits(load_package(p1.path).onnx), logits(graph_of(packages["task1"])),
                               rtol=1e-3, atol=1e-4)  # fp16 deltas
    assert load_package(p2.path).onnx == graph_of(packages["task2"])  # lossless: byte for byte

    # --raw: the delta package exactly as pushed
    raw = store.pull("task1", tmp_path / "raw.slim", raw=True)
    assert raw.rebuilt_from is None and raw.size_bytes == t1.size_bytes == Path(raw.path).stat().st_size
    assert sha256_file(raw.path) == t1.package and list(read_package(raw.path).parts) == ["delta.bin"]

    s = store.stats()
    assert s["packages"] == 3 and s["versions"] == 3  # the existing figures are still there
    assert s["logical_bytes"] == base.size_bytes + t1.size_bytes + t2.size_bytes
    rows = {(t["name"], t["version"]): t for t in s["tasks"]}
    assert rows[("base", "1")] == {"name": "base", "version": "1", "package": base.package,
                                  "stored_bytes": base.size_bytes, "delta": False, "base": None,
                                  "base_package": None, "full_bytes": base.size_bytes}
    assert rows[("task2", "v1")]["delta"] and rows[("task2", "v1")]["base"] == "base@1"
    assert rows[("task2", "v1")]["stored_bytes"] == t2.size_bytes and rows[("task2", "v1")]["full_bytes"] == t2.full_bytes
    assert s["full_package_bytes"] == base.size_bytes + t1.full_bytes + t2.full_bytes
    assert s["delta_saved_bytes"] == s["full_package_bytes"] - s["logical_bytes"] > 0
    assert 0 < s["delta_saved_fraction"] < 1


def test_pushing_the_same_task_again_is_the_same_package(packages, tmp_path):
    store = Store(tmp_path / "store")
    store.push(packages["base"], name="base")
    first = push_delta(store, packages["task1"], "base", version="1")
    again = push_delta(store, packages["task1"], "base", name="copy")
    assert again.package == first.package and again.blobs_written == 0  # deterministic encoding and check


def test_a_delta_no_smaller_than_the_package_is_stored_whole(packages, tmp_path):
    store = Store(tmp_path / "store")
    store.push(packages["base"], name="base")
    r = push_delta(store, packages["other"], "base", mode="lossless")  # unrelated weights: nothing to gain
    assert r.base is None and "full package was stored" in r.note
    assert r.package == sha256_file(packages["other"]) and r.size_bytes == r.full_bytes
    assert "base" not in _record(store, r.package)
    assert store.pull("other", tmp_path / "o.slim").rebuilt_from is None
    assert sha256_file(tmp_path / "o.slim") == sha256_file(packages["other"])


def test_raw_delta_package_pushed_elsewhere_finds_its_base(packages, tmp_path):
    one, two = Store(tmp_path / "one"), Store(tmp_path / "two")
    base = one.push(packages["base"], name="base")
    push_delta(one, packages["task1"], "base")
    raw = one.pull("task1", tmp_path / "task1.delta.slim", raw=True)
    with pytest.raises(PackageError, match="push the base package first") as e:
        two.push(raw.path, name="task1")
    assert "\n" not in str(e.value)
    two.push(packages["base"], name="b")
    assert two.push(raw.path, name="task1").base == base.package  # found among the store's records
    assert load_package(two.pull("task1", tmp_path / "t.slim").path).class_names == ["c0", "c1", "c2"]
    with pytest.raises(PackageError, match="is a full package"):
        two.push(packages["task1"], name="x", base=base.package)


# ------------------------------------------------------------------------------------------- refusals


def test_a_base_not_in_the_store_is_refused(packages, tmp_path):
    store = Store(tmp_path / "store")
    with pytest.raises(PackageError, match="push the base first"):
        push_delta(store, packages["task1"], "base")  # empty store
    with pytest.raises(PackageError, match="push the base first"):
        push_delta(store, packages["task1"], packages["base"])
    store.push(packages["task2"], name="task2")
    with pytest.raises(PackageError, match=r"is not in store .*push the base first \(slimship push"):
        push_delta(store, packages["task1"], packages["base"])  # a local file the store lacks
    with pytest.raises(PackageError, match="no package named 'base'.*push it first"):
        push_delta(store, packages["task1"], "base@1")
    with pytest.raises(PackageError, match="does not exist"):
        push_delta(store, packages["task1"], tmp_path / "missing.slim")
    with pytest.raises(PackageError, match="unknown delta mode"):
        delta_config("int3")
    assert [e.name for e in store.list()] == ["task2"]  # nothing was stored


def test_a_base_stored_as_a_delta_is_refused(packages, tmp_path):
    store = Store(tmp_path / "store")
    store.push(packages["base"], name="base")
    push_delta(store, packages["task1"], "base")
    with pytest.raises(PackageError, match="itself a delta package"):
        push_delta(store, packages["task2"], "task1")
    raw = store.pull("task1", tmp_path / "raw.slim", raw=True)
    with pytest.raises(PackageError, match="already a delta package"):
        push_delta(store, raw.path, "base")


def test_a_rebuild_that_flips_a_top1_class_is_refused(packages, tmp_path, monkeypatch):
    """The check runs both graphs in ONNX Runtime: a reconstruction that changes a predicted class on any
    check input is refused, and the message suggests the lossless mode."""
    import onnx
    from onnx import numpy_helper

    import slimship.package.delta as delta

    task = graph_of(packages["task1"])
    model = onnx.load_from_string(task)
    bias = next(t for t in model.graph.initializer if t.name == "classifier.bias")
    value = numpy_helper.to_array(bias).copy()
    value[(int(logits(task)[0].argmax()) + 1) % 3] += 1000.0  # one class now always wins
    bias.CopyFrom(numpy_helper.from_array(value, bias.name))
    broken = model.SerializeToString()
    monkeypatch.setattr(delta, "apply_delta", lambda base, blob: broken)
    store = Store(tmp_path / "store")
    store.push(packages["base"], name="base")
    with pytest.raises(PackageError, match=r"changes the top-1 class on [1-8] of 8 check inputs.*--delta lossless"):
        push_delta(store, packages["task1"], "base")
    assert [e.name for e in store.list()] == ["base"]


def test_tampered_delta_or_base_blob_is_refused_on_pull(store, packages, tmp_path):
    base = store.push(packages["base"], name="base")
    t1 = push_delta(store, packages["task1"], "base")
    delta_blob = _record(store, t1.package)["parts"][0]["blob"]
    key = f"blobs/sha256/{delta_blob}"
    good = store._backend.read(key)
    store._backend.write(key, good[:-1] + bytes([good[-1] ^ 1]))
    for raw in (False, True):
        with pytest.raises(PackageError, match="corrupted"):
            store.pull("task1", tmp_path / "t.slim", raw=raw)
    assert not (tmp_path / "t.slim").exists()
    store._backend.write(key, good)
    graph_blob = _record(store, base.package)["parts"][0]["blob"]
    key = f"blobs/sha256/{graph_blob}"
    store._backend.write(key, store._backend.read(key)[:-1])
    with pytest.raises(PackageError, match="corrupted"):
        store.pull("task1", tmp_path / "t.slim")  # the base is verified like any pulled package
    assert not (tmp_path / "t.slim").exists()


# ------------------------------------------------------------------------------------------ load_package


def test_load_package_finds_the_base_next_to_a_delta_package(packages, tmp_path):
    store = Store(tmp_path / "store")
    store.push(packages["base"], name="base")
    push_delta(store, packages["task2"], "base", mode="lossless")
    alone = tmp_path / "alone"
    alone.mkdir()
    delta_path = store.pull("task2", alone / "task2.slim", raw=True).path
    want = read_package(packages["base"]).package_sha256
    with pytest.raises(PackageError, match=f"its base \\(package sha256 {want}\\).*--base") as e:
        load_package(delta_path)
    assert "\n" not in str(e.value)

    task = graph_of(packages["task2"])
    assert load_package(delta_path, base=packages["base"]).onnx == task  # explicit base, anywhere
    shutil.copy(packages["base"], alone / "some-name.slim")
    (alone / "notes.slim").write_text("not a package")  # unreadable neighbours are skipped
    loaded = load_package(delta_path)  # found by its package hash in the same folder
    assert loaded.onnx == task and loaded.class_names == ["c0", "c1", "c2", "c3"]
    assert loaded.logits(np.zeros((2, 32, 32, 3), np.uint8)).shape == (2, 4)

    with pytest.raises(PackageError, match="is not the base of"):
        load_package(delta_path, base=packages["task1"])
    with pytest.raises(PackageError, match="is a full package.*drop --base"):
        load_package(packages["task1"], base=packages["base"])
    assert hashlib.sha256(task).hexdigest() != read_package(delta_path).manifest["delta"]["base_graph_sha256"]
