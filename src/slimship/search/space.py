"""The search space: which chains of compression steps a search tries, and which options of each step.

Each registered compression method may have a :class:`MethodSpace` in :data:`SPACES` (the built-in ones are in
:mod:`slimship.search.methods`): its searched options (:class:`Choice` or :class:`Range`), how the values
become the method's step config, and which methods it must come before or cannot share a chain with. A
:class:`SearchSpace` combines them: every valid chain shape (the methods and their order, built from the registry
and those rules) is one value of the categorical parameter ``chain``, and each method's options are parameters
``METHOD.OPTION`` suggested only when the chain holds the method. So the order of the steps is searched
as well as their options. A space file (``--space``) narrows any of it and adds seed trials.

Example: ``chain = "prune_channels>int8"``, ``prune_channels.macs_reduction = 1.8``, ``int8.qat_epochs = 1``
→ ``[PruneChannelsConfig(macs_reduction=1.8, ...), Int8Config(qat=Recovery(epochs=1, ...))]``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from slimship.compress import METHODS
from slimship.core.errors import SlimshipError
from slimship.core.registry import Registry

SEP = ">"  # between the methods of a chain shape: "unstructured>kmeans>weight_only"


@dataclass(frozen=True)
class Choice:
    """One of a few values (bool, int, float or str)."""

    values: tuple

    def suggest(self, trial, name: str):
        return trial.suggest_categorical(name, list(self.values))

    def contains(self, v) -> bool:
        return v in self.values

    def describe(self) -> str:
        return " | ".join(str(v) for v in self.values)


@dataclass(frozen=True)
class Range:
    """A number from ``low`` to ``high`` on a grid of ``step`` (a grid lets chains repeat and share cached steps)."""

    low: float
    high: float
    step: float | None = None
    integer: bool = False

    def suggest(self, trial, name: str):
        if self.integer:
            return trial.suggest_int(name, int(self.low), int(self.high), step=int(self.step or 1))
        return round(trial.suggest_float(name, self.low, self.high, step=self.step), 6)

    def contains(self, v) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not self.low - 1e-9 <= v <= self.high + 1e-9:
            return False
        if self.step:
            k = (v - self.low) / self.step
            return abs(k - round(k)) < 1e-6
        return not self.integer or float(v).is_integer()

    def describe(self) -> str:
        return f"{self.low}..{self.high}" + (f" step {self.step}" if self.step else "")


Domain = Choice | Range


@dataclass(frozen=True)
class MethodSpace:
    """How a search varies one compression method.

    ``build(values)`` turns the suggested ``values`` (one per entry of ``params``) into the step's config as a
    dictionary (what a recipe step says). ``precedes``: methods this one comes before when a chain holds both;
    ``excludes``: methods that make no sense in the same chain (e.g. a step that fixes weight values, followed
    by int8, which re-codes every weight).
    """

    method: str
    params: Mapping[str, Domain]
    build: Callable[[dict], dict]
    precedes: frozenset[str] = frozenset()
    excludes: frozenset[str] = frozenset()

    def step(self, values: dict):
        """The method's step config for ``values`` (validated by the method's own config class)."""
        from pydantic import ValidationError

        cfg = METHODS.get(self.method).config
        try:
            return cfg.model_validate(self.build(values))
        except ValidationError as e:
            raise SlimshipError(f"search space of {self.method}: {values} is not a valid step "
                                f"({e.errors()[0]['msg']}): narrow the option's range") from None


SPACES: Registry[MethodSpace] = Registry("method search space")


def register_space(space: MethodSpace, help: str = "") -> MethodSpace:
    """Make ``space.method`` searchable (a plug-in method registers its own space)."""
    SPACES.add(space.method, space, help=help)
    return space


@dataclass(frozen=True)
class SearchSpace:
    """The chains a search may try, the seed trials it starts with, and the sampler that proposes the rest."""

    methods: tuple[MethodSpace, ...]
    chains: tuple[str, ...]  # valid chain shapes, e.g. "prune_channels>int8"
    seeds: tuple[dict, ...] = ()  # Optuna params of the first trials (see params_of_seed)
    sampler: str = "tpe"  # tpe | nsga2
    startup_trials: int = 6  # random proposals before TPE models the results (tpe)
    population: int = 8  # NSGA-II population size (nsga2)
    prune_slack: float = 1.0  # stop a chain once a step is this many points beyond the budget (validation)

    def method(self, name: str) -> MethodSpace:
        return next(m for m in self.methods if m.method == name)

    def suggest(self, trial) -> list:
        """The chain of step configs for an Optuna trial (suggests ``chain`` and the options of its methods)."""
        shape = trial.suggest_categorical("chain", list(self.chains))
        return self.steps(shape, {m: self.values(trial, m) for m in split_chain(shape)})

    def values(self, trial, method: str) -> dict:
        ms = self.method(method)
        return {k: d.suggest(trial, f"{method}.{k}") for k, d in ms.params.items()}

    def steps(self, shape: str, values: Mapping[str, dict]) -> list:
        return [self.method(m).step(values[m]) for m in split_chain(shape)]

    def params_of_seed(self, seed: Mapping[str, Any], where: str = "seed") -> dict:
        """Optuna params of a seed ``{"chain": SHAPE, METHOD: {OPTION: value}}`` (options left out are sampled)."""
        shape = seed.get("chain")
        if shape not in self.chains:
            raise SlimshipError(f"{where}: chain {shape!r} is not in the search space; choose one of "
                                f"{', '.join(self.chains)}")
        params = {"chain": shape}
        for m, vals in seed.items():
            if m == "chain":
                continue
            if m not in split_chain(shape):
                raise SlimshipError(f"{where}: {m!r} is not a step of chain {shape!r}: remove it or add it to the chain")
            ms = self.method(m)
            for k, v in (vals or {}).items():
                if k not in ms.params:
                    raise SlimshipError(f"{where}: {m} has no searched option {k!r}; options: {', '.join(ms.params)}")
                if not ms.params[k].contains(v):
                    raise SlimshipError(f"{where}: {m}.{k} = {v!r} is outside its range ({ms.params[k].describe()})")
                params[f"{m}.{k}"] = v
        return params

    def fingerprint(self) -> dict:
        """What makes two spaces the same study (seeds and sampler settings excluded: they may change on resume)."""
        return {"chains": list(self.chains),
                "params": {m.method: {k: repr(d) for k, d in m.params.items()} for m in self.methods}}


def split_chain(shape: str) -> list[str]:
    return [m for m in shape.split(SEP) if m]


def chain_shapes(methods: tuple[MethodSpace, ...], max_steps: int) -> tuple[str, ...]:
    """Every valid chain shape of up to ``max_steps`` methods: each method at most once, a terminal method
    (``int8``) last, ``precedes`` respected, no two methods that exclude each other. Shortest chains first."""
    terminal = {m.method for m in methods if METHODS.get(m.method).terminal}
    by = {m.method: m for m in methods}
    out = []
    for n in range(1, max_steps + 1):
        for combo in itertools.permutations(by, n):
            if any(c in terminal for c in combo[:-1]):
                continue
            if any(b in by[a].excludes or a in by[b].excludes for a, b in itertools.combinations(combo, 2)):
                continue
            if any(a in by[b].precedes for a, b in itertools.combinations(combo, 2)):  # b must come before a
                continue
            out.append(SEP.join(combo))
    return tuple(out)


def check_keys(d: Mapping, allowed: set[str], where: str) -> None:
    for k in d:
        if k not in allowed:
            raise SlimshipError(f"{where}: unknown key {k!r}; allowed: {', '.join(sorted(allowed))}")


def describe_values(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in values.items())


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) and math.isfinite(v) else str(v)


def chain_text(params: Mapping[str, Any]) -> str:
    """``prune_channels(macs_reduction=1.8, ...) > int8(qat_epochs=1)`` from a trial's params."""
    shape = params.get("chain", "")
    parts = []
    for m in split_chain(shape):
        vals = {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith(f"{m}.")}
        parts.append(f"{m}({describe_values(vals)})")
    return " > ".join(parts) or "(reference)"


__all__ = ["Choice", "Range", "MethodSpace", "SearchSpace", "SPACES", "register_space", "chain_shapes", "chain_text",
           "split_chain", "check_keys"]
