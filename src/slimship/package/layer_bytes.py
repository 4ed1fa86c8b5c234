"""Where a package's bytes go: one row per weight tensor, with its encoding and its share of the compressed file.

The container compresses each part as one stream (see package-format.md), so a tensor's compressed size is not
recorded anywhere. It is estimated here by compressing that tensor's stored bytes alone with the part's codec
and settings, as a raw stream (no per-stream header), so the estimates of a part add up to about its real stored
size; :func:`part_bytes` gives the real sizes from the container for comparison.

Example::

    rows = layer_bytes("model.slim")
    print(format_layer_table(rows, part_bytes("model.slim")))
"""

from __future__ import annotations

import lzma
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slimship.core.errors import PackageError
from slimship.package.format import _LZMA_PRESET, _ZLIB_LEVEL, read_package
from slimship.package._header import _show
from slimship.package.deploy import GRAPH_PART, ONNX_PART, WEIGHTS_PART
from slimship.package.graph_check import check_graph

_SKIP_TYPES = (6, 7)  # onnx.TensorProto INT32, INT64: shape and index constants, not weights


@dataclass(frozen=True)
class TensorBytes:
    """One weight tensor of a package."""

    name: str  # the graph initializer's name
    layer: str  # module path of the first node that reads it ("" if none), e.g. "blocks.0.attn.qkv"
    part: str  # the package part that stores it
    shape: tuple[int, ...]
    dtype: str  # numpy name of the decoded tensor
    params: int
    nonzeros: int
    encoding: str  # raw | sparse | shared | half | qint (weights.bin) or in-graph (inside the ONNX graph)
    stored_bytes: int  # bytes in the part before the container compresses it
    compressed_bytes: int  # estimate: these bytes compressed alone with the part's codec


@dataclass(frozen=True)
class PartBytes:
    """One part as the container stores it (real sizes, not estimates)."""

    name: str
    codec: str
    raw_bytes: int
    stored_bytes: int


def part_bytes(path: str | Path) -> list[PartBytes]:
    """The package's parts with their codec, decoded and stored sizes (header only: fast)."""
    pkg = read_package(path, verify=False)
    return [PartBytes(p.name, p.codec, p.raw_size, p.stored_size) for p in pkg.parts.values()]


def layer_bytes(path: str | Path) -> list[TensorBytes]:
    """One row per weight tensor of the package at ``path``, in graph order.

    Reads every part it uses through the verifying reader and decodes every tensor (for its nonzero count).
    The compression estimates cost about what compressing the part cost when the package was written. Raises
    PackageError if the package is damaged or has no deploy graph (``model.onnx``, or ``graph.onnx`` with
    ``weights.bin``).
    """
    from onnx import numpy_helper

    from slimship.package.weights_codec import decode_tensor, read_blob

    pkg = read_package(path, verify=False)  # read_part verifies each part it returns
    if ONNX_PART in pkg.parts:
        graph_part, blob_entries = ONNX_PART, []
    elif GRAPH_PART in pkg.parts and WEIGHTS_PART in pkg.parts:
        graph_part, blob_entries = GRAPH_PART, read_blob(pkg.read_part(WEIGHTS_PART))
    else:
        raise PackageError(f"{path} has no deploy graph ({ONNX_PART}, or {GRAPH_PART} with {WEIGHTS_PART}): the layer "
                           f"view needs a full package (a delta package holds only changes: inspect its base)")
    data = pkg.read_part(graph_part)
    check_graph(data, str(path))  # numpy_helper.to_array below would read external data from the working folder
    graph = _load_graph(data)
    layers = _layer_of_initializer(graph)
    encoded = {}
    for e, chunks in blob_entries:
        a = decode_tensor(e, chunks)
        encoded[e["name"]] = TensorBytes(
            e["name"], layers.get(e["name"], ""), WEIGHTS_PART, tuple(a.shape), str(a.dtype), int(a.size),
            int(np.count_nonzero(a)), str(e["enc"]), sum(len(c) for c in chunks),
            _compressed_size(b"".join(chunks), pkg.parts[WEIGHTS_PART].codec))
    rows, codec = [], pkg.parts[graph_part].codec
    for init in graph.graph.initializer:
        if init.name in encoded:
            rows.append(encoded.pop(init.name))
            continue
        if init.data_type in _SKIP_TYPES:
            continue
        try:
            a = numpy_helper.to_array(init)
        except Exception:
            raise PackageError(f"{path}: graph tensor {init.name!r} cannot be read; re-create the package") from None
        rows.append(TensorBytes(init.name, layers.get(init.name, ""), graph_part, tuple(a.shape), str(a.dtype),
                                int(a.size), int(np.count_nonzero(a)), "in-graph", int(a.nbytes),
                                _compressed_size(a.tobytes(), codec)))
    if encoded:
        raise PackageError(f"{path}: weights blob tensor {next(iter(encoded))!r} is not in the graph; re-create the package")
    return rows


