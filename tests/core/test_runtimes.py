"""The runtime seam with two runtimes: OpenVINO computes what ONNX Runtime computes (fp32 in f32, int8 QDQ graphs
in int8), with our thread settings, and everything falls back to ONNX Runtime when OpenVINO is missing."""

from __future__ import annotations

import sys
from functools import lru_cache

import numpy as np
import pytest
import torch

from slimship.core.errors import SlimshipError
from slimship.core.runtime import RUNTIMES, available_runtimes, logits, runtimes_to_measure, session

needs_openvino = pytest.mark.skipif(not RUNTIMES.get("openvino").available(), reason="openvino is not installed")


@lru_cache(maxsize=None)
def _graphs() -> tuple[bytes, bytes, np.ndarray]:
    """The tiny timm test_efficientnet (3 classes, 32 px) as an fp32 graph and as our int8 QDQ graph, and inputs."""
    from slimship.compress.int8 import Int8Config
    from slimship.compress.int8.quantize import quantize_int8
    from slimship.models import create_model
    from slimship.models.export import export_onnx

    torch.manual_seed(0)
    model = create_model("test_efficientnet", 3, weights=None, image_size=32).model.eval()
    x = torch.randn(32, 3, 32, 32, generator=torch.Generator().manual_seed(0)).numpy()
    fp32 = export_onnx(model, 32)
    int8 = quantize_int8(fp32, x, lambda g: 0.5, Int8Config(calibration=["minmax"], calibration_images=32),
                         log=lambda s: None).onnx
    return fp32, int8, x


def _hide_openvino(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now fails, as where it is not installed


@needs_openvino
def test_openvino_gives_the_onnx_runtime_logits_of_an_fp32_graph():
    fp32, _, x = _graphs()
    ort, ov = logits(session(fp32, "onnxruntime"), x, 8), logits(session(fp32, "openvino"), x, 8)
    assert ov.shape == ort.shape == (32, 3)
    # f32 inference precision: bf16 (OpenVINO's default on CPUs with AMX/avx512_bf16) is ~1e-2 off
    np.testing.assert_allclose(ov, ort, atol=1e-4 * np.abs(ort).max())


@needs_openvino
def test_openvino_runs_our_int8_graph_in_int8_and_agrees_with_onnx_runtime():
    fp32, int8, x = _graphs()
    ort, ov = session(int8, "onnxruntime")(x), session(int8, "openvino")(x)
    float_gap = np.abs(session(fp32, "onnxruntime")(x) - ort).mean()
    # the same int8 arithmetic up to requantization rounding: far closer to ORT's int8 result than the float
    # model is, and the same predictions almost everywhere
    assert np.abs(ov - ort).mean() < 0.5 * float_gap
    assert (ov.argmax(1) == ort.argmax(1)).mean() >= 0.9
    ops = session(int8, "openvino").compiled.get_runtime_model().get_ordered_ops()
    convs = [op.get_rt_info()["runtimePrecision"].astype(str) for op in ops
             if op.get_rt_info()["layerType"].astype(str) == "Convolution"]
    assert convs and all(p in ("u8", "i8") for p in convs), convs


@needs_openvino
def test_openvino_uses_our_threads_and_f32(monkeypatch):
    fp32, _, _ = _graphs()
    monkeypatch.setenv("SLIMSHIP_THREADS", "1")
    compiled = session(fp32, "openvino").compiled
    assert compiled.get_property("INFERENCE_NUM_THREADS") == 1
    assert str(compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"
    assert session(fp32, "openvino", threads=2).compiled.get_property("INFERENCE_NUM_THREADS") == 2


@needs_openvino
def test_without_openvino_only_onnx_runtime_is_measured(monkeypatch):
    assert available_runtimes() == ["onnxruntime", "openvino"]
    _hide_openvino(monkeypatch)
    assert not RUNTIMES.get("openvino").available()
    assert available_runtimes() == runtimes_to_measure() == ["onnxruntime"]
    with pytest.raises(SlimshipError, match="runtime 'openvino' is not installed here"):
        session(_graphs()[0], "openvino")
    with pytest.raises(SlimshipError, match="not installed"):
        runtimes_to_measure(["onnxruntime", "openvino"])
    with pytest.raises(SlimshipError, match="unknown runtime 'tensorrt'"):
        runtimes_to_measure(["tensorrt"])


def test_onnx_runtime_keeps_its_spinning_and_timing_settles_between_blocks(monkeypatch):
    # ONNX Runtime as deployed (spinning off made dense W0 1.6x slower at batch 1); idle spinning threads of one
    # session would steal the cores from the next one timed (REFERENCE.md pitfall), so timing waits before each
    # block of calls ("time in blocks")
    from slimship.evaluate import latency

    opts = session(_graphs()[0], "onnxruntime").inner.get_session_options()
    with pytest.raises(RuntimeError, match="does not have configuration"):  # not set: ONNX Runtime's default
        opts.get_session_config_entry("session.intra_op.allow_spinning")
    order: list[str] = []
    monkeypatch.setattr(latency.time, "sleep", lambda s: order.append(f"settle {s}"))
    sessions = {k: (lambda x, k=k: order.append(k)) for k in ("a", "b")}
    latency.interleaved_session_stats(sessions, (3, 8, 8), (1, 4), runs=3, rounds=2, warmup=0)
    blocks = [i for i, e in enumerate(order) if not e.startswith("settle")]
    for i in blocks:  # every call of a block follows a settle or a call of the same session
        prev = order[i - 1]
        assert prev == f"settle {latency.SETTLE_SECONDS}" or prev == order[i]
    assert order.count(f"settle {latency.SETTLE_SECONDS}") == 2 * 2 * 2 and latency.SETTLE_SECONDS > 0


def test_a_recipe_asking_for_an_unknown_or_missing_runtime_fails_before_training(tmp_path, monkeypatch):
    from slimship.api import run
    from slimship.core.errors import RecipeError
    from slimship.recipe import parse_recipe
    from tests.conftest import tiny_recipe

    with pytest.raises(RecipeError, match=r"evaluate: .*unknown runtime\(s\) \['openvno'\]"):
        parse_recipe(tiny_recipe("x.npz", evaluate={"runtimes": ["openvno"]}))
    recipe = parse_recipe(tiny_recipe(str(tmp_path / "missing.npz"), evaluate={"runtimes": ["openvino"]}))
    _hide_openvino(monkeypatch)
    with pytest.raises(SlimshipError, match="'openvino' is not installed"):
        run(recipe, tmp_path / "out", quiet=True)
    assert not (tmp_path / "out").exists()
