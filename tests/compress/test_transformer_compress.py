"""Transformer surgery on a tiny BERT: fewer layers (drop_layers) and fewer heads / FFN neurons
(prune_transformer) really shrink the model and its ONNX graph, rebuild from their arch edits, resume from the
compression cache and compose with int8; other model kinds and bad configs get one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from slimship.compress import CompressContext
from slimship.compress.base import ModelState, apply_step
from slimship.compress.drop_layers import DropLayersConfig, even_layers
from slimship.compress.int8.config import Int8Config
from slimship.compress.methods import load_builtin_methods
from slimship.compress.prune_transformer import PruneTransformerConfig
from slimship.core.errors import SlimshipError
from slimship.core.runtime import ort_logits, ort_session
from slimship.models.rebuild import apply_arch_edits_
from tests.text_helpers import make_tiny_bert, one_torch_thread, text_task  # noqa: F401  (fixtures)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
load_builtin_methods()
REC = {"epochs": 1, "seconds": None}


@pytest.fixture(scope="module")
def deep_bert(tmp_path_factory):
    """4 layers, 4 heads of 8, 64 FFN neurons per layer."""
    return make_tiny_bert(tmp_path_factory.mktemp("bert4") / "bert", layers=4, hidden=32, heads=4)


def _task(bert):
    adapter, model, pre, T, V = text_task(bert, n_train=24, n_val=12)
    with torch.no_grad():
        model.head.weight.mul_(30)  # logits that react to the body (a random head barely does)
    ctx = CompressContext(adapter, T, V, pre, teacher=model.eval(), num_classes=2, log=lambda s: None, seed=0)
    return ctx, model, pre.model_input(V.x)


def _params(m) -> int:
    return sum(p.numel() for p in m.parameters())


def _rebuilt(ctx, state):
    """The model rebuilt from a fresh architecture and the arch edits, weights loaded strictly."""
    fresh = apply_arch_edits_(ctx.fresh_model(), state.arch_edits)
    fresh.load_state_dict(state.model.state_dict(), strict=True)
    return fresh.eval()


def _check_graph(ctx, state, dense, x):
    """The graph is smaller than the dense one, and gives the torch model's logits at two sequence lengths."""
    graph = ctx.adapter.export_onnx(state.model)
    assert len(graph) < len(ctx.adapter.export_onnx(dense)) and _params(state.model) < _params(dense)
    sess = ort_session(graph)
    for ids in (x, x[:, :5]):  # dynamic sequence length
        with torch.no_grad():
            want = state.model.eval()(ids).numpy()
        np.testing.assert_allclose(ort_logits(sess, ids.numpy()), want, atol=1e-4)


def test_even_layers_keep_the_first_and_the_last():
    assert even_layers(6, 3) == [0, 2, 5] and even_layers(6, 4) == [0, 2, 3, 5] and even_layers(4, 1) == [3]


def test_drop_layers_shrinks_exports_and_rebuilds(deep_bert):
    ctx, model, x = _task(deep_bert)
    state = apply_step(ModelState(model=model), DropLayersConfig(keep=0.5, recovery=REC), ctx)
    layers = state.model.encoder.encoder.layer
    assert len(layers) == 2 and state.notes["drop_layers"]["kept"] == [0, 3]
    assert state.arch_edits == {"encoder.encoder.layer": {"type": "keep", "indices": [0, 3]}}
    _check_graph(ctx, state, model, x)
    with torch.no_grad():
        np.testing.assert_array_equal(_rebuilt(ctx, state)(x).numpy(), state.model.eval()(x).numpy())


def test_greedy_selection_drops_the_layer_that_does_nothing(deep_bert):
    ctx, model, x = _task(deep_bert)
    with torch.no_grad():  # layer 2 becomes (nearly) the identity: zero output projections, LayerNorm after
        for lin in (model.encoder.encoder.layer[2].attention.output.dense, model.encoder.encoder.layer[2].output.dense):
            lin.weight.zero_()
            lin.bias.zero_()
    state = apply_step(ModelState(model=model), DropLayersConfig(keep=3, select="greedy", recovery=REC), ctx)
    assert state.notes["drop_layers"]["kept"] == [0, 1, 3]  # "even" would keep [0, 2, 3]


def test_prune_transformer_removes_the_unimportant_heads_and_neurons(deep_bert):
    ctx, model, x = _task(deep_bert)
    layers = model.encoder.encoder.layer
    dead_heads = {0: [1], 1: [3], 2: [0, 2]}
    with torch.no_grad():  # heads and neurons whose output nothing reads: importance 0 both ways
        for layer, heads in dead_heads.items():
            for h in heads:
                layers[layer].attention.output.dense.weight[:, h * 8:(h + 1) * 8] = 0
        layers[0].output.dense.weight[:, :16] = 0
    cfg = PruneTransformerConfig(heads=0.25, ffn=0.25, steps=1, recovery=REC)
    state = apply_step(ModelState(model=model), cfg, ctx)
    info = state.notes["prune_transformer"]
    assert info["heads_before"] == 16 and info["heads_per_layer"] == [3, 3, 2, 4]
    assert info["ffn_after"] == [48, 48, 48, 48] and info["params_after"] < info["params_before"]
    pruned = state.model.encoder.encoder.layer
    assert pruned[2].attention.self.query.out_features == 16 and pruned[2].attention.output.dense.in_features == 16
    assert pruned[2].attention.self.num_attention_heads == 2
    assert pruned[0].intermediate.dense.out_features == 48 and pruned[0].output.dense.in_features == 48
    _check_graph(ctx, state, model, x)
    rebuilt = _rebuilt(ctx, state)
    assert rebuilt.encoder.encoder.layer[2].attention.self.num_attention_heads == 2
    with torch.no_grad():
        np.testing.assert_array_equal(rebuilt(x).numpy(), state.model.eval()(x).numpy())


