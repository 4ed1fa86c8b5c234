"""``slimship export``, ``push``, ``pull`` and ``store list|stats`` from the command line, and their one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from slimship.cli.main import main
from slimship.data.transforms import ImagePreprocessing
from slimship.package.format import sha256_file
from slimship.package.pack import load_package, pack

PRE = ImagePreprocessing(image_size=32, channels=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> dict[str, Path]:
    """fp32 packages "a" and "b" sharing one deploy graph, an int8 (QDQ) package "q", and "w" holding the
    fp32 graph with slimship's compressed weight encoding (graph.onnx + weights.bin)."""
    from slimship.compress.int8 import Int8Config
    from slimship.compress.int8.quantize import quantize_int8
    from slimship.models import create_model
    from slimship.models.export import export_onnx

    fp32 = export_onnx(create_model("test_efficientnet", 3, weights=None, image_size=32).model, 32)
    int8 = quantize_int8(fp32, np.zeros((32, 3, 32, 32), np.float32), lambda _: 0.5,
                         Int8Config(calibration=["minmax"], calibration_images=32), log=lambda _: None).onnx
    root = tmp_path_factory.mktemp("cli-packages")
    out = {}
    for name, graph, classes, encode in (("a", fp32, ["cat", "dog", "cow"], False), ("b", fp32, ["x", "y", "z"], False),
                                         ("q", int8, ["cat", "dog", "cow"], False), ("w", fp32, ["x", "y", "z"], True)):
        out[name] = root / f"{name}.slim"
        pack(out[name], onnx=graph, architecture="test", class_names=classes, preprocessing=PRE, encode_weights=encode)
    return out


def _ok(capsys, *argv: str) -> str:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def _one_line_error(capsys, argv: list, phrase: str) -> str:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("slimship: error: ") and phrase in err, err
    return err


# ------------------------------------------------------------------------------------------- export


@pytest.mark.parametrize("which", ["a", "q", "w"])
def test_export_writes_runnable_onnx_and_matching_safetensors(capsys, packages, tmp_path, which):
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper
    from safetensors.numpy import load_file
    from safetensors import safe_open

    onnx_path, st_path = tmp_path / "deploy" / "model.onnx", tmp_path / "model.safetensors"
    out = _ok(capsys, "export", packages[which], "--onnx", onnx_path, "--safetensors", st_path)
    assert str(onnx_path) in out and "tensors" in out
    assert onnx_path.read_bytes() == load_package(packages[which]).onnx  # the exact deploy graph
    if which == "w":  # stored as skeleton + encoded weights; exported whole
        assert {"graph.onnx", "weights.bin"} <= set(load_package(packages[which]).package.parts)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: np.zeros((2, 3, 32, 32), np.float32)})[0]
    assert logits.shape == (2, 3) and np.isfinite(logits).all()

    expected = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(onnx_path)).graph.initializer}
    tensors = load_file(st_path)
    assert set(tensors) == set(expected) and len(tensors) > 10
    for name, value in expected.items():
        assert tensors[name].dtype == value.dtype and tensors[name].shape == value.shape, name
        np.testing.assert_array_equal(tensors[name], value, err_msg=name)
    dtypes = {str(t.dtype) for t in tensors.values()}
    assert dtypes == ({"float32", "int8", "uint8", "int32"} if which == "q" else {"float32"})
    with safe_open(st_path, "np") as f:
        meta = f.metadata()
    assert meta["source_package_sha256"] == load_package(packages[which]).package.package_sha256
    assert not [p for p in tmp_path.rglob(".*")]  # no temporary files left


def test_export_errors_are_one_line(capsys, packages, tmp_path):
    _one_line_error(capsys, ["export", packages["a"]], "nothing to export")
    _one_line_error(capsys, ["export", tmp_path / "missing.slim", "--onnx", tmp_path / "m.onnx"], "does not exist")
    notes = tmp_path / "notes.slim"
    notes.write_text("hello")
    _one_line_error(capsys, ["export", notes, "--onnx", tmp_path / "m.onnx"], "not a slimship package")
    _one_line_error(capsys, ["export", packages["a"], "--onnx", tmp_path], "is a folder")
    from slimship.package.format import write_package

    write_package(tmp_path / "nograph.slim", {}, {"labels.txt": b"a\n"})
    _one_line_error(capsys, ["export", tmp_path / "nograph.slim", "--onnx", tmp_path / "m.onnx"], "no deploy graph")
    assert not (tmp_path / "m.onnx").exists()


# ------------------------------------------------------------------------------------------- store


