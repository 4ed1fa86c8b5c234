"""Pack a model into a .slim file and load it back for inference — without the training code path.

A package holds the deploy graph (``model.onnx``) and a manifest with everything needed to use it: class names,
preprocessing, the runtime it was judged fastest in at each batch size measured (``model.runtime_by_batch``) and
overall (``model.runtime``, the one for large batches), the recipe that made it and its measured metrics. Loading
verifies every hash (see docs/package-format.md) and never unpickles or evaluates anything from the file; each
batch then runs in the runtime recorded for the nearest batch size when that one is installed, else in ONNX
Runtime.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
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
    runtime_by_batch: dict[int, str] | None = None,
) -> int:
    """Write a package atomically; returns its size in bytes on disk.

    The deploy graph is ``deploy`` (parts already made by :func:`~slimship.package.deploy.deploy_parts`) or
    ``onnx``; with ``encode_weights`` its float weights are stored in slimship's exact compressed encoding
    (bitmask + packed cluster indices + codebook; see weights_codec) and re-inserted on load.

    The manifest is checked as readers check it (:func:`~slimship.package.manifest.check_manifest`): PackageError
    for a graph that refers to external data, class names with control characters, or a graph whose input or
    output does not fit the preprocessing or the class names, so no package is written that cannot be read.
    ``runtime`` is the runtime the graph was judged fastest in (what :func:`load_package` runs it in when installed)
    and ``runtime_by_batch`` (``{batch size: runtime}``, optional) the one at each batch size measured.
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
            **({"runtime_by_batch": {str(b): rt for b, rt in sorted(runtime_by_batch.items())}}
               if runtime_by_batch else {}),
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
    runtime: str = "onnxruntime"  # the main runtime: large batches, and every batch without a table
    runtime_by_batch: dict = field(default_factory=dict)  # {batch size: runtime installed here}, from the manifest
    _session: object = None

    @property
    def manifest(self) -> dict:
        return self.package.manifest

    @property
    def session(self):
        """The deploy graph as a session (made on first use): in :attr:`runtime`, or, when the package runs
        different batch sizes in different runtimes, a :class:`~slimship.core.runtime.SessionsByBatch` that runs
        each batch in the runtime recorded for the nearest batch size (each runtime loaded when first needed)."""
        if self._session is None:
            from slimship.core.runtime import SessionsByBatch

            if len(set(self.runtime_by_batch.values()) | {self.runtime}) > 1:
                self._session = SessionsByBatch(self.onnx, self.runtime_by_batch, self.runtime, make=self._load_in)
            else:
                self._session = self._load_in(self.runtime)
        return self._session

    def loaded_session(self):
        """:attr:`session` with every runtime it may run batches in already loaded (a server, a timing)."""
        sess = self.session
        if hasattr(sess, "load_all"):
            sess.load_all()
        return sess

    def runtimes_used(self) -> dict[int, str]:
        """``{batch size: runtime}`` this package runs in here (one entry per measured batch size; just the main
        runtime, under batch size 1, for a package without a table)."""
        return dict(self.runtime_by_batch) or {1: self.runtime}

    def _load_in(self, runtime: str):
        """The deploy graph in ``runtime``; a runtime's failure to load it becomes a PackageError saying what to do."""
        from slimship.core.runtime import session

        try:
            return session(self.onnx, runtime)
        except SlimshipError:
            raise
        except Exception as e:  # the runtimes raise their own types, with no common base to name
            raise PackageError(f"{self.package.path}: {runtime} cannot load the deploy graph "
                               f"({_first_line(e)}): re-create the package with `slimship run`") from None

    def logits(self, images, batch_size: int = 64) -> np.ndarray:
        """Examples as the data sources deliver them (uint8 images [N,H,W,C] at any size, image files, or a
        sequence of texts) → logits [N,K], prepared and normalised exactly as in training, a bounded number at a
        time."""
        from slimship.core.runtime import logits, runtime_for_batch

        pre, k = self.preprocessing, len(self.class_names)
        step = max(1, min(512, _CHUNK_VALUES // max(1, int(np.prod(pre.input_shape())))))
        outs = []
        for i in range(0, len(images), step):
            x = pre.model_input_np(pre.prepare(images[i : i + step]).numpy())
            try:
                out = logits(self.session, x, batch_size)
            except SlimshipError:
                raise
            except Exception as e:  # as above: onnxruntime's own exception types
                rt = runtime_for_batch(min(batch_size, len(x)), self.runtime_by_batch, self.runtime)
                raise PackageError(f"{self.package.path}: the deploy graph fails in {rt} "
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

    The graph runs in ``runtime`` when given (SlimshipError if it is not installed). Otherwise each batch runs in
    the runtime the package records as fastest for the nearest batch size measured (``model.runtime_by_batch``;
    a package without it: ``model.runtime`` for all), when that one is installed here, else in ONNX Runtime (the
    same ONNX graph; only the speed differs).

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
    main = _runtime_for(m["model"].get("runtime"), runtime)
    by_batch = {} if runtime is not None else {
        int(b): _runtime_for(rt, None) for b, rt in (m["model"].get("runtime_by_batch") or {}).items()}
    return LoadedPackage(pkg, described.class_names, pre, onnx, main, by_batch)


def _runtime_for(recorded: object, requested: str | None) -> str:
    """``requested`` (which must be installed), else ``recorded`` when this slimship knows it and it is installed
    here, else the reference runtime (the same ONNX graph; only the speed differs)."""
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
