"""Pack a model into a .slim file and load it back for inference — without the training code path.

A package holds the deploy graph (``model.onnx``, run by ONNX Runtime) and a manifest with everything needed
to use it: class names, preprocessing, the recipe that made it and its measured metrics. Loading verifies
every hash (see docs/package-format.md) and never unpickles or evaluates anything from the file.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import slimship.data  # noqa: F401  (registers the built-in preprocessing kinds a manifest may name)
from slimship import __version__
from slimship.core.preprocessing import Preprocessing, preprocessing_files, preprocessing_from_dict
from slimship.core.errors import PackageError
from slimship.package.deploy import ONNX_PART, DeployParts, deploy_parts, graph_from_parts
from slimship.package.format import Package, read_package, write_package


def pack(
    path: str | Path,
    *,
    onnx: bytes | None = None,
    deploy: DeployParts | None = None,
    architecture: str,
    class_names: list[str],
    preprocessing: Preprocessing,
    recipe: dict | None = None,
    metrics: dict | None = None,
    arch_edits: dict | None = None,
    card: str = "",
    extra_parts: dict[str, bytes] | None = None,
    encode_weights: bool = False,
) -> int:
    """Write a package atomically; returns its size in bytes on disk.

    The deploy graph is ``deploy`` (parts already made by :func:`~slimship.package.deploy.deploy_parts`) or
    ``onnx``; with ``encode_weights`` its float weights are stored in slimship's exact compressed encoding
    (bitmask + packed cluster indices + codebook; see weights_codec) and re-inserted on load.
    """
    if deploy is None:
        if onnx is None:
            raise ValueError("pack needs onnx or deploy")
        deploy = deploy_parts(onnx, encode_weights=encode_weights)
    manifest = {
        "slimship_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "architecture": architecture,
            "num_classes": len(class_names),
            "class_names": list(class_names),
            "arch_edits": arch_edits or {},
            "runtime": "onnxruntime",
            **deploy.model_info,
        },
        "preprocessing": preprocessing.to_dict(),
        "recipe": recipe or {},
        "metrics": metrics or {},
        "card": card,
    }
    # data files the preprocessing reads (a text model's tokenizer.json) travel as parts
    return write_package(path, manifest, {**deploy.parts, **preprocessing_files(preprocessing), **(extra_parts or {})})


@dataclass
class LoadedPackage:
    package: Package
    class_names: list[str]
    preprocessing: Preprocessing
    onnx: bytes
    _session: object = None

    @property
    def manifest(self) -> dict:
        return self.package.manifest

    @property
    def session(self):
        if self._session is None:
            from slimship.core.runtime import ort_session

            self._session = ort_session(self.onnx)
        return self._session

    def logits(self, images, batch_size: int = 64) -> np.ndarray:
        """Examples as the data sources deliver them (uint8 images [N,H,W,C] at any size, or a sequence of texts)
        → logits [N,K], prepared and normalised exactly as in training."""
        from slimship.core.runtime import ort_logits

        pre = self.preprocessing
        outs = [ort_logits(self.session, pre.model_input_np(pre.prepare(images[i : i + 512]).numpy()), batch_size)
                for i in range(0, len(images), 512)]
        return np.concatenate(outs) if outs else np.zeros((0, len(self.class_names)), np.float32)


def load_package(path: str | Path, base: str | Path | None = None) -> LoadedPackage:
    """Read and fully verify a package; raise PackageError with a clear message if anything is off.

    A delta package (a task stored against a base package, see docs/delta.md) is rebuilt against its base:
    ``base`` when given, else a ``*.slim`` in the same folder whose package hash is the one the delta
    records; if there is none, PackageError names the base to supply. ``base`` is refused for a full package.
    """
    pkg = read_package(path, verify=True)
    m = pkg.manifest
    try:
        names = m["model"]["class_names"]
        pre = preprocessing_from_dict(m["preprocessing"], pkg.read_part)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise TypeError("class_names")
    except (KeyError, TypeError, ValueError) as e:
        raise PackageError(f"{path}: the manifest lacks a valid model description ({e}); re-create the package with `slimship run`") from None
    if "delta" in m:
        from slimship.package.delta.package import find_base, task_onnx

        onnx = task_onnx(pkg, path, find_base(path, m, base))[0]
    elif base is not None:
        raise PackageError(f"{path} is a full package, not a delta package: it needs no base, drop --base")
    else:
        onnx = graph_from_parts(pkg.read_part, pkg.parts, str(path))
    return LoadedPackage(pkg, names, pre, onnx)
