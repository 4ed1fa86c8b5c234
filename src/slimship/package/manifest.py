"""What a package's manifest may say: every value the readers use is checked against sane bounds and against the
deploy graph before anything trusts it.

The hashes of a package only prove it was not changed since it was written, not that the writer was honest; a
hash-valid manifest may still claim an image size of 100,000 pixels, 7 channels, a standard deviation of 0, or
3 class names for a graph with 10 outputs. :func:`check_manifest` turns each such claim into one
:class:`~slimship.core.errors.PackageError` line at read time (``verify``, ``inspect``, loading, pushing,
pulling), instead of a traceback or gigabytes of memory later. :func:`printable` makes any manifest text safe to
print on a terminal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import slimship.data.transforms  # noqa: F401  (registers the "image" preprocessing kind)
from slimship.core.errors import PackageError
from slimship.core.preprocessing import Preprocessing, preprocessing_from_dict
from slimship.package._header import _show
from slimship.package.graph_check import FLOAT, GraphIO

MAX_CLASSES = 100_000
MAX_TEXT_CHARS = 1_000  # a class name or the architecture
MAX_RUNTIME_BATCHES, MAX_BATCH = 64, 1_000_000  # model.runtime_by_batch: entries, largest batch size
# C0/C1 controls (ESC starts terminal escape sequences), line and paragraph separators, and the bidirectional
# overrides/isolates that make text display in another order than it reads ("Trojan source").
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_REMEDY = "re-create the package with `slimship run`"
# Values the readers use besides class names and preprocessing, by the type they must have where present.
_TYPED = [("manifest", key, dict) for key in ("recipe", "metrics", "delta", "rebuilt_from")]
_TYPED += [("manifest", key, str) for key in ("card", "created", "slimship_version")]
_TYPED += [("model", key, dict) for key in ("arch_edits", "weights_encoding")]


@dataclass(frozen=True)
class ModelDescription:
    """What a checked manifest says about the model: its class names (empty for a base package, whose graph gives
    features) and its preprocessing."""

    class_names: list[str]
    preprocessing: Preprocessing


def check_manifest(manifest: Any, graph: GraphIO | None, source: str = "the package", *,
                   remedy: str = _REMEDY) -> ModelDescription:
    """Check ``manifest["model"]`` and ``manifest["preprocessing"]``, and, with ``graph`` (the deploy graph's
    :class:`~slimship.package.graph_check.GraphIO`), that the graph takes exactly one float input of the
    preprocessing's shape and, where there are class names, gives one float score per class.

    Raises PackageError naming ``source`` and the first bad value, ending with ``remedy``."""
    shown = _show(source)

    def bad(problem: str) -> PackageError:
        return PackageError(f"{shown}: {problem}: {remedy}")

    model = manifest.get("model") if isinstance(manifest, dict) else None
    if not isinstance(model, dict):
        raise bad("the manifest lacks a model description")
    for where, key, kind in _TYPED:
        container = manifest if where == "manifest" else model
        if key in container and not isinstance(container[key], kind):
            raise bad(f"the manifest's {'' if where == 'manifest' else 'model '}{key} must be "
                      f"{'an object' if kind is dict else 'a string'}")
    names = model.get("class_names")
    if not isinstance(names, list) or len(names) > MAX_CLASSES:
        raise bad(f"the manifest's class_names must be a list of at most {MAX_CLASSES:,} names")
    for name in names:
        problem = text_problem(name)
        if problem:
            raise bad(f"class name {_show(repr(name))[:60]} {problem}")
    count = model.get("num_classes", len(names))
    if count != len(names) or isinstance(count, bool):
        raise bad(f"the manifest says num_classes {_show(repr(count))[:20]} but lists {len(names)} class names")
    for key in ("architecture", "runtime"):
        if key in model and text_problem(model[key]):
            raise bad(f"the manifest's model {key} {text_problem(model[key])}")
    table = model.get("runtime_by_batch", {})
    if not isinstance(table, dict) or len(table) > MAX_RUNTIME_BATCHES or any(
            not (isinstance(b, str) and b.isdigit() and 0 < int(b) <= MAX_BATCH) or text_problem(rt)
            for b, rt in table.items()):
        raise bad(f"the manifest's model runtime_by_batch must map at most {MAX_RUNTIME_BATCHES} batch sizes "
                  f"(whole numbers 1-{MAX_BATCH:,}, as text) to runtime names")
    # A runtime this slimship does not know is not refused: the graph is ONNX, and loading falls back to
    # ONNX Runtime (package/pack.py), so a package from a newer slimship still runs here.
    try:
        pre = preprocessing_from_dict(manifest.get("preprocessing"))
    except PackageError as e:
        raise PackageError(f"{shown}: {e}") from None
    if graph is not None:
        _check_graph(graph, pre, names, bad)
    return ModelDescription(list(names), pre)


def text_problem(value: Any) -> str | None:
    """Why ``value`` cannot be a class name or architecture (None if it can): not a string, over
    MAX_TEXT_CHARS, or holding control or bidirectional-override characters."""
    if not isinstance(value, str):
        return "is not a string"
    if len(value) > MAX_TEXT_CHARS:
        return f"is over {MAX_TEXT_CHARS} characters"
    if _UNSAFE.search(value):
        return "holds control characters (such as terminal escapes)"
    return None


def printable(value: Any, limit: int = 200) -> str:
    """``value`` as text safe for a terminal: control and other non-printable characters escaped (``\\x1b``),
    at most ``limit`` characters (then ``…``)."""
    text = _show(value if isinstance(value, str) else str(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_graph(graph: GraphIO, pre: Preprocessing, names: list[str], bad) -> None:
    if len(graph.inputs) != 1:
        raise bad(f"the deploy graph takes {len(graph.inputs)} inputs, but a package feeds exactly one")
    _, elem, shape = graph.inputs[0]
    want = pre.input_shape()
    kind = getattr(pre, "onnx_input_type", FLOAT)  # what the preprocessing feeds: float32 images, int64 token ids
    if elem not in (0, kind):
        raise bad(f"the deploy graph takes inputs of ONNX type {elem}, not the {pre.kind} preprocessing's {kind}")
    if shape is not None and (len(shape) != 1 + len(want)
                              or any(None not in (d, w) and d != w for d, w in zip(shape[1:], want))):
        raise bad(f"the preprocessing makes inputs of shape {_dims(('batch', *want))} but the deploy "
                  f"graph takes {_dims(shape)}")
    if not graph.outputs:
        raise bad("the deploy graph has no output")
    if not names:
        return  # a base package: its graph gives features, not one score per class
    _, elem, shape = graph.outputs[0]
    if elem not in (0, FLOAT):
        raise bad(f"the deploy graph gives outputs of ONNX type {elem}, not float32 scores")
    if shape is not None and (len(shape) != 2 or shape[1] not in (None, len(names))):
        raise bad(f"the manifest lists {len(names)} class names but the deploy graph gives outputs of shape "
                  f"{_dims(shape)}")


def _dims(shape: tuple) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
