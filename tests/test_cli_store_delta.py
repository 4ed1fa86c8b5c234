"""``slimship push --base``, ``pull [--raw]``, ``store stats`` per task, and ``eval/predict/inspect/export`` on
delta packages from the command line, with their one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from slimship.package.format import read_package, sha256_file
from slimship.package.pack import load_package
from tests.package.conftest import s3_endpoint  # noqa: F401  (a fixture: the moto S3 server)
from tests.package.test_store_delta import make_task_packages
from tests.test_cli_store import _ok, _one_line_error


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> dict[str, Path]:
    return make_task_packages(tmp_path_factory.mktemp("cli-delta-packages"))


def _push_base_and_tasks(capsys, packages, store) -> dict:
    _ok(capsys, "push", packages["base"], store, "--name", "base", "--tag", "1")
    out = _ok(capsys, "push", packages["task1"], store, "--base", "base@1")
    assert out.startswith("pushed task1@") and "as a delta against base@1" in out and "% of the full" in out
    assert "top-1 agreement 100 %" in out
    r = json.loads(_ok(capsys, "push", packages["task2"], store, "--base", packages["base"], "--delta", "lossless",
                       "--tag", "v1", "--json"))
    assert r["base"] == sha256_file(packages["base"]) and r["check"]["bit_exact"] and r["full_bytes"] > r["size_bytes"]
    return r


def test_push_tasks_pull_full_or_raw_and_stats(capsys, packages, tmp_path):
    store = tmp_path / "store"
    _push_base_and_tasks(capsys, packages, store)

    out = _ok(capsys, "pull", "task2@v1", store, "-o", tmp_path / "t2.slim")
    assert "rebuilt against its base" in out and "full package" in out
    assert load_package(tmp_path / "t2.slim").onnx == read_package(packages["task2"]).read_part("model.onnx")
    pulled = json.loads(_ok(capsys, "pull", "task1", store, "--out", tmp_path / "t1.slim", "--json"))
    assert pulled["rebuilt_from"] == sha256_file(packages["base"])
    (tmp_path / "raw").mkdir()
    raw = json.loads(_ok(capsys, "pull", "task1", store, "-o", tmp_path / "raw", "--raw", "--json"))
    assert raw["rebuilt_from"] is None and sha256_file(raw["path"]) == raw["package"]
    assert list(read_package(raw["path"]).parts) == ["delta.bin"]

    text = _ok(capsys, "store", "stats", store)
    assert "bytes per package" in text  # the existing figures stay
    assert "delta of base@1" in text and "deltas save" in text
    s = json.loads(_ok(capsys, "store", "stats", store, "--json"))
    assert s["packages"] == 3 and s["delta_saved_bytes"] > 0
    assert [(t["name"], t["delta"], t["base"]) for t in s["tasks"]] == [
        ("base", False, None), ("task1", True, "base@1"), ("task2", True, "base@1")]

    # the rebuilt package is an ordinary one; the raw delta package works given its base
    info = json.loads(_ok(capsys, "inspect", tmp_path / "t1.slim", "--json"))
    assert info["delta"] is None and info["rebuilt_from"]["delta_package"] == pulled["package"]
    assert "rebuilt from base package id" in _ok(capsys, "inspect", tmp_path / "t1.slim")
    raw_info = _ok(capsys, "inspect", raw["path"])
    assert "delta (sparse, fp16) against base package" in raw_info and "--base" in raw_info
    images = []
    for i in range(2):
        images.append(tmp_path / f"img{i}.png")
        Image.fromarray(np.full((32, 32, 3), 60 * i, np.uint8)).save(images[-1])
    full = json.loads(_ok(capsys, "predict", tmp_path / "t1.slim", *images, "--json"))
    via_base = json.loads(_ok(capsys, "predict", raw["path"], *images, "--base", packages["base"], "--json"))
    assert [r["top"][0]["class"] for r in via_base] == [r["top"][0]["class"] for r in full]
    _ok(capsys, "export", raw["path"], "--base", packages["base"], "--onnx", tmp_path / "t1.onnx")
    assert (tmp_path / "t1.onnx").read_bytes() == load_package(tmp_path / "t1.slim").onnx
    data = tmp_path / "eval.npz"
    np.savez(data, x_train=np.zeros((3, 32, 32, 3), np.uint8), y_train=np.arange(3),
             x_test=np.zeros((3, 32, 32, 3), np.uint8), y_test=np.arange(3), class_names=np.array(["c0", "c1", "c2"]))
    r = json.loads(_ok(capsys, "eval", raw["path"], "--base", packages["base"], "--data", data, "--json"))
    assert r["images"] == 3 and r["recorded_accuracy"] == 0.5


def test_delta_errors_are_one_line(capsys, packages, tmp_path):
    store = tmp_path / "store"
    _one_line_error(capsys, ["push", packages["task1"], store, "--base", "base"], "push the base first")
    _ok(capsys, "push", packages["task2"], store)
    _one_line_error(capsys, ["push", packages["task1"], store, "--base", packages["base"]], "push the base first")
    _one_line_error(capsys, ["push", packages["task1"], store, "--base", "base@1"], "push it first")
    _ok(capsys, "push", packages["base"], store, "--name", "base")
    _one_line_error(capsys, ["push", packages["task1"], store, "--delta", "lossless"], "--delta needs --base")
    _one_line_error(capsys, ["push", packages["task1"], store, "--base", "base", "--delta", "int3"],
                    "unknown delta mode")
    _ok(capsys, "push", packages["task1"], store, "--base", "base")

    raw = tmp_path / "alone" / "task1.slim"
    raw.parent.mkdir()
    _ok(capsys, "pull", "task1", store, "-o", raw, "--raw")
    want = read_package(packages["base"]).package_sha256
    for argv in (["predict", raw, packages["base"]], ["export", raw, "--onnx", tmp_path / "x.onnx"],
                 ["eval", raw, "--data", tmp_path / "none.npz"]):
        _one_line_error(capsys, argv, f"its base (package sha256 {want}) is not in its folder")
    _one_line_error(capsys, ["export", packages["task1"], "--base", packages["base"], "--onnx", tmp_path / "x.onnx"],
                    "drop --base")
    _one_line_error(capsys, ["predict", raw, packages["base"], "--base", packages["task2"]], "is not the base of")
    assert not (tmp_path / "x.onnx").exists()

    record = json.loads((store / "packages" / f"{sha256_file(raw)}.json").read_text())
    blob = store / "blobs" / "sha256" / record["parts"][0]["blob"]
    blob.write_bytes(blob.read_bytes()[:-1] + b"!")
    _one_line_error(capsys, ["pull", "task1", store, "-o", tmp_path / "t.slim"], "corrupted")
    assert not (tmp_path / "t.slim").exists()


def test_delta_tasks_on_s3_through_the_cli(capsys, packages, tmp_path, s3_endpoint, monkeypatch):  # noqa: F811
    monkeypatch.setenv("SLIMSHIP_S3_ENDPOINT", s3_endpoint)
    url = "s3://slimship/cli-tasks"
    _push_base_and_tasks(capsys, packages, url)
    _ok(capsys, "pull", "task1", url, "-o", tmp_path / "t1.slim")
    assert read_package(tmp_path / "t1.slim").manifest["rebuilt_from"]["base_package"] == sha256_file(packages["base"])
    assert json.loads(_ok(capsys, "store", "stats", url, "--json"))["delta_saved_bytes"] > 0
