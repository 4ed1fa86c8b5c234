"""The search space: built from the method registry, chain shapes obey each method's rules, suggested steps are
exactly what a recipe would write, and space files fail with one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from slimship.compress import METHODS
from slimship.core.errors import SlimshipError
from slimship.search import default_space, load_space, parse_duration, space_from_dict
from slimship.search.space import MethodSpace, Range, chain_shapes, split_chain

ROOT = Path(__file__).parents[2]


def test_every_registered_method_is_searched_and_shapes_follow_the_rules():
    space = default_space()
    assert {m.method for m in space.methods} == set(METHODS.names())
    by = {m.method: m for m in space.methods}
    assert "prune_channels>int8" in space.chains and "unstructured>kmeans>weight_only" in space.chains
    for shape in space.chains:
        steps = split_chain(shape)
        assert len(steps) == len(set(steps)) <= 4
        assert not any(METHODS.get(s).terminal for s in steps[:-1]), shape  # int8 only last
        for i, a in enumerate(steps):
            for b in steps[i + 1:]:
                assert a not in by[b].precedes, shape  # b must come before a, yet follows it
                assert b not in by[a].excludes and a not in by[b].excludes, shape
    # the order of steps is searched where the rules leave it open
    assert {"prune_channels>lowrank", "lowrank>prune_channels"} <= set(space.chains)
    assert "kmeans>int8" not in space.chains and "int8>kmeans" not in space.chains


def test_a_method_space_can_come_from_anywhere():
    spaces = (MethodSpace("kmeans", {"bits": Range(2, 4, 1, integer=True)}, lambda v: {"method": "kmeans", **v}),
              MethodSpace("int8", {}, lambda v: {"method": "int8"}))
    assert chain_shapes(spaces, 2) == ("kmeans", "int8", "kmeans>int8")


def test_suggested_steps_are_what_the_hand_written_recipe_says():
    """Same options, same step config: a searched chain shares cached steps with a recipe's candidate."""
    import optuna

    from slimship.recipe import load_recipe

    cands = {c.name: c.steps for c in load_recipe(ROOT / "recipes" / "deep-compression-w0.yaml").compress.candidates}
    space = default_space()
    trial = optuna.trial.FixedTrial({
        "chain": "prune_channels>int8", "prune_channels.macs_reduction": 1.4, "prune_channels.importance": "taylor",
        "prune_channels.scope": "global", "prune_channels.round_to": 16, "prune_channels.steps": 2,
        "prune_channels.recovery_epochs": 4, "int8.qat_epochs": 1})
    assert space.suggest(trial) == cands["channels14-int8"]
    trial = optuna.trial.FixedTrial({
        "chain": "unstructured>kmeans>weight_only", "unstructured.sparsity": 0.6, "unstructured.allocation": "sensitivity",
        "unstructured.recovery_epochs": 2, "kmeans.bits": 4, "kmeans.recovery_epochs": 1,
        "weight_only.variant": "int8-depthwise"})
    assert space.suggest(trial) == cands["sparse60s-kmeans4"]


def test_space_file_narrows_options_chains_and_seeds(tmp_path):
    f = tmp_path / "space.yaml"
    f.write_text(yaml.safe_dump({
        "methods": {"prune_channels": {"macs_reduction": {"low": 1.6, "high": 2.0, "step": 0.2}, "importance": ["taylor"]},
                    "int8": {"qat_epochs": [1]}},
        "seeds": [{"chain": "prune_channels>int8", "prune_channels": {"macs_reduction": 1.8}}],
        "sampler": {"name": "nsga2", "population": 4}}))
    space = load_space(f)
    assert set(space.chains) == {"prune_channels", "int8", "prune_channels>int8"}
    assert space.method("prune_channels").params["importance"].values == ("taylor",)
    assert space.seeds == ({"chain": "prune_channels>int8", "prune_channels.macs_reduction": 1.8},)
    assert (space.sampler, space.population) == ("nsga2", 4)


def test_the_w0_benchmark_space_loads():
    space = load_space(ROOT / "benchmarks" / "search-w0-space.yaml")
    assert space.seeds and set(space.chains) <= set(default_space().chains)


@pytest.mark.parametrize("data, phrase", [
    ({"methods": {"prune_chanels": {}}}, "has no search space"),
    ({"methods": {"kmeans": {"bitz": [4]}}}, "no searched option 'bitz'"),
    ({"methods": {"prune_channels": {"importance": ["random"]}}}, "'random' is not allowed"),
    ({"methods": {"kmeans": {"bits": [9]}}}, "not a valid step"),
    ({"chains": ["int8>kmeans"]}, "is not valid"),
    ({"seeds": [{"chain": "kmeans", "kmeans": {"bits": 7}}]}, "outside its range"),
    ({"seeds": [{"chain": "kmeans", "int8": {"qat_epochs": 1}}]}, "not a step of chain"),
    ({"sampler": {"name": "grid"}}, "unknown: use tpe or nsga2"),
    ({"budget": 1}, "unknown key 'budget'"),
])
def test_bad_space_files_fail_in_one_line(data, phrase):
    with pytest.raises(SlimshipError, match=phrase) as e:
        space_from_dict(data)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("text, seconds", [("90", 90), ("45m", 2700), ("1.5h", 5400), ("1h30m", 5400), ("20s", 20)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "10x", "1h30", "0", "-5m"])
def test_bad_durations(text):
    with pytest.raises(SlimshipError, match="--time"):
        parse_duration(text)
