"""What a package's deploy graph may be: one self-contained ONNX model, and what it takes in and gives out.

ONNX lets any tensor keep its bytes in an outside file (``data_location: EXTERNAL`` plus a ``location`` such as
``secret.bin``). ONNX Runtime, given a graph as bytes, resolves such a location against the *current working
folder*: a package holding one would make ``slimship predict`` read a file of the user's. A ``.slim`` graph
must therefore hold every tensor inline, and :func:`check_graph` refuses any reference to external data wherever
ONNX can hold a tensor: initializers and sparse initializers, tensor attributes (``Constant``'s ``value``...) and
the subgraphs of control-flow nodes (``If``, ``Loop``, ``Scan``) at any depth, local functions and training
graphs. It is called wherever a graph enters or leaves a package (packing, reading, verifying, pushing, pulling).
"""

from __future__ import annotations

from dataclasses import dataclass

from slimship.core.errors import PackageError
from slimship.package._header import _show

FLOAT = 1  # onnx.TensorProto.FLOAT


@dataclass(frozen=True)
class GraphIO:
    """The inputs and outputs a graph declares. Shapes list each dimension's size, or None where it is
    symbolic ("batch") or unknown; ``None`` as a whole where the graph declares no shape. ``elem_type`` is the
    ONNX element type (1: float32; 0: not declared)."""

    inputs: tuple[tuple[str, int, tuple[int | None, ...] | None], ...]  # (name, elem_type, shape)
    outputs: tuple[tuple[str, int, tuple[int | None, ...] | None], ...]


def check_graph(onnx_bytes: bytes, source: str = "the package") -> GraphIO:
    """Parse ``onnx_bytes`` and return its :class:`GraphIO`. Raises PackageError (one line, naming
    ``source``) if it is not an ONNX model or any tensor in it refers to external data."""
    model = _parse(onnx_bytes, source)
    where = _first_external(model)
    if where is not None:
        raise PackageError(
            f"{_show(source)}: the deploy graph refers to data outside the package ({where}); a .slim graph must "
            "hold every tensor inline, and slimship never reads such files: re-create the package with slimship"
        )
    return _graph_io(model.graph)


def _parse(onnx_bytes: bytes, source: str):
    import onnx

    try:
        # load_from_string never follows external data (it has no folder to look in); checked below anyway.
        return onnx.load_from_string(bytes(onnx_bytes))
    except Exception as e:  # protobuf's DecodeError and friends share no useful base class
        raise PackageError(f"{_show(source)}: the deploy graph is not valid ONNX ({type(e).__name__}): "
                           "re-create the package with slimship") from None


def _first_external(model) -> str | None:
    """A description of the first tensor anywhere in ``model`` that keeps its data outside it, or None."""
    graphs = [model.graph]
    for info in model.training_info:
        graphs += [info.initialization, info.algorithm]
    attributes = []
    for function in model.functions:
        attributes += [a for node in function.node for a in node.attribute]
        attributes += list(function.attribute_proto)
    # Explicit stacks, not recursion: subgraphs nest as deep as the file says.
    while graphs or attributes:
        if graphs:
            graph = graphs.pop()
            for tensor in graph.initializer:
                found = _external(tensor, "initializer")
                if found:
                    return found
            for sparse in graph.sparse_initializer:
                found = _external(sparse.values, "sparse initializer") or _external(sparse.indices, "sparse initializer")
                if found:
                    return found
            attributes += [a for node in graph.node for a in node.attribute]
            continue
        attr = attributes.pop()
        tensors = list(attr.tensors) + ([attr.t] if attr.HasField("t") else [])
        for sparse in list(attr.sparse_tensors) + ([attr.sparse_tensor] if attr.HasField("sparse_tensor") else []):
            tensors += [sparse.values, sparse.indices]
        for tensor in tensors:
            found = _external(tensor, f"attribute {_show(attr.name)[:60]!r}")
            if found:
                return found
        if attr.HasField("g"):
            graphs.append(attr.g)
        graphs.extend(attr.graphs)
    return None


def _external(tensor, what: str) -> str | None:
    if tensor.data_location != 1 and not len(tensor.external_data):  # 1: onnx.TensorProto.EXTERNAL
        return None
    location = next((e.value for e in tensor.external_data if e.key == "location"), "")
    target = f" in file {_show(location)[:80]!r}" if location else ""
    return f"{what} {_show(tensor.name)[:60]!r} is stored{target}"


def _graph_io(graph) -> GraphIO:
    initialized = {t.name for t in graph.initializer}
    inputs = tuple(_value_info(v) for v in graph.input if v.name not in initialized)
    return GraphIO(inputs, tuple(_value_info(v) for v in graph.output))


def _value_info(v) -> tuple[str, int, tuple[int | None, ...] | None]:
    tensor = v.type.tensor_type
    shape = None
    if tensor.HasField("shape"):
        shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
    return v.name, int(tensor.elem_type), shape
