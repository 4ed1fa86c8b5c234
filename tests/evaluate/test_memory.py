"""Peak memory at inference, measured in a fresh process per graph."""

from __future__ import annotations

import numpy as np


def _matmul_graph(cols: int) -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((1000, cols)).astype(np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1000])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", cols])], [w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_a_graph_with_40_mb_of_weights_needs_about_40_mb_more():
    from slimship.evaluate.memory import peak_memory

    small = peak_memory(_matmul_graph(10), (1000,), [1, 4])
    big = peak_memory(_matmul_graph(10_000), (1000,), [1, 4])  # 40 MB of float32 weights
    assert "error" not in small and "error" not in big, (small, big)
    assert big["model_mb"] - small["model_mb"] > 35
    assert big["peak_rss_mb"] >= big["baseline_mb"] + big["model_mb"] - 0.2
    assert small["baseline_mb"] > 10  # Python, numpy and the runtime were counted as the baseline


def test_a_graph_that_does_not_load_is_reported_not_raised():
    from slimship.evaluate.memory import peak_memory

    r = peak_memory(b"not an onnx graph", (3,), [1])
    assert set(r) == {"error"} and "exit" in r["error"]
