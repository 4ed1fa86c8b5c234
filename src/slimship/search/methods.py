"""The search spaces of the built-in compression methods: which options a search varies, over what range.

The defaults carry what was measured (docs/compression.md): channel pruning with Taylor importance and global
scope kept far more accuracy than magnitude and one ratio per layer; channel counts in multiples of 16 let
ONNX Runtime's int8 kernels run fast; k-means sharing spares depthwise kernels, which then go to per-channel
int8 (``weight_only`` on depthwise); every recovery is a distilled fine-tune measured in epochs, so a busy
machine changes how long a trial takes, not its result. Each built step matches what a recipe would write
for the same options, so a searched chain shares cached steps with a hand-written candidate.
"""

from __future__ import annotations

from slimship.compress import METHODS
from slimship.search.space import SPACES, Choice, MethodSpace, Range, SearchSpace, chain_shapes, register_space

_loaded = False


def recovery(epochs: float, lr: float) -> dict:
    """A distilled recovery of ``epochs`` (never seconds: results must not depend on the machine's load)."""
    return {"epochs": float(epochs), "seconds": None, "lr": lr, "kd_alpha": 0.7}


def _prune_channels(v: dict) -> dict:
    return {"method": "prune_channels", "macs_reduction": v["macs_reduction"], "steps": v["steps"],
            "importance": v["importance"], "scope": v["scope"], "round_to": v["round_to"],
            "recovery": recovery(v["recovery_epochs"], 5e-4)}


def _drop_blocks(v: dict) -> dict:
    return {"method": "drop_blocks", "drop": v["drop"], "recovery": recovery(v["recovery_epochs"], 5e-4)}


def _downscale(v: dict) -> dict:
    return {"method": "downscale", "factor": v["factor"], "recovery": recovery(v["recovery_epochs"], 5e-4)}


def _lowrank(v: dict) -> dict:
    return {"method": "lowrank", "energy": v["energy"], "recovery": recovery(v["recovery_epochs"], 5e-4)}


_ALLOCATION = {"sensitivity": {"allocation": "sensitivity"}, "uniform": {}, "global": {"scope": "global"}}


def _unstructured(v: dict) -> dict:
    return {"method": "unstructured", "sparsity": v["sparsity"], **_ALLOCATION[v["allocation"]],
            "recovery": recovery(v["recovery_epochs"], 5e-4)}


def _kmeans(v: dict) -> dict:
    return {"method": "kmeans", "bits": v["bits"], "recovery": recovery(v["recovery_epochs"], 1e-4)}


_WEIGHT_ONLY = {
    "int8-depthwise": {"bits": 8, "layers": "depthwise"},
    "int8-all": {"bits": 8, "layers": "all"},
    "int4-all": {"bits": 4, "layers": "all", "granularity": "group", "group_size": 128},
    "int8-linear": {"bits": 8},
    "int4-linear": {"bits": 4, "granularity": "group", "group_size": 128},
}


def _weight_only(v: dict) -> dict:
    return {"method": "weight_only", **_WEIGHT_ONLY[v["variant"]]}


def _int8(v: dict) -> dict:
    e = v["qat_epochs"]
    return {"method": "int8", **({"qat": recovery(e, 5e-5)} if e else {})}


def _drop_layers(v: dict) -> dict:
    return {"method": "drop_layers", "keep": v["keep"], "select": v["select"],
            "recovery": recovery(v["recovery_epochs"], 1e-4)}


def _prune_transformer(v: dict) -> dict:
    return {"method": "prune_transformer", "heads": v["heads"], "ffn": v["ffn"], "steps": v["steps"],
            "recovery": recovery(v["recovery_epochs"], 1e-4)}


# structural edits first, then zeros, then shared values, then grids; int8 (terminal) last
_AFTER_STRUCTURE = frozenset({"unstructured", "kmeans", "weight_only"})


