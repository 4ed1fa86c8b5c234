"""Where a package keeps its deploy graph: the part names, how a graph becomes parts, and the one way parts
become the graph again.

A graph is stored whole (``model.onnx``) or, for compressed models, as a skeleton without its big weights
(``graph.onnx``) plus the weights in slimship's exact compressed encoding (``weights.bin``; see
:mod:`slimship.package.weights_codec`). Either way the graph read back is bit-identical to the one measured.

Both directions check the graph (:func:`~slimship.package.graph_check.check_graph`): a graph that refers to data
outside the package is never packed, and never handed out by a package.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from slimship.core.errors import PackageError
from slimship.package.graph_check import GraphIO, check_graph

ONNX_PART = "model.onnx"  # the whole deploy graph
GRAPH_PART = "graph.onnx"  # the graph without its big weights (with WEIGHTS_PART)
WEIGHTS_PART = "weights.bin"  # weights in slimship's compressed encoding


@dataclass(frozen=True)
class DeployParts:
    """A deploy graph as package parts, plus what the manifest's ``model`` records about their encoding."""

    parts: dict[str, bytes]
    model_info: dict = field(default_factory=dict)

    def graph(self) -> bytes:
        """The ONNX graph these parts decode to (what loading the package gives)."""
        return graph_from_parts(self.parts.__getitem__, self.parts, "the package")


def deploy_parts(onnx: bytes, *, encode_weights: bool = False) -> DeployParts:
    """``onnx`` as parts: whole, or (``encode_weights``) skeleton + exactly encoded weights. Raises PackageError
    if ``onnx`` is not ONNX or refers to external data."""
    check_graph(onnx, "the graph to pack")
    if not encode_weights:
        return DeployParts({ONNX_PART: onnx})
    from slimship.package.weights_codec import encode_graph

    skeleton, blob, info = encode_graph(onnx)
    return DeployParts({GRAPH_PART: skeleton, WEIGHTS_PART: blob}, {"weights_encoding": info})


def graph_from_parts(read, names, source: str) -> bytes:
    """The deploy graph from parts ``names`` (a container of part names) read with ``read(name)``. Raises
    PackageError when there is none, or when it is not a self-contained ONNX graph."""
    return deploy_graph_io(read, names, source)[0]


def deploy_graph_io(read, names, source: str) -> tuple[bytes, GraphIO]:
    """:func:`graph_from_parts` and the checked graph's inputs and outputs."""
    if ONNX_PART in names:
        onnx = read(ONNX_PART)
    elif GRAPH_PART in names and WEIGHTS_PART in names:
        from slimship.package.weights_codec import decode_graph

        onnx = decode_graph(read(GRAPH_PART), read(WEIGHTS_PART))
    else:
        raise _no_graph(source)
    return onnx, check_graph(onnx, source)


def graph_part(names, source: str = "the package") -> str:
    """The part holding the deploy graph's structure: ``model.onnx``, or ``graph.onnx`` (the skeleton, whose
    weights are in ``weights.bin``). Raises PackageError when there is none."""
    if ONNX_PART in names:
        return ONNX_PART
    if GRAPH_PART in names and WEIGHTS_PART in names:
        return GRAPH_PART
    raise _no_graph(source)


def _no_graph(source: str) -> PackageError:
    return PackageError(f"{source}: the package has no deploy graph ({ONNX_PART}, or {GRAPH_PART} with "
                       f"{WEIGHTS_PART}); re-create it with `slimship run`")


def deploy_graph(pkg) -> bytes:
    """The full ONNX deploy graph of a verified :class:`~slimship.package.format.Package` (not a delta
    package: see :func:`slimship.package.delta.package.load_task_onnx`)."""
    return graph_from_parts(pkg.read_part, pkg.parts, str(pkg.path))
