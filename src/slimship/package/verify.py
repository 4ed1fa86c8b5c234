"""``slimship verify``: everything slimship checks before it trusts a package, in one call.

:func:`~slimship.package.format.verify_package` checks the container (every declared size against the limits,
then the trailer and every part's SHA-256, streamed in a few MiB of memory). :func:`check_package` checks what the
parts mean: the deploy graph is ONNX and self-contained (no external data) and the manifest's values are within
bounds and fit the graph. :func:`verify` is both; ``inspect``, ``push`` and ``pull`` run the same checks.
"""

from __future__ import annotations

import os

from slimship.core.errors import PackageError
from slimship.package.deploy import graph_part
from slimship.package.format import Package, open_package, verify_package
from slimship.package.graph_check import GraphIO, check_graph
from slimship.package.manifest import check_manifest


def verify(path: str | os.PathLike[str]) -> dict:
    """Verify the package at ``path`` completely: :func:`~slimship.package.format.verify_package`'s report plus
    ``"graph"`` (the part checked) and ``"classes"`` (how many class names the manifest lists). Raises
    PackageError (one line) on the first problem. Memory: a few MiB plus the graph part being checked."""
    report = verify_package(path)
    report.update(check_package(open_package(path)))
    return report


def check_package(pkg: Package) -> dict:
    """Check the deploy graph and the manifest of a package already read (its parts are read through
    ``pkg.read_part``, which verifies each). A full package's graph is ``model.onnx``, or the skeleton
    ``graph.onnx`` (its weights sit in ``weights.bin``, which cannot refer to anything); a delta package's is the
    skeleton inside ``delta.bin``. Returns ``{"graph": part name, "classes": number of class names}``."""
    source = str(pkg.path)
    name, io = _graph_io(pkg, source)
    described = check_manifest(pkg.manifest, io, source)
    return {"graph": name, "classes": len(described.class_names)}


def _graph_io(pkg: Package, source: str) -> tuple[str, GraphIO]:
    if "delta" in pkg.manifest:
        from slimship.package.delta.config import DELTA_PART
        from slimship.package.delta.decode import _open_blob

        if DELTA_PART not in pkg.parts:
            raise PackageError(f"{source} is a delta package without its {DELTA_PART}: re-create the package")
        _, streams = _open_blob(pkg.read_part(DELTA_PART))
        return DELTA_PART, check_graph(streams["skeleton"], source)
    name = graph_part(pkg.parts, source)
    return name, check_graph(pkg.read_part(name), source)
