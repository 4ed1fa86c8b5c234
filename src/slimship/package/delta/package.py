"""Delta packages: :func:`pack_delta` writes a ``.slim`` holding a delta, :func:`load_task_onnx` rebuilds it."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

from slimship.errors import PackageError
from slimship.package.delta.config import DELTA_PART
from slimship.package.delta.decode import _open_blob, apply_delta


def pack_delta(path: str | Path, *, base_package: str | Path, task_package: str | Path, blob: bytes,
               info: dict) -> int:
    """Write a delta package; returns its size in bytes.

    The manifest is the task package's (its ``metrics`` are the full fine-tune's) plus ``delta``:
    ``base_package_sha256``, ``base_graph_sha256``, ``mode`` and ``info``. The only part is ``delta.bin``:
    the blob is self-contained (it carries the task's graph skeleton, head included). Raises ValueError if
    the blob was not made against the base package's graph, PackageError if a package does not read.
    """
    from slimship.package.format import read_package, write_package
    from slimship.package.pack import ONNX_PART

    base = read_package(base_package)
    if ONNX_PART not in base.parts:
        raise PackageError(f"{base_package} has no {ONNX_PART}: pass a full package as the base")
    base_graph = hashlib.sha256(base.read_part(ONNX_PART)).hexdigest()
    header, _ = _open_blob(blob)
    if header["base_sha256"] != base_graph:
        raise ValueError(f"the blob was made against base graph {header['base_sha256'][:16]}..., not the graph of "
                         f"{base_package} ({base_graph[:16]}...): encode it against this base")
    task = read_package(task_package)
    manifest = copy.deepcopy(task.manifest)
    manifest["delta"] = {
        "base_package_sha256": base.package_sha256,
        "base_graph_sha256": base_graph,
        "mode": header["mode"],
        "info": json.loads(json.dumps(info, default=str, allow_nan=False)),
    }
    return write_package(path, manifest, {DELTA_PART: bytes(blob)}, codecs={DELTA_PART: "none"})


def load_task_onnx(delta_package_path: str | Path, base_package_path: str | Path) -> bytes:
    """Rebuild the task ONNX from a delta package and its base package (both fully verified).

    The base must be the package the delta was made from, or a re-pack of the same base graph (the graph
    hash decides: it is what the reconstruction depends on). Raises PackageError otherwise.
    """
    from slimship.package.format import read_package
    from slimship.package.pack import ONNX_PART

    pkg = read_package(delta_package_path)
    meta = pkg.manifest.get("delta")
    if (not isinstance(meta, dict) or DELTA_PART not in pkg.parts
            or not all(isinstance(meta.get(k), str) for k in ("base_package_sha256", "base_graph_sha256"))):
        raise PackageError(f"{delta_package_path} is not a delta package (no delta manifest entry or no "
                           f"{DELTA_PART}): load it with slimship.package.pack.load_package instead")
    base = read_package(base_package_path)
    if ONNX_PART not in base.parts:
        raise PackageError(f"{base_package_path} has no {ONNX_PART}: pass the full base package the delta was "
                           f"made from")
    base_onnx = base.read_part(ONNX_PART)
    graph = hashlib.sha256(base_onnx).hexdigest()
    if base.package_sha256 != meta["base_package_sha256"] and graph != meta["base_graph_sha256"]:
        raise PackageError(
            f"{base_package_path} is not the base of {delta_package_path} (package sha256 "
            f"{base.package_sha256[:16]}..., expected {meta['base_package_sha256'][:16]}...): pass the base "
            f"package the delta was made from"
        )
    return apply_delta(base_onnx, pkg.read_part(DELTA_PART))
