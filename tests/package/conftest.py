"""Small hand-made ONNX graphs and packages for the hostile-input tests: no torch, built in milliseconds."""

from __future__ import annotations

import socket

import numpy as np
import pytest

SIZE, CHANNELS, CLASSES = 8, 3, 3  # a graph taking [batch, 3, 8, 8] and giving [batch, 3]


def tiny_graph(classes: int = CLASSES, size: int = SIZE, channels: int = CHANNELS, *, external: str | None = None,
               model=None) -> bytes:
    """Flatten → MatMul: input [batch, channels, size, size] → logits [batch, classes]. ``external`` stores the
    weight as external data in that file (what a package must never hold)."""
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", channels, size, size])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])
    w = numpy_helper.from_array(np.linspace(-1, 1, channels * size * size * classes, dtype=np.float32)
                                .reshape(-1, classes), "w")
    if external is not None:
        make_external(w, external)
    nodes = [helper.make_node("Flatten", ["input"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["logits"])]
    graph = helper.make_graph(nodes, "tiny", [x], [y], [w])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    if model is not None:
        model(m)  # let a test put something else in
    return m.SerializeToString()


def make_external(tensor, location: str) -> None:
    """Turn ``tensor`` into a reference to ``location`` (its bytes removed), as onnx's external-data saver does."""
    from onnx import TensorProto

    size = len(tensor.raw_data)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(size))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


def manifest(classes: int = CLASSES, **pre) -> dict:
    """A manifest as pack() writes it, for the tiny graph; ``pre`` overrides preprocessing values."""
    from slimship.data.transforms import ImagePreprocessing

    p = ImagePreprocessing(image_size=SIZE, channels=CHANNELS, mean=(0.5,) * 3, std=(0.25,) * 3).to_dict()
    return {"slimship_version": "0.1.0", "created": "2026-01-01T00:00:00+00:00",
            "model": {"architecture": "tiny", "num_classes": classes, "class_names": [f"c{i}" for i in range(classes)],
                      "arch_edits": {}, "runtime": "onnxruntime"},
            "preprocessing": {**p, **pre}, "recipe": {}, "metrics": {}, "card": ""}


@pytest.fixture(scope="session")
def graph_bytes() -> bytes:
    return tiny_graph()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3_endpoint(monkeypatch):
    """A moto S3 server on localhost with one bucket, "slimship"; skipped unless moto's server extras
    (flask, flask_cors), s3fs and boto3 are installed."""
    for module in ("moto", "moto.server", "flask", "flask_cors", "s3fs", "boto3"):
        pytest.importorskip(module)
    import boto3
    from moto.server import ThreadedMotoServer

    for key, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"),
                       ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="slimship")
        yield endpoint
    finally:
        server.stop()
