"""Delta packages: :func:`pack_delta` writes a ``.slim`` holding a delta, :func:`load_task_onnx` rebuilds the
task graph from it and its base, :func:`rebuild_package` writes the task back as a normal full package, and
:func:`find_base` locates the base package of a delta package on disk (:func:`full_package` does both for
tools that need a full package file)."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from slimship.core.errors import PackageError
from slimship.package.delta.config import DELTA_PART
from slimship.package.delta.decode import _open_blob, apply_delta
from slimship.package.graph_check import check_graph

_TRAILER = 32  # bytes: a package file ends with the SHA-256 of everything before it (its package hash)


def pack_delta(path: str | Path, *, base_package: str | Path, task_package: str | Path, blob: bytes,
               info: dict) -> int:
    """Write a delta package; returns its size in bytes.

    The manifest is the task package's (its ``metrics`` are the full fine-tune's) plus ``delta``:
    ``base_package_sha256``, ``base_graph_sha256``, ``mode`` and ``info``. The parts are ``delta.bin`` (the
    blob is self-contained: it carries the task's graph skeleton, head included) and the data files the task's
    preprocessing reads (a text model's ``tokenizer.json``), copied from the task package. Raises ValueError if
    the blob was not made against the base package's graph, PackageError if a package does not read.
    """
    from slimship.package.format import read_package, write_package

    base = read_package(base_package)
    base_graph = hashlib.sha256(_base_graph(base, base_package)).hexdigest()
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
    return write_package(path, manifest, {DELTA_PART: bytes(blob), **_preprocessing_parts(task, task_package)},
                         codecs={DELTA_PART: "none"})


def _preprocessing_parts(pkg, path: str | Path) -> dict[str, bytes]:
    """The data files (parts) ``pkg``'s preprocessing reads, e.g. a tokenizer, checked against its manifest."""
    from slimship.core.preprocessing import preprocessing_files, preprocessing_from_dict

    try:
        return preprocessing_files(preprocessing_from_dict(pkg.manifest["preprocessing"], pkg.read_part))
    except (KeyError, TypeError) as e:
        raise PackageError(f"{path}: its preprocessing or a data file it names is missing ({str(e)[:80]}); "
                           f"re-create the package") from None


def is_delta_manifest(manifest: dict) -> bool:
    """True for the manifest of a delta package (it has a ``delta`` entry; whether that entry is intact is
    checked when the package is rebuilt)."""
    return isinstance(manifest, dict) and "delta" in manifest


def load_task_onnx(delta_package_path: str | Path, base_package_path: str | Path) -> bytes:
    """Rebuild the task ONNX from a delta package and its base package (both fully verified).

    The base must be the package the delta was made from, or a re-pack of the same base graph (the graph
    hash decides: it is what the reconstruction depends on). Raises PackageError otherwise.
    """
    from slimship.package.format import read_package

    return task_onnx(read_package(delta_package_path), delta_package_path, base_package_path)[0]


def rebuild_package(delta_package_path: str | Path, base_package_path: str | Path, out: str | Path) -> int:
    """Write the task of a delta package as a normal full package at ``out`` (atomically); returns its size.

    The manifest is the delta package's without its ``delta`` entry, plus ``rebuilt_from``: the ids (SHA-256
    of the whole file, as a store names packages) of the base and the delta package, and the delta's mode.
    The graph is stored whole as ``model.onnx`` beside the preprocessing's data files (a tokenizer), so
    ``load_package``, ``eval``, ``predict`` and ``export`` need nothing else. Raises PackageError as :func:`load_task_onnx` does.
    """
    from slimship.package.format import read_package, sha256_file, write_package
    from slimship.package.deploy import ONNX_PART

    pkg = read_package(delta_package_path)
    onnx, meta = task_onnx(pkg, delta_package_path, base_package_path)
    manifest = copy.deepcopy(pkg.manifest)
    del manifest["delta"]
    if isinstance(manifest.get("model"), dict):
        manifest["model"].pop("weights_encoding", None)  # the task's own encoding; the rebuilt graph is whole
    manifest["rebuilt_from"] = {"base_package": sha256_file(base_package_path),
                                "delta_package": sha256_file(delta_package_path), "mode": meta.get("mode")}
    return write_package(out, manifest, {ONNX_PART: onnx, **_preprocessing_parts(pkg, delta_package_path)})


def find_base(delta_package_path: str | Path, manifest: dict, base: str | Path | None = None) -> Path:
    """The base package file for a delta package: ``base`` when given, else a ``*.slim`` in the delta
    package's folder whose package hash (its last 32 bytes: a cheap check; the full verification follows
    when the task is rebuilt) is the recorded ``base_package_sha256``.

    Raises PackageError naming the base package to supply when none is found.
    """
    if base is not None:
        return Path(base)
    want = _meta(manifest, delta_package_path)["base_package_sha256"]
    here = Path(delta_package_path)
    for candidate in sorted(here.parent.glob("*.slim")):
        try:
            if candidate.samefile(here) or candidate.stat().st_size < _TRAILER:
                continue
            with open(candidate, "rb") as f:
                f.seek(-_TRAILER, os.SEEK_END)
                if f.read(_TRAILER).hex() == want:
                    return candidate
        except OSError:
            continue
    raise PackageError(
        f"{delta_package_path} is a delta package and its base (package sha256 {want}) is not in its folder: "
        f"pass the base package with --base BASE.slim (base= in Python), or pull the task from its store as a "
        f"full package"
    )


@contextmanager
def full_package(path: str | Path, base: str | Path | None = None) -> Iterator[Path]:
    """A full package file for ``path``: ``path`` itself for a full package; for a delta package, the task
    rebuilt (:func:`rebuild_package`) against its base (:func:`find_base`) in a temporary folder that is
    removed on exit. Raises PackageError if ``base`` is given for a full package or no base is found."""
    from slimship.package.format import read_package

    manifest = read_package(path, verify=False).manifest  # structure only: the rebuild verifies everything
    if not is_delta_manifest(manifest):
        if base is not None:
            raise PackageError(f"{path} is a full package, not a delta package: it needs no base, drop --base")
        yield Path(path)
        return
    base_path = find_base(path, manifest, base)
    with tempfile.TemporaryDirectory(prefix="slimship-rebuilt-") as tmp:
        target = Path(tmp) / Path(path).name
        rebuild_package(path, base_path, target)
        yield target


def task_onnx(pkg, delta_package_path: str | Path, base_package_path: str | Path) -> tuple[bytes, dict]:
    """(task ONNX, delta manifest entry) of the verified delta package ``pkg`` rebuilt against a base file."""
    from slimship.package.format import read_package

    meta = _meta(pkg.manifest, delta_package_path)
    if DELTA_PART not in pkg.parts:
        raise PackageError(f"{delta_package_path} is not a delta package (no {DELTA_PART}): load it with "
                           f"slimship.package.pack.load_package instead")
    base = read_package(base_package_path)
    base_onnx = _base_graph(base, base_package_path)
    graph = hashlib.sha256(base_onnx).hexdigest()
    if base.package_sha256 != meta["base_package_sha256"] and graph != meta["base_graph_sha256"]:
        raise PackageError(
            f"{base_package_path} is not the base of {delta_package_path} (package sha256 "
            f"{base.package_sha256[:16]}..., expected {meta['base_package_sha256'][:16]}...): pass the base "
            f"package the delta was made from"
        )
    task = apply_delta(base_onnx, pkg.read_part(DELTA_PART))
    check_graph(task, str(delta_package_path))  # the skeleton inside the delta could refer to outside data
    return task, meta


def _meta(manifest: dict, path: str | Path) -> dict:
    meta = manifest.get("delta") if isinstance(manifest, dict) else None
    if not isinstance(meta, dict) or not all(
            isinstance(meta.get(k), str) for k in ("base_package_sha256", "base_graph_sha256")):
        raise PackageError(f"{path} is not a delta package (no valid delta manifest entry): load it with "
                           f"slimship.package.pack.load_package instead")
    return meta


def _base_graph(base, path: str | Path) -> bytes:
    """The base package's whole ONNX graph (``model.onnx``, or ``graph.onnx`` + ``weights.bin`` decoded)."""
    from slimship.package.deploy import deploy_graph

    if "delta" in base.manifest:
        raise PackageError(f"{path} is itself a delta package: a base must be a full package (pull it from its "
                           f"store without --raw)")
    try:
        return deploy_graph(base)
    except PackageError:
        raise PackageError(f"{path} has no deploy graph: pass the full package the delta was made from") from None