def test_push_pull_list_stats(capsys, packages, tmp_path):
    store = tmp_path / "store"
    out = _ok(capsys, "push", packages["a"], store, "--name", "clf", "--tag", "1.0")
    assert out.startswith("pushed clf@1.0 (sha256:")
    pushed = json.loads(_ok(capsys, "push", packages["b"], store, "--name", "clf", "--tag", "2.0", "--json"))
    assert pushed["version"] == "2.0" and pushed["blobs_written"] == 1  # the graph was already stored
    _ok(capsys, "push", packages["a"], store)  # default name "a", default version = sha prefix

    pulled = json.loads(_ok(capsys, "pull", "clf@1.0", store, "--out", tmp_path / "one.slim", "--json"))
    assert sha256_file(pulled["path"]) == sha256_file(packages["a"]) == pulled["package"]
    assert "verified" in _ok(capsys, "pull", "clf", store, "--out", tmp_path / "latest.slim")
    assert sha256_file(tmp_path / "latest.slim") == sha256_file(packages["b"])
    prefix = sha256_file(packages["a"])[:12]
    _ok(capsys, "pull", f"clf@sha256:{prefix}", store, "--out", tmp_path)
    assert sha256_file(tmp_path / "clf.slim") == sha256_file(packages["a"])
    _ok(capsys, "verify", tmp_path / "clf.slim")

    listed = json.loads(_ok(capsys, "store", "list", store, "--json"))
    assert [(e["name"], e["version"], e["latest"]) for e in listed] == [
        ("a", prefix, True), ("clf", "1.0", False), ("clf", "2.0", True)]
    text = _ok(capsys, "store", "list", store)
    assert "clf@2.0" in text and "(latest)" in text
    stats = json.loads(_ok(capsys, "store", "stats", store, "--json"))
    assert stats["packages"] == 2 and stats["versions"] == 3 and stats["blobs"] == 3
    assert stats["physical_bytes"] < stats["logical_bytes"] == sum(os.path.getsize(packages[k]) for k in "ab")
    assert "bytes per package" in _ok(capsys, "store", "stats", store)


def test_store_errors_are_one_line(capsys, packages, tmp_path):
    store = tmp_path / "store"
    _ok(capsys, "push", packages["a"], store, "--name", "clf", "--tag", "1")
    _one_line_error(capsys, ["pull", "nobody", store, "--out", tmp_path / "x.slim"], "no package named 'nobody'")
    _one_line_error(capsys, ["pull", "clf@7", store], "no version '7'")
    _one_line_error(capsys, ["pull", "clf", tmp_path / "nowhere"], "does not exist")
    _one_line_error(capsys, ["store", "list", tmp_path / "nowhere"], "does not exist")
    _one_line_error(capsys, ["store", "stats", tmp_path / "nowhere"], "does not exist")
    _one_line_error(capsys, ["store"], "store list STORE")
    notes = tmp_path / "notes.slim"
    notes.write_text("hello")
    _one_line_error(capsys, ["push", notes, store], "not a slimship package")
    _one_line_error(capsys, ["push", packages["b"], store, "--name", "clf", "--tag", "1"], "already exists")
    _one_line_error(capsys, ["push", packages["b"], store, "--name", "bad/name"], "bad package name")
    blob = next((store / "blobs" / "sha256").iterdir())
    blob.write_bytes(blob.read_bytes() + b"!")
    _one_line_error(capsys, ["pull", "clf", store, "--out", tmp_path / "x.slim"], "corrupted")
    assert not (tmp_path / "x.slim").exists()


def test_console_entry_point_prints_one_line(packages, tmp_path):
    """The real `python -m slimship.cli.main` process, as a user runs it."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    p = subprocess.run([sys.executable, "-m", "slimship.cli.main", "pull", "clf", str(tmp_path / "none")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "does not exist" in p.stderr, p.stderr


def test_memory_store_through_the_cli(capsys, packages, tmp_path):
    pytest.importorskip("fsspec")
    url = f"memory://slimship-cli-{os.getpid()}/store"
    _ok(capsys, "push", packages["q"], url, "--name", "q")
    _ok(capsys, "pull", "q", url, "--out", tmp_path / "q.slim")
    assert sha256_file(tmp_path / "q.slim") == sha256_file(packages["q"])
    import fsspec

    fsspec.filesystem("memory").rm(f"/slimship-cli-{os.getpid()}", recursive=True)


def test_s3_endpoint_from_environment(capsys, packages, tmp_path, monkeypatch):
    """SLIMSHIP_S3_ENDPOINT points the CLI at an S3-compatible server (a local moto server here)."""
    for module in ("moto", "moto.server", "flask", "flask_cors", "s3fs", "boto3"):
        pytest.importorskip(module)
    import socket

    import boto3
    from moto.server import ThreadedMotoServer

    for key, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"),
                       ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(key, value)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="cli")
        monkeypatch.setenv("SLIMSHIP_S3_ENDPOINT", endpoint)
        _ok(capsys, "push", packages["a"], "s3://cli/models", "--name", "clf", "--tag", "1")
        _ok(capsys, "pull", "clf@1", "s3://cli/models", "--out", tmp_path / "a.slim")
        assert sha256_file(tmp_path / "a.slim") == sha256_file(packages["a"])
        assert json.loads(_ok(capsys, "store", "stats", "s3://cli/models", "--json"))["packages"] == 1
        assert "intact (1 version, 1 package, 2 blobs checked" in _ok(capsys, "store", "check", "s3://cli/models")  # blobs re-hashed
    finally:
        server.stop()
