"""A package records the runtime it was judged fastest in; ``slimship.load`` runs it there, and in ONNX Runtime
when that runtime is not installed (or the package names one this slimship does not know)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import slimship
from slimship.core.errors import SlimshipError
from slimship.core.runtime import OrtSession
from slimship.data.transforms import ImagePreprocessing
from slimship.package.format import read_package
from slimship.package.pack import load_package, pack
from tests.core.test_runtimes import _graphs, needs_openvino

PRE = ImagePreprocessing(image_size=32, channels=1, mean=(0.5,) * 3, std=(0.25,) * 3)


def _package(tmp_path, runtime: str, graph: bytes | None = None):
    path = tmp_path / f"{runtime}.slim"
    pack(path, onnx=graph or _graphs()[1], architecture="test_efficientnet", class_names=["a", "b", "c"],
         preprocessing=PRE, runtime=runtime)
    return path


def _images(n: int = 8) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (n, 32, 32, 1), dtype=np.uint8)


@needs_openvino
def test_the_package_records_its_runtime_and_load_runs_it_there(tmp_path):
    from slimship.core.runtime_openvino import OpenVinoSession

    ov_path, ort_path = _package(tmp_path, "openvino"), _package(tmp_path, "onnxruntime")
    assert read_package(ov_path).manifest["model"]["runtime"] == "openvino"
    assert read_package(ort_path).manifest["model"]["runtime"] == "onnxruntime"
    ov, ort = slimship.load(ov_path), slimship.load(ort_path)
    assert (ov.runtime, ort.runtime) == ("openvino", "onnxruntime")
    assert isinstance(ov.session, OpenVinoSession) and isinstance(ort.session, OrtSession)
    a, b = ov.logits(_images()), ort.logits(_images())
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.9 and np.abs(a - b).max() < 0.1 * np.abs(b).max()
    # asked for explicitly, either runtime runs either package
    assert isinstance(load_package(ov_path, runtime="onnxruntime").session, OrtSession)


def test_without_openvino_a_package_judged_fastest_there_runs_in_onnx_runtime(tmp_path, monkeypatch):
    path = _package(tmp_path, "openvino")
    want = load_package(path, runtime="onnxruntime").logits(_images())
    monkeypatch.setitem(sys.modules, "openvino", None)  # as where openvino is not installed
    pkg = slimship.load(path)
    assert pkg.runtime == "onnxruntime" and isinstance(pkg.session, OrtSession)
    np.testing.assert_array_equal(pkg.logits(_images()), want)
    with pytest.raises(SlimshipError, match="'openvino' is not installed"):
        load_package(path, runtime="openvino")


def test_a_runtime_this_slimship_does_not_know_falls_back_to_onnx_runtime(tmp_path):
    path = _package(tmp_path, "some-future-engine")
    assert slimship.load(path).runtime == "onnxruntime" and slimship.load(path).logits(_images()).shape == (8, 3)


def _table_package(tmp_path, table: dict, runtime: str = "openvino"):
    path = tmp_path / "table.slim"
    pack(path, onnx=_graphs()[1], architecture="test_efficientnet", class_names=["a", "b", "c"], preprocessing=PRE,
         runtime=runtime, runtime_by_batch=table)
    return path


@needs_openvino
def test_a_package_runs_each_batch_in_the_runtime_recorded_for_the_nearest_batch_size(tmp_path):
    from slimship.core.runtime import SessionsByBatch
    from slimship.core.runtime_openvino import OpenVinoSession

    path = _table_package(tmp_path, {1: "onnxruntime", 64: "openvino"})
    assert read_package(path).manifest["model"]["runtime_by_batch"] == {"1": "onnxruntime", "64": "openvino"}
    pkg = slimship.load(path)
    assert pkg.runtime == "openvino" and pkg.runtimes_used() == {1: "onnxruntime", 64: "openvino"}
    sess = pkg.session
    assert isinstance(sess, SessionsByBatch) and sess.sessions == {}  # each runtime loaded when first needed
    x = PRE.model_input_np(PRE.prepare(_images(16)).numpy())
    small = sess(x[:2])
    assert list(sess.sessions) == ["onnxruntime"] and isinstance(sess.sessions["onnxruntime"], OrtSession)
    big = sess(x)
    assert isinstance(sess.sessions["openvino"], OpenVinoSession)
    # the same graph either way: batch 2 in ONNX Runtime, batch 16 in OpenVINO
    np.testing.assert_allclose(small, big[:2], rtol=0, atol=0.1 * np.abs(big).max())
    assert np.array_equal(pkg.logits(_images(16), batch_size=2).argmax(1), pkg.logits(_images(16)).argmax(1))
    # asked for one runtime explicitly, every batch runs there
    one = load_package(path, runtime="onnxruntime")
    assert one.runtimes_used() == {1: "onnxruntime"} and isinstance(one.session, OrtSession)


def test_a_table_naming_a_missing_runtime_runs_those_batches_in_onnx_runtime(tmp_path, monkeypatch):
    path = _table_package(tmp_path, {1: "onnxruntime", 64: "openvino"})
    monkeypatch.setitem(sys.modules, "openvino", None)  # as where openvino is not installed
    pkg = slimship.load(path)
    assert pkg.runtime == "onnxruntime" and pkg.runtimes_used() == {1: "onnxruntime", 64: "onnxruntime"}
    assert isinstance(pkg.session, OrtSession) and pkg.logits(_images(16)).shape == (16, 3)


def test_a_package_without_a_table_runs_every_batch_in_its_runtime(tmp_path):
    pkg = slimship.load(_package(tmp_path, "onnxruntime"))
    assert "runtime_by_batch" not in pkg.manifest["model"]
    assert pkg.runtimes_used() == {1: "onnxruntime"} and isinstance(pkg.session, OrtSession)


@pytest.mark.parametrize("table", [["openvino"], {"0": "openvino"}, {"x": "openvino"}, {"1": 5},
                                   {"1": "open\x1bvino"}, {str(b): "onnxruntime" for b in range(1, 100)}])
def test_a_malformed_runtime_table_is_refused(table, tmp_path):
    from slimship.core.errors import PackageError
    from slimship.package.manifest import check_manifest

    manifest = read_package(_package(tmp_path, "onnxruntime")).manifest
    manifest["model"]["runtime_by_batch"] = table
    with pytest.raises(PackageError, match="runtime_by_batch"):
        check_manifest(manifest, None, "x.slim")


def test_inspect_shows_the_runtime_of_each_batch_size(tmp_path, capsys):
    from slimship.cli.main import main

    path = _table_package(tmp_path, {1: "onnxruntime", 64: "openvino"})
    assert main(["inspect", str(path)]) == 0
    assert "runtime onnxruntime at batch 1, openvino at batch 64 ·" in capsys.readouterr().out
