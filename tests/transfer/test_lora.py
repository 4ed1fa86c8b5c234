"""The lora strategy: only adapters and the head train, the merged model is the PEFT model, its change is of rank
<= r, any kind with Linear layers takes adapters, and bad settings are one-line errors."""

from __future__ import annotations

import copy

import pytest
import torch

from slimship.core.errors import RecipeError, SlimshipError
from slimship.recipe import parse_recipe
from slimship.transfer.lora import add_adapters, lora_targets
from slimship.transfer.trainer import TrainConfig, train
from tests.text_helpers import one_torch_thread, text_task, tiny_bert  # noqa: F401  (fixtures)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _section(**kw):
    return parse_recipe({"model": {"architecture": "test_vit"}, "data": {"source": "x"},
                         "transfer": {"strategy": "lora", "lora": kw}}).transfer.lora


def test_lora_trains_adapters_and_head_only_and_merges_to_the_peft_models_outputs(tiny_bert):
    adapter, model, pre, T, V = text_task(tiny_bert)
    before = copy.deepcopy(model.state_dict())
    wrapped, groups = add_adapters(model, adapter.classifier(model), _section(rank=2, alpha=4, lr=0.01))
    trainable = set(groups[1])
    assert trainable and all("lora_" in n or ".head." in n for n in trainable)
    assert sum(".head." in n for n in trainable) == 2  # head weight and bias train in full
    r = train(wrapped, T, V, pre, TrainConfig(epochs=6, lr=1e-2, batch_size=8, freeze_stages=1, evals=2,
                                              hflip=False), groups=groups)
    assert r.best_val_accuracy >= 0.8
    x = pre.model_input(V.x)
    wrapped.eval()
    with torch.no_grad():
        want = wrapped(x)
    merged = wrapped.merge_and_unload()
    assert merged is model and type(model).__name__ == "TextClassifier"
    assert not any("lora" in n for n in model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model(x), want, atol=1e-5, rtol=1e-5)
    targets = set(lora_targets(model, adapter.classifier(model), None))
    changed = {k for k, v in model.state_dict().items() if k in before and not torch.equal(v, before[k])}
    assert changed == {f"{t}.weight" for t in targets} | {"head.weight", "head.bias"}
    for t in targets:  # a merged adapter changes its layer by B A: rank <= 2
        d = model.state_dict()[f"{t}.weight"] - before[f"{t}.weight"]
        assert int(torch.linalg.matrix_rank(d.double(), rtol=1e-4)) == 2, t


def test_targets_default_to_every_linear_layer_outside_the_head_and_take_short_names(tiny_bert):
    adapter, model, *_ = text_task(tiny_bert)
    head = adapter.classifier(model)
    every = lora_targets(model, head, None)
    assert len(every) == 2 * 6 and not any(n.startswith("head") for n in every)  # q, k, v, out, ffn in, ffn out
    assert lora_targets(model, head, ["query", "value"]) == [n for n in every if n.endswith(("query", "value"))]
    with pytest.raises(RecipeError, match="'attn' names no layer.*query") as e:
        lora_targets(model, head, ["attn"])
    assert "\n" not in str(e.value)
    with pytest.raises(RecipeError, match="only the classifier"):
        lora_targets(model, head, ["head"])
    with pytest.raises(RecipeError, match="PEFT cannot add LoRA adapters"):  # a module PEFT cannot wrap
        add_adapters(copy.deepcopy(model), head, _section(target_modules=["attention"]))


def test_adapters_are_not_text_only_and_a_cnn_without_linear_layers_is_told_what_to_do():
    from slimship.models import create_model

    vit = create_model("test_vit", 3, weights=None, image_size=32).model
    wrapped, groups = add_adapters(vit, vit.get_classifier(), None)
    assert any("lora_A" in n for n in groups[1]) and {"head.weight", "head.bias"} <= {
        n.removeprefix("base_model.model.") for n in groups[1]}
    cnn = create_model("test_efficientnet", 3, weights=None, image_size=32).model
    with pytest.raises(RecipeError, match="no Linear layer outside its classifier.*target_modules"):
        add_adapters(cnn, cnn.get_classifier(), None)


@pytest.mark.parametrize("transfer, match", [
    ({"strategy": "lora", "lora": {"rank": 0}}, "rank"),
    ({"strategy": "finetune", "lora": {"rank": 4}}, "set strategy: lora"),
    ({"strategy": "lora", "lora": {"target_modules": []}}, "target_modules"),
    ({"strategy": "lora", "delta": {}}, "drop transfer.delta"),
])
def test_bad_lora_settings_are_one_line_recipe_errors(transfer, match):
    with pytest.raises(SlimshipError, match=match) as e:
        parse_recipe({"model": {"architecture": "test_vit"}, "data": {"source": "x"}, "transfer": transfer})
    assert "\n" not in str(e.value)