def format_layer_table(rows: list[TensorBytes], parts: list[PartBytes] | None = None) -> str:
    """A plain-text table of ``rows`` (plus totals, and the container's real part sizes when given)."""
    est_total = sum(r.compressed_bytes for r in rows) or 1
    head = ("tensor", "shape", "params", "nonzero", "encoding", "stored", "compressed~", "share")
    body = []
    for r in rows:
        name = f"{r.layer} ({r.name})" if r.name.startswith("onnx::") and r.layer else r.name
        body.append((_show(name)[:200], "x".join(map(str, r.shape)) or "scalar", f"{r.params:,}",
                     f"{100 * r.nonzeros / max(r.params, 1):.1f}%", r.encoding, _size(r.stored_bytes),
                     _size(r.compressed_bytes), f"{100 * r.compressed_bytes / est_total:.1f}%"))
    body.append(("total", "", f"{sum(r.params for r in rows):,}",
                 f"{100 * sum(r.nonzeros for r in rows) / max(sum(r.params for r in rows), 1):.1f}%", "",
                 _size(sum(r.stored_bytes for r in rows)), _size(sum(r.compressed_bytes for r in rows)), "100.0%"))
    widths = [max(len(str(row[i])) for row in [head, *body]) for i in range(len(head))]

    def line(row) -> str:
        return "  ".join(str(c).ljust(w) if i in (0, 1, 4) else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    out = [line(head), *(line(b) for b in body[:-1]), "-" * len(line(head)), line(body[-1])]
    if parts:
        out.append("")
        out.append("parts as stored (real sizes; compressed~ above is each tensor compressed alone, an estimate):")
        for p in parts:
            tensors = sum(r.stored_bytes for r in rows if r.part == p.name)
            extra = f" (tensors above: {_size(tensors)} of the raw)" if tensors else ""
            out.append(f"  {p.name} [{p.codec}]: {_size(p.raw_bytes)} raw -> {_size(p.stored_bytes)} stored{extra}")
        out.append(f"  all parts: {_size(sum(p.stored_bytes for p in parts))} stored")
    return "\n".join(out)


def _size(n: int) -> str:
    for unit, step in (("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= step:
            return f"{n / step:.1f} {unit}"
    return f"{n} B"


def _compressed_size(data: bytes, codec: str) -> int:
    """``data`` compressed alone like the container's codec would, as a raw stream (no per-stream framing)."""
    if codec == "lzma":
        # the container's preset; a dictionary no larger than the data gives the same size cheaper
        dict_size = max(4096, min(64 << 20, 1 << max(len(data) - 1, 1).bit_length()))
        filters = [{"id": lzma.FILTER_LZMA2, "preset": _LZMA_PRESET, "dict_size": dict_size}]
        return len(lzma.compress(data, format=lzma.FORMAT_RAW, filters=filters))
    if codec == "zlib":
        c = zlib.compressobj(_ZLIB_LEVEL, zlib.DEFLATED, -15)
        return len(c.compress(data) + c.flush())
    return len(data)


def _load_graph(data: bytes):
    import onnx

    try:
        return onnx.load_from_string(data)
    except Exception:
        raise PackageError("the package's graph is not valid ONNX; re-create the package") from None


def _layer_of_initializer(model) -> dict[str, str]:
    """initializer name -> module path of the first node reading it (from the exporter's node names)."""
    out: dict[str, str] = {}
    for node in model.graph.node:
        path = _module_path(node.name)
        for name in node.input:
            out.setdefault(name, path)
    return out


def _module_path(node_name: str) -> str:
    """'/blocks/blocks.0/attn/qkv/MatMul' -> 'blocks.0.attn.qkv' (PyTorch's exporter scopes node names)."""
    names: list[str] = []
    for p in [p for p in node_name.split("/") if p][:-1]:  # the last one names the operator
        if names and p.startswith(names[-1] + "."):  # a Sequential's child is scoped "conv.0" inside "conv"
            names[-1] = p
        else:
            names.append(p)
    return ".".join(names)
