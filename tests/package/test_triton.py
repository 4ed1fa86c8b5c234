"""``slimship export --triton``: the model repository entry, checked against Triton's own model-config schema.

``tritonclient`` ships the generated protobuf module of Triton's model_config.proto; it is loaded from its file
(tritonclient.grpc's __init__ needs grpcio, which only a gRPC client needs) and the written config.pbtxt is parsed
with protobuf's text format, which refuses unknown fields, wrong types and bad enum values.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from slimship.api import load
from slimship.cli.main import main
from slimship.core.errors import SlimshipError
from slimship.package.triton import _signature, export_triton
from tests.conftest import make_images

FIXTURES = Path(__file__).parent.parent / "fixtures" / "slim-v0.1"


@pytest.fixture(scope="module")
def model_config_pb2():
    import tritonclient

    path = Path(tritonclient.__file__).parent / "grpc" / "model_config_pb2.py"
    spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _parse(pb2, path: Path):
    from google.protobuf import text_format

    return text_format.Parse(path.read_text(encoding="utf-8"), pb2.ModelConfig())


def test_triton_config_follows_the_schema_and_describes_the_graph(tmp_path, model_config_pb2, capsys):
    repo = tmp_path / "repo"
    assert main(["export", str(FIXTURES / "int8.slim"), "--triton", str(repo), "--triton-name", "bars",
                 "--triton-max-batch", "16", "--triton-max-wait-us", "500", "--onnx", str(tmp_path / "m.onnx")]) == 0
    assert "wrote Triton model 'bars'" in capsys.readouterr().out
    cfg = _parse(model_config_pb2, repo / "bars" / "config.pbtxt")
    T = model_config_pb2.DataType
    assert cfg.name == "bars" and cfg.backend == "onnxruntime" and cfg.max_batch_size == 16
    assert [(i.name, i.data_type, list(i.dims)) for i in cfg.input] == [("input", T.Value("TYPE_FP32"), [3, 32, 32])]
    assert [(o.name, o.data_type, list(o.dims)) for o in cfg.output] == [("logits", T.Value("TYPE_FP32"), [3])]
    assert cfg.output[0].label_filename == "labels.txt"
    assert (repo / "bars" / "labels.txt").read_text().splitlines() == ["top", "middle", "bottom"]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 500
    assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.Kind.Value("KIND_CPU")
    assert not cfg.optimization.execution_accelerators.cpu_execution_accelerator  # the package records ORT
    # the model file is the deploy graph, the same bytes `export --onnx` writes
    assert (repo / "bars" / "1" / "model.onnx").read_bytes() == (tmp_path / "m.onnx").read_bytes()
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    assert json.loads(params["slimship.classes"]) == ["top", "middle", "bottom"]
    assert "bilinear" in params["slimship.preprocessing.steps"] and "NCHW" in params["slimship.preprocessing.steps"]
    assert not [p for p in repo.iterdir() if p.name.startswith(".")]  # no temporary folder left behind


def test_a_client_reproduces_the_package_from_the_config_alone(tmp_path, model_config_pb2):
    """Preprocess with nothing but the config's parameters, run model.onnx in ONNX Runtime: the package's logits."""
    import onnxruntime as ort

    t = export_triton(FIXTURES / "sparse-kmeans.slim", tmp_path / "repo")
    cfg = _parse(model_config_pb2, Path(t.path) / "config.pbtxt")
    pre = json.loads(cfg.parameters["slimship.preprocessing"].string_value)
    x, _ = make_images(3, seed=1, size=pre["image_size"])  # at the input size: the resize is a no-op
    batch = np.repeat(x.astype(np.float32) / 255.0, 3, axis=3).transpose(0, 3, 1, 2)
    batch = (batch - np.array(pre["mean"], np.float32).reshape(1, 3, 1, 1)) / np.array(pre["std"], np.float32).reshape(1, 3, 1, 1)
    sess = ort.InferenceSession(str(Path(t.path) / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run([cfg.output[0].name], {cfg.input[0].name: batch.astype(np.float32)})[0]
    np.testing.assert_allclose(got, load(FIXTURES / "sparse-kmeans.slim").logits(x), rtol=1e-5, atol=1e-5)


def test_openvino_accelerator_and_delta_packages(tmp_path, model_config_pb2):
    t = export_triton(FIXTURES / "base.slim", tmp_path / "r", accelerator="openvino")
    cfg = _parse(model_config_pb2, Path(t.path) / "config.pbtxt")
    assert [a.name for a in cfg.optimization.execution_accelerators.cpu_execution_accelerator] == ["openvino"]
    assert t.accelerator == "openvino" and t.name == "base"
    # a delta package is exported as its rebuilt task (the CLI finds the base next to it)
    assert main(["export", str(FIXTURES / "finetuned-delta.delta.slim"), "--triton", str(tmp_path / "r"),
                 "--triton-name", "task"]) == 0
    task = _parse(model_config_pb2, tmp_path / "r" / "task" / "config.pbtxt")
    assert list(task.output[0].dims) == [3]
    with pytest.raises(SlimshipError, match="delta package"):
        export_triton(FIXTURES / "finetuned-delta.delta.slim", tmp_path / "r2")


def test_existing_model_folders_and_bad_names_are_refused(tmp_path, capsys):
    export_triton(FIXTURES / "int8.slim", tmp_path)
    before = (tmp_path / "int8" / "config.pbtxt").read_bytes()
    assert main(["export", str(FIXTURES / "sparse-kmeans.slim"), "--triton", str(tmp_path), "--triton-name", "int8"]) == 2
    assert "exists already" in capsys.readouterr().err
    assert (tmp_path / "int8" / "config.pbtxt").read_bytes() == before
    with pytest.raises(SlimshipError, match="Triton model name"):
        export_triton(FIXTURES / "int8.slim", tmp_path, name="../escape")
    assert main(["export", str(FIXTURES / "int8.slim")]) == 2
    assert "--triton DIR" in capsys.readouterr().err


def test_a_graph_with_a_fixed_batch_gets_no_batching():
    import onnx

    model = onnx.load_from_string(load(FIXTURES / "int8.slim").onnx)
    for v in (model.graph.input[0], model.graph.output[0]):
        v.type.tensor_type.shape.dim[0].dim_value = 1
    inputs, outputs, batched = _signature(model.SerializeToString(), "x")
    assert not batched and inputs[0][2] == [1, 3, 32, 32] and outputs[0][2] == [1, 3]