def test_magnitude_importance_and_rounds(deep_bert):
    ctx, model, x = _task(deep_bert)
    cfg = PruneTransformerConfig(heads=0.5, ffn=0.5, importance="magnitude", steps=2, recovery=REC)
    state = apply_step(ModelState(model=model), cfg, ctx)
    info = state.notes["prune_transformer"]
    assert info["heads_after"] == 8 and min(info["heads_per_layer"]) >= 1 and info["ffn_after"] == [32] * 4
    assert len([t for t in ctx.trainings if "prune-transformer" in t["desc"]]) == 2  # one recovery a round


def test_chained_surgery_composes_with_int8_and_resumes_from_the_cache(deep_bert, tmp_path):
    from slimship.compress.pipeline import ChainRunner
    from slimship.core.cache import StageCache

    ctx, model, x = _task(deep_bert)
    logs = []
    ctx.log = logs.append
    steps = [DropLayersConfig(keep=3, recovery=REC), PruneTransformerConfig(heads=0.25, ffn=0.5, steps=1, recovery=REC),
             Int8Config(mode=["dynamic"], calibration=["minmax"], calibration_images=32)]
    done = ChainRunner(ctx, StageCache(tmp_path), "dense").run(steps)
    fp32 = ctx.adapter.export_onnx(done.model)
    assert done.onnx is not None and len(done.onnx) < len(fp32)
    with torch.no_grad():
        want = done.model.eval()(x).numpy()
    assert (ort_logits(ort_session(done.onnx), x.numpy()).argmax(1) == want.argmax(1)).mean() >= 0.9
    again = ChainRunner(ctx, StageCache(tmp_path), "dense").run(steps[:2])  # a new process: from the cache
    assert any("restored from cache" in line for line in logs)
    assert len(again.model.encoder.encoder.layer) == 3
    with torch.no_grad():
        np.testing.assert_array_equal(again.model(x).numpy(), want)


@pytest.mark.parametrize("cfg, match", [
    (DropLayersConfig(keep=2.5), "whole number"),
    (DropLayersConfig(keep=4), "keeps all 4 layers"),
    (DropLayersConfig(indices=[0, 9]), "from 0 to 3"),
])
def test_bad_drop_configs_are_one_line_errors(deep_bert, cfg, match):
    ctx, model, _ = _task(deep_bert)
    with pytest.raises(SlimshipError, match=match) as e:
        apply_step(ModelState(model=model), cfg, ctx)
    assert "\n" not in str(e.value)


def test_prune_transformer_that_removes_nothing_is_refused_in_the_recipe():
    from slimship.recipe import parse_recipe

    recipe = {"model": {"architecture": "x"}, "data": {"source": "x"},
              "compress": {"candidates": [{"name": "p", "steps": [{"method": "prune_transformer", "heads": 0,
                                                                   "ffn": 0}]}]}}
    with pytest.raises(SlimshipError, match="removes nothing") as e:
        parse_recipe(recipe)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("cfg", [DropLayersConfig(keep=1), PruneTransformerConfig()])
def test_a_model_kind_without_transformer_layers_is_refused(cfg):
    from slimship.models.timm_image import TimmImageAdapter

    ctx = CompressContext(TimmImageAdapter("test_efficientnet", 32), None, None, None, teacher=torch.nn.Linear(2, 2),
                          num_classes=2, log=lambda s: None)
    with pytest.raises(SlimshipError, match=f"{cfg.method} needs a transformer model.*'timm-image'.*hf-text") as e:
        apply_step(ModelState(model=torch.nn.Linear(2, 2)), cfg, ctx)
    assert "\n" not in str(e.value)


def test_searches_offer_transformer_surgery_only_to_transformer_models_and_block_dropping_to_image_models(deep_bert):
    from slimship.models.hf_text import HfTextAdapter
    from slimship.models.timm_image import TimmImageAdapter
    from slimship.search import default_space

    surgery = {"drop_layers", "prune_transformer"}
    text = {m.method for m in default_space(adapter=HfTextAdapter(str(deep_bert))).methods}
    image = {m.method for m in default_space(adapter=TimmImageAdapter("test_efficientnet", 32)).methods}
    assert surgery <= text and not surgery & image and image == (text - surgery) | {"drop_blocks", "downscale"}
    assert not {"drop_blocks", "downscale"} & text  # image models only (ImageModel)
    chains = default_space(adapter=HfTextAdapter(str(deep_bert))).chains
    assert "drop_layers>prune_transformer>int8" in chains and "prune_transformer>drop_layers" not in chains
    for m in default_space(adapter=HfTextAdapter(str(deep_bert))).methods:  # searched steps validate as recipes'
        if m.method in surgery:
            for end in (0, -1):
                values = {k: d.values[end] if hasattr(d, "values") else (d.low, d.high)[end] for k, d in m.params.items()}
                assert m.step(values).method == m.method
