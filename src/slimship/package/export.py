"""Export what a package holds into plain files other tools read: the deploy graph as ``.onnx``, and the
graph's initializers (fp32 weights, int8 weights, scales, zero points...) as ``.safetensors``.

The package is fully verified first; both files are written atomically (a hidden temporary file in
the target's folder, fsynced, then renamed over the target), so a reader never sees half a file.
Needs onnx, numpy and safetensors; never torch.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slimship.core.errors import PackageError, SlimshipError
from slimship.core.atomic import write_atomically
from slimship.package.format import read_package
from slimship.package.deploy import deploy_graph
from slimship.package.outputs import check_target, may_replace
from slimship.package.verify import check_package

# Exactly the dtypes safetensors.numpy reads back; anything else (strings, bfloat16, float8, int4) is
# refused up front with a clear message instead of a KeyError from inside safetensors.
_SAFETENSORS_DTYPES = frozenset(
    np.dtype(t) for t in (np.float64, np.float32, np.float16, np.int64, np.uint64, np.int32, np.uint32,
                          np.int16, np.uint16, np.int8, np.uint8, np.bool_, np.complex64)
)


@dataclass(frozen=True)
class ExportResult:
    """Paths written (None where not asked for), the number of tensors and their total bytes."""

    onnx: str | None
    safetensors: str | None
    tensors: int
    tensor_bytes: int


def export_package(
    package: str | os.PathLike[str],
    *,
    onnx: str | os.PathLike[str] | None = None,
    safetensors: str | os.PathLike[str] | None = None,
    force: bool = False,
) -> ExportResult:
    """Write ``package``'s deploy graph to ``onnx`` and/or its initializers to ``safetensors``.

    The ONNX file is the deploy graph ONNX Runtime runs for this package: the exact bytes of the
    ``model.onnx`` part, or for a package with compressed weights (``graph.onnx`` + ``weights.bin``) the
    graph with its weights decoded back in (bit-exact, as ``load_package`` does). The safetensors file maps
    every initializer's ONNX name to its value (``onnx.numpy_helper.to_array``, dtype kept), with
    metadata naming the source package and graph hashes. Missing parent folders are created. An existing file
    holding other bytes is replaced only with ``force``; one that is not a regular file never is.
    Raises SlimshipError if neither output is given, PackageError if the package is damaged or refused by
    ``verify``, has no deploy graph, holds an initializer safetensors cannot store, or an output exists.
    """
    if onnx is None and safetensors is None:
        raise SlimshipError("nothing to export: pass --onnx FILE and/or --safetensors FILE")
    for target in (onnx, safetensors):
        if target is not None:
            check_target(target)
    pkg = read_package(package, verify=True)
    check_package(pkg)  # a package refused by `verify` is not exported either
    graph = deploy_graph(pkg)
    tensors: dict[str, np.ndarray] = {}
    if safetensors is not None:
        tensors = onnx_initializers(graph, source=str(package))
        metadata = {"format": "onnx-initializers", "source_package_sha256": pkg.package_sha256,
                    "onnx_sha256": hashlib.sha256(graph).hexdigest()}
        write_atomically(Path(safetensors), lambda tmp: _save_safetensors(tensors, tmp, metadata),
                         verify=lambda tmp: may_replace(safetensors, tmp, force), error=PackageError)
    if onnx is not None:
        write_atomically(Path(onnx), lambda tmp: tmp.write_bytes(graph), verify=lambda tmp: may_replace(onnx, tmp, force),
                         error=PackageError)
    return ExportResult(
        onnx=None if onnx is None else str(onnx),
        safetensors=None if safetensors is None else str(safetensors),
        tensors=len(tensors),
        tensor_bytes=sum(t.nbytes for t in tensors.values()),
    )


def onnx_initializers(graph: bytes, source: str = "the graph") -> dict[str, np.ndarray]:
    """The main graph's initializers as {ONNX name: contiguous little-endian numpy array}, in graph
    order. Raises PackageError if the graph does not parse or a tensor cannot be stored in safetensors."""
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load_from_string(graph)
    except Exception as e:  # protobuf's DecodeError and friends share no useful base class
        raise PackageError(f"{source}: the deploy graph is not valid ONNX ({type(e).__name__}): re-create the package") from None
    out: dict[str, np.ndarray] = {}
    for init in model.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            raise PackageError(f"{source}: initializer {init.name!r} refers to external data; the package must hold it inline")
        array = numpy_helper.to_array(init)
        if array.dtype not in _SAFETENSORS_DTYPES:
            raise PackageError(
                f"{source}: initializer {init.name!r} has dtype {array.dtype}, which safetensors cannot store: "
                "export --onnx only"
            )
        # safetensors stores little-endian, C-contiguous data. Not np.ascontiguousarray: it turns
        # 0-d tensors (per-tensor scales, zero points) into shape (1,).
        out[init.name] = np.require(array.astype(array.dtype.newbyteorder("<"), copy=False), requirements="C")
    return out


def _save_safetensors(tensors: dict[str, np.ndarray], path: Path, metadata: dict[str, str]) -> None:
    from safetensors.numpy import save_file

    save_file(tensors, path, metadata=metadata)
