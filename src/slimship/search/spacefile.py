"""Space files (``slimship search --space FILE``): narrow the default search space, list chain shapes, add seed
trials and choose the sampler. The format is documented in :func:`load_space` and docs/search.md."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path
from typing import Mapping

from slimship.core.errors import SlimshipError
from slimship.search.methods import default_space
from slimship.search.space import SPACES, Choice, Domain, MethodSpace, Range, SearchSpace, chain_shapes, check_keys

def load_space(path: str | Path) -> SearchSpace:
    """A space file: which methods (and their options), which chain shapes, seed trials, the sampler.

    ```yaml
    max_steps: 3                       # longest chain (default 4)
    methods:                           # searched methods; an option left out keeps its default domain
      prune_channels: {macs_reduction: {low: 1.6, high: 2.2, step: 0.1}, importance: [taylor]}
      int8: {qat_epochs: [1]}
    chains: [prune_channels>int8]      # optional: only these shapes (default: every valid one)
    seeds:                             # optional: the first trials (options left out are sampled)
      - {chain: prune_channels>int8, prune_channels: {macs_reduction: 1.8}}
    sampler: {name: tpe, startup_trials: 4, prune_slack: 1.0}
    ```
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        raise SlimshipError(f"search space file {p} not found: give a YAML file (see docs/search.md)")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise SlimshipError(f"search space file {p} is not valid YAML: {getattr(e, 'problem', e)}") from None
    return space_from_dict(data, str(p))


def space_from_dict(data: Mapping, where: str = "search space") -> SearchSpace:
    """A :class:`SearchSpace` from a space file's content (see :func:`load_space`)."""
    if not isinstance(data, Mapping):
        raise SlimshipError(f"{where}: expected a mapping with methods, chains, seeds, sampler")
    check_keys(data, {"max_steps", "methods", "chains", "seeds", "sampler"}, where)
    base = default_space()
    methods = base.methods
    if data.get("methods") is not None:
        wanted = data["methods"]
        if not isinstance(wanted, Mapping) or not wanted:
            raise SlimshipError(f"{where}: methods must map method names to their options ({{}} for the defaults)")
        for name in wanted:
            if name not in SPACES:
                searchable = ", ".join(m.method for m in base.methods)
                raise SlimshipError(f"{where}: method {name!r} has no search space; searchable: {searchable}")
        methods = tuple(_override(m, wanted[m.method] or {}, where) for m in base.methods if m.method in wanted)
    max_steps = data.get("max_steps", 4)
    if not isinstance(max_steps, int) or max_steps < 1:
        raise SlimshipError(f"{where}: max_steps must be a whole number >= 1 (got {max_steps!r})")
    chains = chain_shapes(methods, max_steps)
    if data.get("chains") is not None:
        asked = tuple(str(c).replace(" ", "") for c in data["chains"])
        bad = [c for c in asked if c not in chains]
        if bad:
            raise SlimshipError(f"{where}: chain {bad[0]!r} is not valid with these methods (each method once, int8 "
                                f"last, in their order); valid: {', '.join(chains)}")
        chains = asked
    if not chains:
        raise SlimshipError(f"{where}: no chain is possible: add methods")
    sampler = dict(data.get("sampler") or {})
    check_keys(sampler, {"name", "startup_trials", "population", "prune_slack"}, f"{where}: sampler")
    space = SearchSpace(methods=methods, chains=chains, sampler=str(sampler.get("name", "tpe")),
                        startup_trials=int(sampler.get("startup_trials", 6)),
                        population=int(sampler.get("population", 8)),
                        prune_slack=float(sampler.get("prune_slack", 1.0)))
    if space.sampler not in ("tpe", "nsga2"):
        raise SlimshipError(f"{where}: sampler name {space.sampler!r} is unknown: use tpe or nsga2")
    if space.population < 2 or space.startup_trials < 0 or space.prune_slack < 0:
        raise SlimshipError(f"{where}: sampler needs population >= 2, startup_trials >= 0, prune_slack >= 0")
    seeds = tuple(space.params_of_seed(s, f"{where}: seeds[{i}]") for i, s in enumerate(data.get("seeds") or []))
    return replace(space, seeds=seeds)


def _override(ms: MethodSpace, opts: Mapping, where: str) -> MethodSpace:
    if not isinstance(opts, Mapping):
        raise SlimshipError(f"{where}: options of {ms.method} must be a mapping of option: values")
    params = dict(ms.params)
    for k, v in opts.items():
        if k not in params:
            raise SlimshipError(f"{where}: {ms.method} has no searched option {k!r}; options: {', '.join(params)}")
        params[k] = _domain(v, params[k], f"{where}: {ms.method}.{k}")
    out = replace(ms, params=params)
    for combo in itertools.islice(itertools.product(*(_corners(d) for d in params.values())), 64):
        out.step(dict(zip(params, combo)))  # every corner of the narrowed space must still be a valid step
    return out


def _domain(v, default: Domain, where: str) -> Domain:
    if isinstance(v, Mapping):
        check_keys(v, {"low", "high", "step"}, where)
        if isinstance(default, Choice) and not _same_kind(v.get("low"), default.values):
            raise SlimshipError(f"{where}: not a number; choose values from {default.describe()}")
        if "low" not in v or "high" not in v or not v["low"] <= v["high"]:
            raise SlimshipError(f"{where}: a range needs low <= high (and optionally step)")
        integer = isinstance(default, Range) and default.integer
        return Range(v["low"], v["high"], v.get("step"), integer=integer)
    values = tuple(v) if isinstance(v, (list, tuple)) else (v,)
    if not values:
        raise SlimshipError(f"{where}: give at least one value")
    if isinstance(default, Choice):
        bad = [x for x in values if x not in default.values and not _same_kind(x, default.values)]
        if bad:
            raise SlimshipError(f"{where}: {bad[0]!r} is not allowed; choose from {default.describe()}")
    elif any(not default.contains(x) and not isinstance(x, (int, float)) for x in values):
        raise SlimshipError(f"{where}: values must be numbers")
    return Choice(values)


def _same_kind(x, values: tuple) -> bool:
    """A number may replace numbers (epochs, bits); strings and booleans must be among the known ones."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _corners(d: Domain) -> tuple:
    if isinstance(d, Choice):
        return d.values
    return (int(d.low), int(d.high)) if d.integer else (d.low, d.high)


