"""Compression of a Linear-heavy text model: int8 (dynamic and static searched side by side), and the image path's
unstructured pruning, k-means sharing and weight-only int4 on the tiny BERT, down to the package encoding."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import pytest
import torch

from slimship.compress import CompressContext
from slimship.compress.base import ModelState, apply_step
from slimship.compress.int8.config import Int8Config
from slimship.compress.int8.quantize import quantize_int8, settings
from slimship.compress.kmeans import KMeansShareConfig
from slimship.compress.unstructured import UnstructuredConfig
from slimship.compress.weight_only import WeightOnlyConfig
from slimship.core.runtime import ort_logits, ort_session
from tests.text_helpers import one_torch_thread, text_task, tiny_bert  # noqa: F401  (fixtures)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _ops(graph: bytes) -> collections.Counter:
    return collections.Counter(n.op_type for n in onnx.load_from_string(graph).graph.node)


def test_settings_run_in_the_order_written():
    cfg = Int8Config(mode=["dynamic", "static"], static_ops=["linear", "all"], calibration=["minmax"],
                     keep_fp32=["none"], reduce_range=[False, True])
    s = settings(cfg)
    assert [x["mode"] for x in s] == ["dynamic", "dynamic", "static", "static", "static", "static"]
    assert [x.get("ops") for x in s[2:]] == ["linear", "linear", "all", "all"]
    assert [x["reduce_range"] for x in s[:2]] == [False, True]


def test_dynamic_and_static_int8_are_searched_on_validation(tiny_bert):
    adapter, model, pre, T, V = text_task(tiny_bert)
    fp32 = adapter.export_onnx(model.eval())
    x = pre.model_input_np(V.x.numpy())
    want = ort_logits(ort_session(fp32), x).argmax(1)
    graphs = {}

    def score(g: bytes) -> float:  # agreement with the fp32 graph stands in for validation accuracy
        graphs[len(graphs)] = g
        return float((ort_logits(ort_session(g), x).argmax(1) == want).mean()) - 0.01 * len(graphs)

    cfg = Int8Config(mode=["dynamic", "static"], static_ops=["linear", "all"], calibration=["minmax"],
                     reduce_range=[False], calibration_images=32)
    res = quantize_int8(fp32, pre.model_input_np(T.x.numpy()), score, cfg, log=lambda s: None)
    assert [t["mode"] for t in res.trials] == ["dynamic", "static", "static"]
    dyn, static_linear, static_all = (_ops(graphs[i]) for i in range(3))
    assert dyn["DynamicQuantizeLinear"] > 0 and dyn["MatMulInteger"] > 0 and dyn["QuantizeLinear"] == 0
    assert static_linear["QuantizeLinear"] > 0 and static_all["QuantizeLinear"] > static_linear["QuantizeLinear"]
    assert res.choice["mode"] == "dynamic" and res.onnx == graphs[0]  # best score (the penalty favours the first)
    assert res.trials[0]["val_accuracy"] >= 0.9 - 0.01  # int8 keeps the fp32 graph's predictions


def _context(adapter, model, pre, T, V) -> CompressContext:
    return CompressContext(adapter, T, V, pre, teacher=model.eval(), num_classes=2, log=lambda s: None, seed=0)


def _linear_weights(model) -> dict[str, torch.Tensor]:
    return {n: m.weight.detach() for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


@pytest.mark.parametrize("steps, check", [
    ([UnstructuredConfig(sparsity=0.5, spare=["last"], recovery={"epochs": 1, "seconds": None})],
     lambda w: all(0.45 <= float((t == 0).float().mean()) <= 0.55 for n, t in w.items() if n != "head")),
    ([KMeansShareConfig(bits=3, spare=[], min_weights=64, recovery={"epochs": 1, "seconds": None})],
     lambda w: all(len(torch.unique(t)) <= 8 for t in w.values())),
    ([WeightOnlyConfig(bits=4, granularity="group", group_size=16, spare=[], min_weights=64)],
     lambda w: all(len(torch.unique(t[0, :16].abs())) <= 8 for t in w.values())),  # a 4-bit grid per group
], ids=["unstructured", "kmeans", "weight_only-int4"])
def test_image_path_methods_work_on_linear_layers_and_package_exactly(tiny_bert, steps, check):
    from slimship.package.deploy import deploy_parts

    adapter, model, pre, T, V = text_task(tiny_bert)
    ctx = _context(adapter, model, pre, T, V)
    state = ModelState(model=model)
    for step in steps:
        state = apply_step(state, step, ctx)
    weights = _linear_weights(state.model)
    assert len(weights) == 13 and check(weights)  # 2 layers x 6 Linear + the head
    parts = deploy_parts(adapter.export_onnx(state.model, fold_bn=False), encode_weights=True)
    assert set(parts.parts) == {"graph.onnx", "weights.bin"}
    x = pre.model_input_np(V.x.numpy())
    with torch.no_grad():
        want = state.model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ort_logits(ort_session(parts.graph()), x), want, atol=1e-4)
