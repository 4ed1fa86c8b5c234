"""Where images come from: image folders, MNIST-style idx files, ``.npz`` archives, built-in data sets.

Everything here is numpy + Pillow (no torch), so ``import slimship.data`` stays cheap. A source is loaded
once into uint8 arrays ``[N, H, W, C]`` (``C`` is 1 for gray, 3 for colour) with int64 labels, then cut
into train / validation / test splits:

* **test** is the source's own test split when it has one (idx ``t10k-*``/``test-*`` files, an npz's
  ``x_test``/``y_test``, a folder's ``test/`` sub-folder, or a separate ``test=`` source); otherwise a
  stratified ``test_fraction`` of the data, drawn with a fixed seed.
* **validation** is always a stratified ``val_fraction`` of the training part, so it never touches test.
* ``train_limit`` / ``test_limit`` then subsample those splits, stratified, with the same seed.

Resizing to the network's input size is the training transforms' job, not this module's: ``image_size``
here is the *stored* size, and every image is kept in memory at that size (Fashion-MNIST at 224x224 would
be ~3.5 GB).

Every user mistake raises :class:`~slimship.core.errors.DataError` with a one-line message that says what is
wrong and what to do.

The pieces live in sibling modules: :mod:`~slimship.data.arrays` (splits and array checks),
:mod:`~slimship.data.folder`, :mod:`~slimship.data.idx`, :mod:`~slimship.data.npz` (the source kinds) and
:mod:`~slimship.data.split` (stratified splitting and limits); this module keeps the registry and the
entry points, and re-exports the public names it always had.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from slimship.data.arrays import (
    ArraySplit,
    DatasetSplits,
    _check_same_classes,
    _check_same_shape,
    _conform,
    _Loaded,
    _resize_array,
)
from slimship.data.folder import (
    IMAGE_EXTENSIONS,
    _decode,
    _load_folder,
    image_files,
    _load_folders,
    _visible_files,
    _visible_subdirs,
)
from slimship.data.idx import _find_idx_images, _load_idx, read_idx
from slimship.data.npz import _load_npz
from slimship.data.split import (
    _check_fraction,
    _check_positive,
    _hold_out,
    _limit,
    stratified_split,
    stratified_subsample,
)
from slimship.core.errors import DataError
from slimship.core.registry import Registry
from slimship.data.files import ImageFiles
from slimship.data.limits import check_every_class_used, check_images_per_class

__all__ = [
    "ArraySplit",
    "DatasetSplits",
    "SourceKind",
    "SOURCES",
    "BUILTIN_DATASETS",
    "IMAGE_EXTENSIONS",
    "load_dataset",
    "load_eval_split",
    "load_images_for_prediction",
    "image_files",
    "ImageFiles",
    "resolve_source",
    "read_idx",
    "stratified_split",
    "stratified_subsample",
]

_FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]


@dataclass(frozen=True)
class BuiltinDataset:
    """A data set installed by a distribution package (never downloaded at run time)."""

    root: Path
    class_names: list[str]
    package: str


#: Built-in names -> where their Debian/Ubuntu package puts the idx files. Tests may monkeypatch ``root``.
BUILTIN_DATASETS: dict[str, BuiltinDataset] = {
    "fashion-mnist": BuiltinDataset(
        root=Path("/usr/share/datasets/fashion-mnist"),
        class_names=_FASHION_MNIST_CLASSES,
        package="dataset-fashion-mnist",
    ),
}
#: Every built-in data set's name (kinds of other examples add theirs), for messages.
BUILTIN_NAMES: list[str] = list(BUILTIN_DATASETS)
_BUILTIN_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                  "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


@dataclass(frozen=True)
class SourceKind:
    """A registered kind of data source.

    ``load(target, channels=None, size=None)`` returns a :class:`_Loaded`; ``channels``/``size`` (W, H)
    force the output format, ``None`` lets the source decide. ``native_size`` is True when all images of
    the source already share one size (arrays), so resizing can wait until after subsampling.

    A kind of other examples (texts: :mod:`slimship.data.text`) brings its own ``claim(source)`` (the target
    when ``source`` is of this kind, else None; asked before the image rules), ``splits(target, **load_dataset
    arguments)`` and ``eval_split(target, class_names, options)``, and names what it holds in ``examples``.
    """

    load: Callable[..., _Loaded] | None
    native_size: bool
    examples: str = "images"
    claim: Callable[[str], str | None] | None = None
    splits: Callable[..., DatasetSplits] | None = None
    eval_split: Callable[..., object] | None = None


SOURCES: Registry[SourceKind] = Registry("data source")


# --------------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------------


def resolve_source(source: str) -> tuple[str, str]:
    """Work out what kind of data source ``source`` names.

    Resolution order: a kind that claims ``source`` (the text kinds of :mod:`slimship.data.text`: their
    built-in name, a ``.csv``/``.jsonl``, a folder of text files per class), a built-in name (case-insensitive,
    ``_`` = ``-``; it wins over a same-named folder in the working directory, write ``./fashion-mnist`` for the
    folder), then a path: a ``.npz`` file, a folder holding idx files, a folder of class sub-folders.

    Args:
        source: a built-in name or a path (``~`` is expanded).

    Returns:
        ``(kind, target)``: ``kind`` is a name in :data:`SOURCES`; ``target`` is the built-in's name or the
        absolute path.

    Raises:
        DataError: the built-in is not installed, the path does not exist, or it is not a usable source.
    """
    try:
        path = Path(source).expanduser()
        exists = path.exists()
    except (OSError, ValueError, RuntimeError) as e:  # a name too long, a NUL byte, ~user that does not exist
        raise DataError(f"data path {source} cannot be used ({getattr(e, 'strerror', None) or e}): check the "
                        f"path") from None
    for entry in SOURCES.list():
        target = entry.obj.claim(source) if entry.obj.claim is not None else None
        if target is not None:
            return entry.name, target
    name = source.strip().lower().replace("_", "-")
    if name in BUILTIN_DATASETS:
        _require_builtin(name)
        return name, name
    if not exists:
        raise DataError(
            f"data path {source} does not exist: pass a folder with one sub-folder per class (images or texts), "
            f"idx files, a .npz, a .csv/.jsonl of texts, or a built-in name ({', '.join(BUILTIN_NAMES)})"
        )
    path = path.resolve()
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return "npz", str(path)
        raise DataError(
            f"data file {source} is not a .npz archive or a table of texts: pass a .npz, a .csv/.tsv/.jsonl, a "
            f"folder of idx files, or a folder with one sub-folder per class"
        )
    if _find_idx_images(path):
        return "idx", str(path)
    if _visible_subdirs(path):
        return "folder", str(path)
    loose = [p for p in _visible_files(path) if p.suffix.lower() in IMAGE_EXTENSIONS]
    if loose:
        raise DataError(f"data folder {source} holds {len(loose)} image(s) but no class sub-folders: put each "
                        f"class's images in a sub-folder named after the class")
    raise DataError(f"data folder {source} has no class sub-folders and no idx files: put each class's images "
                    f"in a sub-folder named after the class, or add idx files")


def load_dataset(
    source: str,
    *,
    test: str | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    train_limit: int | None = None,
    test_limit: int | None = None,
    image_size: int | None = None,
    seed: int = 0,
    lazy: bool = False,
    options: dict | None = None,
) -> DatasetSplits:
    """Load a data source and cut it into train / validation / test splits.

    Args:
        source: built-in name, image folder, idx folder or ``.npz`` (see :func:`resolve_source`).
        test: optional separate source of the same kind used as the test split. Its own test split is used
            if it has one, else all of it; the primary source's own test split (if any) is then not used.
            Its class set must equal the training class set.
        val_fraction: stratified fraction of the training part held out for validation, in (0, 1).
        test_fraction: stratified fraction held out for test when there is no test split, in (0, 1).
        train_limit / test_limit: stratified subsample of train / test to at most this many images,
            applied after splitting (validation is never subsampled).
        image_size: resize every image to ``image_size`` x ``image_size`` (PIL bilinear, aspect ratio not
            kept). When None, arrays keep their size and an image folder is brought to its most common size.
        seed: seeds every split and subsample; the same arguments always give the same splits.
        lazy: an image folder is not decoded: its splits hold :class:`~slimship.data.files.ImageFiles`, which a
            preprocessing decodes one image at a time straight to the model's input size (what ``slimship run``
            does, so memory does not follow the photos' resolution). Only without ``image_size``.
        options: settings of a kind of source (a text table's ``text_column`` / ``label_column``).

    Returns:
        :class:`DatasetSplits` (see its ``info`` for provenance).

    Raises:
        DataError: on any problem with the data or the arguments; the message says what to do.
    """
    kind, target = resolve_source(source)
    if SOURCES.get(kind).splits is not None:  # a kind of other examples (texts) splits itself, by the same rules
        return SOURCES.get(kind).splits(target, test=test, val_fraction=val_fraction, test_fraction=test_fraction,
                                        train_limit=train_limit, test_limit=test_limit, seed=seed, options=options)
    _check_fraction("val_fraction", val_fraction)
    _check_fraction("test_fraction", test_fraction)
    _check_positive("train_limit", train_limit)
    _check_positive("test_limit", test_limit)
    _check_positive("image_size", image_size)
    size = (image_size, image_size) if image_size else None

    if lazy and size is not None:
        raise ValueError("lazy loading leaves resizing to the preprocessing: pass image_size=None")

    if test is None:
        entry = SOURCES.get(kind)
        if kind == "folder":
            loaded = _load_folders(Path(target), None, None, size, lazy=lazy)[0]
        else:
            loaded = entry.load(target, size=None if entry.native_size else size)
        test_split, test_target = loaded.test, None
    else:
        loaded, test_split, test_target = _load_with_separate_test(kind, target, test, size, lazy)
    pool, class_names = loaded.pool, loaded.class_names
    present = [class_names[i] for i in np.unique(pool.labels)]
    if len(present) < 2:
        raise DataError(f"data source {source} has fewer than two classes ({', '.join(present) or 'none'}): "
                        f"a classifier needs at least two; add a class")
    check_every_class_used(f"data source {source}", class_names, loaded.named,
                           [pool.labels] + ([test_split.labels] if test_split is not None else []))
    check_images_per_class(f"data source {source}", class_names, pool.labels, 3 if test_split is None else 2)

    if test_split is None:
        test_from = f"stratified split (seed {seed}, fraction {test_fraction})"
        train_part, test_split = _hold_out(source, pool, test_fraction, seed, "test", needed=3)
        needed_for_val = 3
    else:
        _check_same_shape(source, pool, test_split, resize_pending=size is not None)
        test_from = "own split" if test is None else f"separate source {test_target}"
        train_part, needed_for_val = pool, 2
    train, val = _hold_out(source, train_part, val_fraction, seed, "validation", needed=needed_for_val)

    train, train_from = _limit(train, train_limit, seed, "train_limit")
    test_split, test_from_n = _limit(test_split, test_limit, seed, "test_limit")
    if size is not None:  # arrays are resized only now, after subsampling, to keep it cheap
        train, val, test_split = (_conform(s, s.channels, size) for s in (train, val, test_split))
    h, w, c = train.images.shape[1:]
    info = {
        "source": target,
        "kind": kind,
        "test_source": test_target,
        "test_from": test_from,
        "val_from": f"stratified split of train (seed {seed}, fraction {val_fraction})",
        "sizes": {"train": len(train), "val": len(val), "test": len(test_split)},
        "train_subsampled_from": train_from,
        "test_subsampled_from": test_from_n,
        "image_shape": [int(h), int(w), int(c)],
        "resized": loaded.resized,
    }
    return DatasetSplits(train, val, test_split, list(class_names), int(c), info)


def load_eval_split(source: str, class_names: list[str], channels: int, image_size: int | None,
                    lazy: bool = False) -> ArraySplit:
    """Load everything a source offers for evaluation, in a trained model's label space.

    An image folder contributes every class sub-folder (or only ``test/`` when it has train/test
    sub-folders); idx, npz and built-in sources contribute their own test split when they have one, else
    all their images. Named classes (folders, built-ins, an npz with ``class_names``) are mapped onto
    ``class_names`` by name; unnamed ones by index. Classes missing from the source are fine.

    Args:
        source: as for :func:`load_dataset`.
        class_names: the model's classes, in label order.
        channels: 1 or 3; images are converted (colour -> gray uses Pillow's ITU-R 601-2 luma).
        image_size: resize every image to this square size (PIL bilinear); None keeps the source's size.
        lazy: an image folder stays undecoded (as in :func:`load_dataset`); only without ``image_size``.

    Returns:
        :class:`ArraySplit` with labels indexing ``class_names``.

    Raises:
        DataError: a source class is not among ``class_names``, a label is out of range, the source is
            empty, or any loading problem.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    _check_positive("image_size", image_size)
    size = (image_size, image_size) if image_size else None
    kind, target = resolve_source(source)
    entry = SOURCES.get(kind)
    if kind == "folder":  # decode only test/ of a train/test folder, straight to the model's format
        loaded = _load_folders(Path(target), None, channels, size, eval_only=True, lazy=lazy)[0]
    else:  # arrays convert cheaply after picking the split
        loaded = entry.load(target, channels=None if entry.native_size else channels,
                            size=None if entry.native_size else size)
    part = loaded.test if loaded.test is not None else loaded.pool
    if len(part) == 0:
        raise DataError(f"data source {source} has no images to evaluate: add images")
    labels = _map_labels(source, part.labels, loaded.class_names, loaded.named, class_names)
    return _conform(ArraySplit(part.images, labels), channels, size)


def load_images_for_prediction(paths: list[str], channels: int, image_size: int | None) -> np.ndarray:
    """Decode image files the way training decoded them.

    Args:
        paths: image files (any Pillow format).
        channels: 1 or 3; colour -> gray uses the same luma formula as everywhere else in ``slimship.data``.
        image_size: resize each image to this square size (PIL bilinear); when None all images must
            already share one size.

    Returns:
        uint8 array ``[N, H, W, channels]``.

    Raises:
        DataError: no paths, a path that is missing or not an image, or differing sizes without
            ``image_size``.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    _check_positive("image_size", image_size)
    if not paths:
        raise DataError("no images given for prediction: pass one or more image files")
    arrays = []
    for p in paths:
        path = Path(p).expanduser()
        if not path.is_file():
            what = "is a folder" if path.is_dir() else "does not exist"
            raise DataError(f"image {p} {what}: pass image files (png, jpg, bmp, gif, webp, tif)")
        arr = _decode(path, channels)
        if image_size:
            arr = _resize_array(arr, (image_size, image_size))
        arrays.append(arr)
    shapes = sorted({a.shape[:2] for a in arrays})
    if len(shapes) > 1:
        raise DataError(f"images have different sizes ({', '.join(f'{w}x{h}' for h, w in shapes)}): "
                        f"pass an image size to resize them")
    return np.stack(arrays)


# --------------------------------------------------------------------------------------------------
# Built-in data sets
# --------------------------------------------------------------------------------------------------


def _load_builtin(target: str, channels: int | None = None, size: tuple[int, int] | None = None) -> _Loaded:
    spec = BUILTIN_DATASETS[target]
    return _load_idx(str(spec.root), channels, size, class_names=list(spec.class_names))


def _require_builtin(name: str) -> None:
    spec = BUILTIN_DATASETS[name]
    if not all((spec.root / f).is_file() for f in _BUILTIN_FILES):
        raise DataError(f"built-in data set {name} is not installed: run `apt-get install -y {spec.package}` "
                        f"(Debian/Ubuntu) or pass the idx files' folder")


# --------------------------------------------------------------------------------------------------
# Helpers for load_dataset / load_eval_split
# --------------------------------------------------------------------------------------------------


def _load_with_separate_test(kind: str, target: str, test: str, size: tuple[int, int] | None,
                             lazy: bool = False) -> tuple[_Loaded, ArraySplit, str]:
    """Load the primary source and a separate test source of the same kind.

    The test source contributes its own test split if it has one, else all of it; its labels are put
    into the primary's label space (by name when both sources name their classes, else by index) and
    its class set must equal the training class set. Returns ``(primary, test split, test target)``.
    """
    test_kind, test_target = resolve_source(test)
    if test_target == target:
        raise DataError(f"test data {test} is the training data itself: every test figure would be measured on "
                        f"images the model trained on; pass a separate test set, or leave data.test empty")
    if test_kind != kind:
        raise DataError(f"test data {test} is a {test_kind} source but the training data is a {kind} source: "
                        f"pass a test source of the same kind")
    where = f"{target} with test {test_target}"
    if kind == "folder":
        loaded, separate = _load_folders(Path(target), Path(test_target), None, size, lazy=lazy)
        return loaded, separate, test_target
    entry = SOURCES.get(kind)
    loaded, other = entry.load(target), entry.load(test_target)
    part = other.test if other.test is not None else other.pool
    train_names = [loaded.class_names[i] for i in np.unique(loaded.pool.labels)]
    test_names = [other.class_names[i] for i in np.unique(part.labels)]
    if loaded.named and other.named:
        _check_same_classes(where, train_names, test_names)
        labels = _map_labels(test, part.labels, other.class_names, True, loaded.class_names)
    else:
        _check_same_classes(where, [str(i) for i in np.unique(loaded.pool.labels)],
                            [str(i) for i in np.unique(part.labels)])
        labels = part.labels
    return loaded, ArraySplit(part.images, labels), test_target


def _map_labels(source: str, labels: np.ndarray, src_names: list[str], named: bool,
                dst_names: list[str]) -> np.ndarray:
    """Translate a source's labels into ``dst_names`` indices: by name when ``named``, else by index."""
    present = np.unique(labels)
    if not named:
        if present.size and present.max() >= len(dst_names):
            raise DataError(f"{source}: labels go up to {int(present.max())} but the model has "
                            f"{len(dst_names)} classes: evaluate with data of the same classes")
        return labels
    index = {n: i for i, n in enumerate(dst_names)}
    unknown = [src_names[i] for i in present if src_names[i] not in index]
    if unknown:
        raise DataError(f"{source}: class {', '.join(unknown)} is not one of the model's classes "
                        f"({', '.join(dst_names)}): rename or remove it")
    lut = np.array([index.get(n, -1) for n in src_names], np.int64)
    return lut[labels]


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------

SOURCES.add("folder", SourceKind(_load_folder, native_size=False),
            help="folder with one sub-folder of images per class (optionally inside train/ and test/)")
SOURCES.add("idx", SourceKind(_load_idx, native_size=True),
            help="folder of MNIST-style idx files, plain or .gz (train-* and t10k-*/test-*)")
SOURCES.add("npz", SourceKind(_load_npz, native_size=True),
            help=".npz with x_train/y_train[/x_test/y_test], images/labels or x/y; optional class_names")
SOURCES.add("fashion-mnist", SourceKind(_load_builtin, native_size=True),
            help="built-in Fashion-MNIST (Debian package dataset-fashion-mnist), 10 classes, 28x28 gray")