def load_builtin_spaces() -> None:
    """Register the spaces of the built-in methods (idempotent; cheap, no torch)."""
    global _loaded
    if _loaded:
        return
    register_space(MethodSpace(
        "prune_channels",
        {"macs_reduction": Range(1.2, 2.2, 0.1), "importance": Choice(("taylor", "magnitude")),
         "scope": Choice(("global", "layer")), "round_to": Choice((16, 8)), "steps": Range(1, 3, 1, integer=True),
         "recovery_epochs": Range(1, 6, 1)},
        _prune_channels, precedes=_AFTER_STRUCTURE), help="MACs target, importance, scope, round_to, rounds, recovery")
    # image models only (requires ImageModel): whole blocks go first (chosen at full resolution), then the
    # resolution, then channels
    register_space(MethodSpace(
        "drop_blocks", {"drop": Range(0.2, 0.9, 0.1), "recovery_epochs": Range(2, 8, 1)},
        _drop_blocks, precedes=frozenset({"downscale", "prune_channels", "lowrank", *_AFTER_STRUCTURE})),
        help="fraction of the droppable blocks removed, recovery")
    register_space(MethodSpace(
        "downscale", {"factor": Choice((2,)), "recovery_epochs": Range(2, 6, 1)},
        _downscale, precedes=frozenset({"prune_channels", "lowrank", *_AFTER_STRUCTURE})),
        help="resolution inside the model (input pooled factor x factor), recovery")
    register_space(MethodSpace(
        "lowrank", {"energy": Range(0.85, 0.99, 0.01), "recovery_epochs": Range(0.5, 3, 0.5)},
        _lowrank, precedes=_AFTER_STRUCTURE), help="energy kept, recovery")
    register_space(MethodSpace(
        "unstructured",
        {"sparsity": Range(0.4, 0.8, 0.05), "allocation": Choice(("sensitivity", "uniform", "global")),
         "recovery_epochs": Range(1, 4, 0.5)},
        _unstructured, precedes=frozenset({"kmeans", "weight_only"})), help="sparsity, allocation, recovery")
    # kmeans and weight_only fix weight values; int8 would re-code every weight and undo them
    register_space(MethodSpace(
        "kmeans", {"bits": Range(3, 5, 1, integer=True), "recovery_epochs": Range(0.5, 2, 0.5)},
        _kmeans, precedes=frozenset({"weight_only"}), excludes=frozenset({"int8"})), help="bits, recovery")
    register_space(MethodSpace(
        "weight_only", {"variant": Choice(tuple(_WEIGHT_ONLY))}, _weight_only, excludes=frozenset({"int8"})),
        help="int8/int4 weights: depthwise, all or Linear layers")
    # transformers only (the methods require TransformerOps; default_space(adapter) leaves them out elsewhere)
    register_space(MethodSpace(
        "drop_layers", {"keep": Range(0.34, 0.67, 0.165), "select": Choice(("even", "greedy")),
                        "recovery_epochs": Range(1, 3, 0.5)},
        _drop_layers, precedes=frozenset({"prune_transformer", "lowrank", *_AFTER_STRUCTURE})),
        help="layers kept, how they are chosen, recovery")
    register_space(MethodSpace(
        "prune_transformer", {"heads": Range(0, 0.5, 0.125), "ffn": Range(0.25, 0.75, 0.125),
                              "steps": Range(1, 3, 1, integer=True), "recovery_epochs": Range(1, 3, 0.5)},
        _prune_transformer, precedes=frozenset({"lowrank", *_AFTER_STRUCTURE}), excludes=frozenset({"prune_channels"})),
        help="heads and FFN neurons removed, rounds, recovery")
    register_space(MethodSpace("int8", {"qat_epochs": Choice((0, 0.5, 1))}, _int8),
                   help="int8 for ONNX Runtime, with or without QAT")
    _loaded = True


def default_space(max_steps: int = 4, adapter=None) -> SearchSpace:
    """Every registered method that has a search space, with its default options; given the model's
    ``adapter``, only the methods that apply to its kind (``Method.requires``)."""
    load_builtin_spaces()
    methods = tuple(SPACES.get(n) for n in METHODS.names()
                    if n in SPACES and (adapter is None or METHODS.get(n).applies_to(adapter)))
    return SearchSpace(methods=methods, chains=chain_shapes(methods, max_steps))
