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

from slimship import __version__
from slimship.data.transforms import Preprocessing, resize_uint8, to_model_input_np
from slimship.errors import PackageError
from slimship.package.format import Package, read_package, write_package

ONNX_PART = "model.onnx"  # the whole deploy graph
GRAPH_PART = "graph.onnx"  # the graph without its big weights (with WEIGHTS_PART)
WEIGHTS_PART = "weights.bin"  # weights in slimship's compressed encoding


def pack(
    path: str | Path,
    *,
    onnx: bytes,
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

    With ``encode_weights`` the graph's float weights are stored in slimship's exact compressed encoding
    (bitmask + packed cluster indices + codebook; see weights_codec) and re-inserted on load.
    """
    manifest = {
        "slimship_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "architecture": architecture,
            "num_classes": len(class_names),
            "class_names": list(class_names),
            "arch_edits": arch_edits or {},
            "runtime": "onnxruntime",
        },
        "preprocessing": preprocessing.to_dict(),
        "recipe": recipe or {},
        "metrics": metrics or {},
        "card": card,
    }
    if encode_weights:
        from slimship.package.weights_codec import encode_graph

        skeleton, blob, info = encode_graph(onnx)
        manifest["model"]["weights_encoding"] = info
        parts = {GRAPH_PART: skeleton, WEIGHTS_PART: blob}
    else:
        parts = {ONNX_PART: onnx}
    return write_package(path, manifest, {**parts, **(extra_parts or {})})


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
            from slimship.evaluate.runtime import ort_session

            self._session = ort_session(self.onnx)
        return self._session

    def logits(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """uint8 images [N,H,W,C] at any size → logits [N,K] (resized and normalised like in training)."""
        from slimship.evaluate.runtime import ort_logits

        x = resize_uint8(images, self.preprocessing.image_size).numpy()
        outs = [ort_logits(self.session, to_model_input_np(x[i : i + 512], self.preprocessing), batch_size)
                for i in range(0, len(x), 512)]
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
        pre = Preprocessing.from_dict(m["preprocessing"])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise TypeError("class_names")
    except (KeyError, TypeError, ValueError) as e:
        raise PackageError(f"{path}: the manifest lacks a valid model description ({e}); re-create the package with `slimship run`") from None
    if "delta" in m:
        from slimship.package.delta.package import _task_onnx, find_base

        onnx = _task_onnx(pkg, path, find_base(path, m, base))[0]
    elif base is not None:
        raise PackageError(f"{path} is a full package, not a delta package: it needs no base, drop --base")
    elif ONNX_PART in pkg.parts:
        onnx = pkg.read_part(ONNX_PART)
    elif GRAPH_PART in pkg.parts and WEIGHTS_PART in pkg.parts:
        from slimship.package.weights_codec import decode_graph

        onnx = decode_graph(pkg.read_part(GRAPH_PART), pkg.read_part(WEIGHTS_PART))
    else:
        raise PackageError(f"{path}: the package has no deploy graph ({ONNX_PART}); re-create it with `slimship run`")
    return LoadedPackage(pkg, names, pre, onnx)
