"""Methods are registered on their config type, and a recipe accepts any method registered before it is parsed
(the step union is built from the registry at parse time)."""

from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict

from slimship.compress import METHODS, ModelState, apply_step, base
from slimship.core.errors import RecipeError
from slimship.core.registry import Entry
from slimship.recipe import parse_recipe


class HalveHeadConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    method: Literal["halve_head"] = "halve_head"
    factor: float = 0.5


def _halve(state, cfg, ctx):
    return ModelState(model=state.model, notes={**state.notes, "halve_head": cfg.factor})


@pytest.fixture
def plugin(monkeypatch):
    """Register a method the way a plug-in would, and take it away again after the test."""
    entries = dict(METHODS._entries)
    by_config = dict(base._BY_CONFIG)
    monkeypatch.setattr(METHODS, "_entries", entries)
    monkeypatch.setattr(base, "_BY_CONFIG", by_config)
    base.register_method(HalveHeadConfig, help="test plug-in")(_halve)
    assert isinstance(METHODS._entries["halve_head"], Entry)


def _recipe(step: dict) -> dict:
    return {"model": {"architecture": "test_efficientnet"}, "data": {"source": "x"},
            "compress": {"candidates": [{"name": "c", "steps": [step]}]}}


def test_a_method_registered_after_import_is_usable_in_recipes(plugin):
    r = parse_recipe(_recipe({"method": "halve_head", "factor": 0.25}))
    step = r.compress.candidates[0].steps[0]
    assert isinstance(step, HalveHeadConfig) and step.factor == 0.25
    assert apply_step(ModelState(model="m"), step, ctx=None).notes == {"halve_head": 0.25}  # dispatched on the type
    with pytest.raises(RecipeError, match="unknown field.*facto"):
        parse_recipe(_recipe({"method": "halve_head", "facto": 1}))


def test_an_unregistered_method_is_refused_with_the_known_ones():
    with pytest.raises(RecipeError, match="halve_head") as e:
        parse_recipe(_recipe({"method": "halve_head"}))
    assert "int8" in str(e.value)
