"""Using a ``.slim`` package from Python: load it, measure its accuracy on labelled data, classify images (or texts)
with it, and describe what is inside it.

These are the functions behind ``slimship eval``, ``predict`` and ``inspect`` (the commands only parse their
arguments and print what these return) and behind the benchmarks' scoring of packages. Each imports what it
needs when called, so importing this module stays cheap.

Example::

    from slimship.api import evaluate_package, load, predict

    pkg = load("runs/first/model.slim")                       # verified once, reused below
    print(evaluate_package(pkg, "./my_images_test")["accuracy"])
    for row in predict(pkg, ["photo1.png", "photo2.png"], top=2):
        print(row["image"], row["top"][0]["class"])
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence, Union

if TYPE_CHECKING:
    import numpy as np

    from slimship.package.pack import LoadedPackage

#: A package file (path) or a package already returned by :func:`load`.
PackageRef = Union[str, Path, "LoadedPackage"]


def load(path: str | Path, base: str | Path | None = None,
         key: str | Path | Sequence[str | Path] | None = None, runtime: str | None = None) -> LoadedPackage:
    """Read a package and verify every hash (and, with ``key``, its signature), ready to classify.

    Args:
        path: the ``.slim`` file.
        base: for a task stored as a delta (docs/delta.md), its base package; by default a ``*.slim`` next to
            ``path`` whose hash is the one the delta records. Must be None for a full package.
        key: a trusted Ed25519 public key file (or several): the package must carry a valid signature by one
            of them (``slimship sign``; docs/package-format.md, "Signatures"). A delta package's own signature is
            checked; its base is pinned by the hash the signed delta records.
        runtime: run the graph in this runtime (``slimship list``); by default each batch runs in the runtime the
            package records as fastest for the nearest batch size measured, when it is installed here, else in
            ONNX Runtime (the same graph; only the speed differs).

    Returns:
        :class:`slimship.package.pack.LoadedPackage` (``class_names``, ``preprocessing``, ``manifest``,
        ``predict(images, top=3)``, ``logits(images)``).

    Raises:
        PackageError: the file is missing, truncated, modified or not a package; a delta's base cannot be found
            or does not match; ``base`` was given for a full package; with ``key``: the package is unsigned, signed
            by another key, modified after signing, or its signature is wrong. SlimshipError: a key file is
            unusable.
    """
    import slimship.data  # noqa: F401  registers the built-in preprocessing kinds a manifest names
    from slimship.package.pack import load_package

    trusted = _trusted_keys(key)  # read first: a bad key file fails before the package is decoded
    pkg = load_package(path, base=base, runtime=runtime)
    if trusted:
        from slimship.package.sign import check_signature

        check_signature(pkg.package, trusted)  # the bytes load_package verified, not the file read again
    return pkg


def _trusted_keys(key):
    if key is None:
        return []
    from slimship.package.sign import load_public_key

    keys = [key] if isinstance(key, (str, Path)) else list(key)
    return [load_public_key(k) for k in keys]


def evaluate_package(package: PackageRef, data: str | Path, base: str | Path | None = None,
                     runtime: str | None = None) -> dict:
    """Top-1 accuracy of a package on labelled data, with the package's own runtime and preprocessing.

    Args:
        package: a ``.slim`` path, or a package from :func:`load`.
        data: a data source as in a recipe (class folders, idx files, ``.npz``, ``fashion-mnist``; for a text
            package: text folders, ``.csv``/``.jsonl`` read with the package's recipe's column names,
            ``spam-assassin``); a source with its own test split contributes that split, else all its examples.
            Classes are matched to the package's by name where the source names them.
        base: the base package of a delta package given by path (see :func:`load`).
        runtime: for a package given by path, the runtime to run it in (see :func:`load`).

    Returns:
        ``{"package", "data", "images", "examples", "example_kind", "accuracy", "recorded_accuracy", "seconds",
        "runtime"}``: ``examples`` (and, for compatibility, ``images``) how many were scored, ``example_kind``
        "images" or "texts", ``accuracy`` in [0, 1] (NaN for none), ``recorded_accuracy`` the test accuracy measured when the package was
        made (None if it records none), ``seconds`` the inference time, rounded to 1 ms. This is what
        ``slimship eval --json`` prints.

    Raises:
        PackageError: as :func:`load`. DataError: the data cannot be read, holds the other kind of examples,
            or has classes the package lacks. ValueError: ``base`` with a package loaded already.
    """
    from slimship.core.preprocessing import examples_of
    from slimship.data.inputs import load_eval_examples

    pkg = _loaded(package, base, runtime)
    # lazy: an image folder is decoded a chunk at a time, straight to the package's input size
    split = load_eval_examples(str(data), pkg.class_names, pkg.preprocessing, _source_options(pkg), lazy=True)
    t0 = time.perf_counter()
    logits = pkg.logits(split.raw)
    secs = time.perf_counter() - t0
    acc = float((logits.argmax(1) == split.labels).mean()) if len(split) else float("nan")
    return {"package": _name(package), "data": str(data), "images": len(split), "examples": len(split),
            "example_kind": examples_of(pkg.preprocessing), "accuracy": acc,
            "recorded_accuracy": pkg.manifest.get("metrics", {}).get("accuracy"),
            "seconds": round(secs, 3), "runtime": pkg.runtime}


def predict(package: PackageRef, images: Sequence[str | Path] | str | Path | np.ndarray, top: int = 3,
            base: str | Path | None = None, batch_size: int = 64) -> list[dict]:
    """Classify images (or texts, with a text package) with a package: softmax probabilities of its logits, the
    ``top`` most likely classes.

    Args:
        package: a ``.slim`` path, or a package from :func:`load`.
        images: image files or folders of images (any Pillow format, any size; a folder contributes every image
            inside it, recursively, in sorted order; one path alone is one file or folder), or images as the data
            sources deliver them (uint8 ``[N, H, W, C]``, any size). Files are decoded ``batch_size`` at a time,
            each straight to the package's input size, so memory does not grow with the number of images. For a
            text package: texts, or text files (``.txt`` as UTF-8, ``.eml`` as mail: subject + text parts); an
            item naming an existing file is read from it.
        top: classes to return per image, most likely first (at least 1, at most all of them).
        base: the base package of a delta package given by path (see :func:`load`).
        batch_size: images decoded and classified at once.

    Returns:
        One dict per input, in order: ``{"image": its path (or its index in an array), "top": [{"class": name,
        "probability": p}, ...]}`` (``"text"`` instead of ``"image"`` for a text package: the file, or the text's
        first 40 characters) with ``p`` rounded to 4 decimals. This is what ``slimship predict --json``
        prints.

    Raises:
        PackageError: as :func:`load`. DataError: no images, a path that is missing, a folder without images, or
            a file that is not an image. ValueError: ``base`` with a package loaded already (give it to
            :func:`load`).
    """
    return list(iter_predictions(package, images, top=top, base=base, batch_size=batch_size))


def iter_predictions(package: PackageRef, images: Sequence[str | Path] | str | Path | np.ndarray, top: int = 3,
                     base: str | Path | None = None, batch_size: int = 64) -> Iterator[dict]:
    """:func:`predict`, one row at a time, as each batch is classified (what ``slimship predict`` prints from)."""
    from slimship.package.predict import iter_predictions as rows

    return rows(_loaded(package, base), images, top, batch_size)


def inspect_package(path: str | Path, layers: bool = False) -> dict:
    """What is inside a package: manifest summary, parts and their bytes, recorded metrics and provenance.

    Args:
        path: the ``.slim`` file (verified in full; a delta package needs no base here).
        layers: also list where the bytes go, one row per weight tensor (decodes every tensor: slower).

    Returns:
        ``{"path", "size_bytes", "format_version", "package_sha256", "slimship_version", "created", "model",
        "structural_edits", "preprocessing", "metrics", "parts", "recipe", "delta", "rebuilt_from", "signatures"}`` plus
        ``"layers"`` (dicts of :class:`slimship.package.layer_bytes.TensorBytes`) with ``layers=True``.
        ``delta`` is None for a full package, else the base it needs and how it was encoded; ``signatures``
        lists ``{"key_id", "matches"}`` (who signed it, and whether that signature still covers the contents: the
        cryptographic check needs the public key, ``verify --key``). This is what
        ``slimship inspect --json`` prints.

    Raises:
        PackageError: the file is missing, damaged or not a package; ``layers=True`` for a package without
            its own deploy graph (a delta package).
    """
    from slimship.package.format import open_package
    from slimship.package.sign import signature_summary
    from slimship.package.verify import verify

    verify(path)  # streamed, within a memory bound: hashes, deploy graph, manifest bounds
    pkg = open_package(path)  # then only the header is read again
    m = pkg.manifest
    info = {
        "path": str(path), "size_bytes": pkg.size_bytes, "format_version": pkg.format_version,
        "package_sha256": pkg.package_sha256, "slimship_version": m.get("slimship_version"), "created": m.get("created"),
        "model": {k: v for k, v in m.get("model", {}).items() if k != "arch_edits"},
        "structural_edits": len(m.get("model", {}).get("arch_edits", {}) or {}),
        "preprocessing": m.get("preprocessing"),
        "metrics": {k: m.get("metrics", {}).get(k)
                    for k in ("name", "accuracy", "val_accuracy", "params", "nonzero_params", "macs", "latency_ms")},
        "parts": [{"name": p.name, "codec": p.codec, "stored_bytes": p.stored_size, "raw_bytes": p.raw_size,
                   "sha256": p.sha256} for p in pkg.parts.values()],
        "recipe": m.get("recipe", {}).get("name"),
        "delta": _delta_summary(m.get("delta")),
        "rebuilt_from": m.get("rebuilt_from"),
        "signatures": signature_summary(pkg),
    }
    if layers:
        from dataclasses import asdict

        info["layers"] = [asdict(r) for r in _layer_rows(path)]
    return info


def _source_options(pkg: LoadedPackage) -> dict:
    """How the package's own recipe read its data (a text table's column names), to read evaluation data alike."""
    data = pkg.manifest.get("recipe", {}).get("data", {})
    data = data if isinstance(data, dict) else {}
    return {k: str(data[k]) for k in ("text_column", "label_column") if isinstance(data.get(k), str)}


def _loaded(package: PackageRef, base: str | Path | None, runtime: str | None = None) -> LoadedPackage:
    from slimship.package.pack import LoadedPackage

    if isinstance(package, LoadedPackage):
        if base is not None or runtime is not None:
            raise ValueError("base and runtime apply to a package given by path; this one is loaded already "
                             "(pass them to load)")
        return package
    return load(package, base, runtime=runtime)


def _name(package: PackageRef) -> str:
    """The package as the caller named it (its file for a loaded one)."""
    from slimship.package.pack import LoadedPackage

    return package.package.path if isinstance(package, LoadedPackage) else str(package)


def _layer_rows(path: str | Path):
    from slimship.core.errors import PackageError
    from slimship.package.layer_bytes import layer_bytes

    try:
        return layer_bytes(path)
    except PackageError as e:
        raise PackageError(f"{e} (--layers needs a package with its own deploy graph: pull a delta task whole, "
                           f"or inspect it without --layers)") from None


def _delta_summary(meta) -> dict | None:
    """The delta manifest entry without its bulky encoding details (None for a full package)."""
    if not isinstance(meta, dict):
        return None
    info = meta.get("info") if isinstance(meta.get("info"), dict) else {}
    return {"base_package_sha256": meta.get("base_package_sha256"), "base_graph_sha256": meta.get("base_graph_sha256"),
            "mode": meta.get("mode"), **{k: info.get(k) for k in ("preset", "value_bits", "density", "full_bytes", "check")}}
