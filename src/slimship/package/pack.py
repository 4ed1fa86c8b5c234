"""Pack a model into a .slim file and load it back for inference — without the training code path.

A package holds the deploy graph (``model.onnx``) and a manifest with everything needed to use it: class names,
preprocessing, the runtime it was judged fastest in (``model.runtime``), the recipe that made it and its measured
metrics. Loading verifies every hash (see docs/package-format.md) and never unpickles or evaluates anything from
the file; the graph then runs in the recorded runtime when that one is installed, else in ONNX Runtime.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import slimship.data  # noqa: F401  (registers the built-in preprocessing kinds a manifest may name)
from slimship._version import __version__
from slimship.core.errors import PackageError, SlimshipError
from slimship.core.preprocessing import Preprocessing, preprocessing_files, preprocessing_from_dict
from slimship.package.deploy import DeployParts, deploy_graph_io, deploy_parts, graph_part
from slimship.package.format import Package, read_package, write_package
from slimship.package.graph_check import check_graph
from slimship.package.manifest import check_manifest, printable


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
    runtime: str = "onnxruntime",
) -> int:
    """Write a package atomically; returns its size in bytes on disk.

    The deploy graph is ``deploy`` (parts already made by :func:`~slimship.package.deploy.deploy_parts`) or
    ``onnx``; with ``encode_weights`` its float weights are stored in slimship's exact compressed encoding
    (bitmask + packed cluster indices + codebook; see weights_codec) and re-inserted on load.

    The manifest is checked as readers check it (:func:`~slimship.package.manifest.check_manifest`): PackageError
    for a graph that refers to external data, class names with control characters, or a graph whose input or
    output does not fit the preprocessing or the class names, so no package is written that cannot be read.
    ``runtime`` is the runtime the graph was judged fastest in (what :func:`load_package` runs it in when installed).
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
            "runtime": runtime,
            **deploy.model_info,
        },
        "preprocessing": preprocessing.to_dict(),
        "recipe": recipe or {},
        "metrics": metrics or {},
        "card": card,
    }
    io = check_graph(deploy.parts[graph_part(deploy.parts, str(path))], str(path))
    check_manifest(manifest, io, str(path), remedy="rename the classes or fix the model")
    # data files the preprocessing reads (a text model's tokenizer.json) travel as parts
    return write_package(path, manifest, {**deploy.parts, **preprocessing_files(preprocessing), **(extra_parts or {})})


@dataclass
class LoadedPackage:
    package: Package
    class_names: list[str]
    preprocessing: Preprocessing
    onnx: bytes
    runtime: str = "onnxruntime"  # what :attr:`session` runs the graph in
    _session: object = None

    @property
    def manifest(self) -> dict:
        return self.package.manifest

    @property
    def session(self):
        """The deploy graph loaded in :attr:`runtime` (made on first use)."""
        if self._session is None:
            from slimship.core.runtime import session

            try:
                self._session = session(self.onnx, self.runtime)
            except SlimshipError:
                raise
            except Exception as e:  # the runtimes raise their own types, with no common base to name
                raise PackageError(f"{self.package.path}: {self.runtime} cannot load the deploy graph "
                                   f"({_first_line(e)}): re-create the package with `slimship run`") from None
        return self._session

    def logits(self, images, batch_size: int = 64) -> np.ndarray:
        """Examples as the data sources deliver them (uint8 images [N,H,W,C] at any size, image files, or a
        sequence of texts) → logits [N,K], prepared and normalised exactly as in training, a bounded number at a
        time."""
        from slimship.core.runtime import logits

        pre, k = self.preprocessing, len(self.class_names)
        step = max(1, min(512, _CHUNK_VALUES // max(1, int(np.prod(pre.input_shape())))))
        outs = []
        for i in range(0, len(images), step):
            x = pre.model_input_np(pre.prepare(images[i : i + step]).numpy())
            try:
                out = logits(self.session, x, batch_size)
            except Exception as e:  # as above: onnxruntime's own exception types
                raise PackageError(f"{self.package.path}: the deploy graph fails in {self.runtime} "
                                   f"({_first_line(e)}): re-create the package with `slimship run`") from None
            if out.ndim != 2 or out.shape[1] != k:
                raise PackageError(f"{self.package.path}: the deploy graph gives outputs of shape {list(out.shape)} "
                                   f"for {k} classes: re-create the package with `slimship run`")
            outs.append(out)
        return np.concatenate(outs) if outs else np.zeros((0, k), np.float32)

    def predict(self, images, top: int = 3) -> list[dict]:
        """Classify image files or uint8 images [N,H,W,C]: ``[{"image", "top": [{"class", "probability"}]}]``, as
        ``slimship predict --json`` prints (see :func:`slimship.package.predict.predict_images`)."""
        from slimship.package.predict import predict_images

        return predict_images(self, images, top)


def load_package(path: str | Path, base: str | Path | None = None, runtime: str | None = None) -> LoadedPackage:
    """Read and fully verify a package; raise PackageError with a clear message if anything is off.

    Checked, besides every hash: the deploy graph is self-contained ONNX, and every manifest value is within
    bounds and fits the graph (:func:`~slimship.package.manifest.check_manifest`); a package without class names
    (a base package, whose graph gives features) is refused, since it cannot classify.

    The graph runs in ``runtime`` when given (SlimshipError if it is not installed), else in the runtime the
    package records as its fastest when that one is installed here, else in ONNX Runtime (the same ONNX graph;
    only the speed differs).

    A delta package (a task stored against a base package, see docs/delta.md) is rebuilt against its base:
    ``base`` when given, else a ``*.slim`` in the same folder whose package hash is the one the delta
    records; if there is none, PackageError names the base to supply. ``base`` is refused for a full package.
    """
    pkg = read_package(path, verify=True)
    m, source = pkg.manifest, str(path)
    if not check_manifest(m, None, source).class_names:  # cheap: before any graph is decoded
        raise PackageError(f"{path} has no class names: it is a base package (its graph gives features, not "
                           "classes); load a task package")
    if "delta" in m:
        from slimship.package.delta.package import find_base, task_onnx

        onnx = task_onnx(pkg, path, find_base(path, m, base))[0]
        io = check_graph(onnx, source)
    elif base is not None:
        raise PackageError(f"{path} is a full package, not a delta package: it needs no base, drop --base")
    else:
        onnx, io = deploy_graph_io(pkg.read_part, pkg.parts, source)
    described = check_manifest(m, io, source)
    pre = preprocessing_from_dict(m["preprocessing"], pkg.read_part)  # with the data files it names (a tokenizer)
    return LoadedPackage(pkg, described.class_names, pre, onnx,
                         _runtime_for(m["model"].get("runtime"), runtime))


def _runtime_for(recorded: object, requested: str | None) -> str:
    from slimship.core.runtime import REFERENCE_RUNTIME, RUNTIMES, resolve_runtime

    if requested is not None:
        return resolve_runtime(requested)
    if isinstance(recorded, str) and recorded in RUNTIMES and RUNTIMES.get(recorded).available():
        return recorded
    return REFERENCE_RUNTIME


# Model-input values prepared at once by LoadedPackage.logits (float32: 256 MiB): a bound whatever the image size.
_CHUNK_VALUES = 64 * 2**20


def _first_line(e: Exception) -> str:
    return printable(" ".join(str(e).split()) or type(e).__name__)
