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

Every user mistake raises :class:`~slimship.errors.DataError` with a one-line message that says what is
wrong and what to do.
"""

from __future__ import annotations

import gzip
import math
import re
import struct
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from slimship.errors import DataError
from slimship.registry import Registry

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
    "resolve_source",
    "read_idx",
    "stratified_split",
    "stratified_subsample",
]

#: File extensions (lower case) read from image folders; anything else in a class folder is ignored.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})

#: Pillow modes treated as grayscale. Deciding by mode only (not by inspecting pixels) keeps the
#: header-only scan cheap; an RGB image that happens to be gray still counts as colour.
_GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})

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
_BUILTIN_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                  "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


# --------------------------------------------------------------------------------------------------
# Data model
# --------------------------------------------------------------------------------------------------


@dataclass
class ArraySplit:
    """One split held in memory.

    Attributes:
        images: uint8 array ``[N, H, W, C]`` with ``C`` in {1, 3}.
        labels: int64 array ``[N]`` with values in ``[0, num_classes)``.
    """

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        # Internal invariant, not a user error: loaders validate user data before building splits.
        if self.images.ndim != 4 or self.images.shape[-1] not in (1, 3) or self.images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 [N,H,W,C] with C in (1,3), got {self.images.dtype} "
                             f"{self.images.shape}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels shape {self.labels.shape} does not match {self.images.shape[0]} images")
        self.labels = self.labels.astype(np.int64, copy=False)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def channels(self) -> int:
        return int(self.images.shape[-1])

    def subset(self, idx) -> ArraySplit:
        """Return the rows selected by ``idx`` (index array, boolean mask or slice) as a new split."""
        return ArraySplit(self.images[idx], self.labels[idx])


@dataclass
class DatasetSplits:
    """Train / validation / test splits of one data set, plus what a package must remember about it.

    Attributes:
        train, val, test: the splits; all share ``H, W, C``.
        class_names: label ``i`` is ``class_names[i]``.
        channels: 1 (gray) or 3 (colour), the same for all splits.
        info: provenance for reports and packages: ``source``, ``kind``, ``test_source``, ``test_from``,
            ``val_from``, ``sizes``, ``train_subsampled_from``, ``test_subsampled_from``, ``image_shape``
            and ``resized`` (images resized while loading a folder).
    """

    train: ArraySplit
    val: ArraySplit
    test: ArraySplit
    class_names: list[str]
    channels: int
    info: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass
class _Loaded:
    """What a source yields before splitting.

    ``named`` says whether ``class_names`` are real names (folders, built-ins, an npz with
    ``class_names``), so evaluation maps classes by name, or placeholders ``"0".."K-1"`` mapped by index.
    """

    pool: ArraySplit  # everything, or the training part when the source has its own test split
    test: ArraySplit | None
    class_names: list[str]
    named: bool
    resized: int = 0


@dataclass(frozen=True)
class SourceKind:
    """A registered kind of data source.

    ``load(target, channels=None, size=None)`` returns a :class:`_Loaded`; ``channels``/``size`` (W, H)
    force the output format, ``None`` lets the source decide. ``native_size`` is True when all images of
    the source already share one size (arrays), so resizing can wait until after subsampling.
    """

    load: Callable[..., _Loaded]
    native_size: bool


SOURCES: Registry[SourceKind] = Registry("data source")


# --------------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------------


def resolve_source(source: str) -> tuple[str, str]:
    """Work out what kind of data source ``source`` names.

    Resolution order: a built-in name (case-insensitive, ``_`` = ``-``; it wins over a same-named folder in
    the working directory, write ``./fashion-mnist`` for the folder), then a path: a ``.npz`` file, a folder
    holding idx files, a folder of class sub-folders.

    Args:
        source: a built-in name or a path (``~`` is expanded).

    Returns:
        ``(kind, target)``: ``kind`` is a name in :data:`SOURCES`; ``target`` is the built-in's name or the
        absolute path.

    Raises:
        DataError: the built-in is not installed, the path does not exist, or it is not a usable source.
    """
    name = source.strip().lower().replace("_", "-")
    if name in BUILTIN_DATASETS:
        _require_builtin(name)
        return name, name
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(
            f"data path {source} does not exist: pass a folder with one sub-folder per class, idx files, "
            f"a .npz, or a built-in name ({', '.join(BUILTIN_DATASETS)})"
        )
    path = path.resolve()
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return "npz", str(path)
        raise DataError(
            f"data file {source} is not a .npz archive: pass a .npz, a folder of idx files, or a folder "
            f"with one sub-folder per class"
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

    Returns:
        :class:`DatasetSplits` (see its ``info`` for provenance).

    Raises:
        DataError: on any problem with the data or the arguments; the message says what to do.
    """
    _check_fraction("val_fraction", val_fraction)
    _check_fraction("test_fraction", test_fraction)
    _check_positive("train_limit", train_limit)
    _check_positive("test_limit", test_limit)
    _check_positive("image_size", image_size)
    size = (image_size, image_size) if image_size else None

    kind, target = resolve_source(source)
    if test is None:
        entry = SOURCES.get(kind)
        loaded = entry.load(target, size=None if entry.native_size else size)
        test_split, test_target = loaded.test, None
    else:
        loaded, test_split, test_target = _load_with_separate_test(kind, target, test, size)
    pool, class_names = loaded.pool, loaded.class_names
    present = [class_names[i] for i in np.unique(pool.labels)]
    if len(present) < 2:
        raise DataError(f"data source {source} has fewer than two classes ({', '.join(present) or 'none'}): "
                        f"a classifier needs at least two; add a class")

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


def _hold_out(source: str, split: ArraySplit, fraction: float, seed: int, name: str,
              needed: int) -> tuple[ArraySplit, ArraySplit]:
    """``(rest, held out)`` via :func:`stratified_split`; an empty held-out part is a DataError."""
    kept, held = stratified_split(split.labels, fraction, seed)
    if held.size == 0:
        raise DataError(_too_few_message(source, name, split.labels, needed))
    return split.subset(kept), split.subset(held)


def _limit(split: ArraySplit, limit: int | None, seed: int, name: str) -> tuple[ArraySplit, int | None]:
    """Stratified subsample to ``limit``; returns the split and its size before (None if untouched)."""
    if limit is None or limit >= len(split):
        return split, None
    n_present = len(np.unique(split.labels))
    if name == "train_limit" and limit < n_present:  # a class with no training image cannot be learnt
        raise DataError(f"train_limit {limit} is smaller than the {n_present} classes: raise it to at "
                        f"least {n_present}")
    return split.subset(stratified_subsample(split.labels, limit, seed)), len(split)


def load_eval_split(source: str, class_names: list[str], channels: int, image_size: int | None) -> ArraySplit:
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
        loaded = _load_folders(Path(target), None, channels, size, eval_only=True)[0]
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
        channels: 1 or 3; colour -> gray uses the same luma formula as everywhere else in this module.
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
# Stratified splitting
# --------------------------------------------------------------------------------------------------


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ``fraction`` of every class.

    Per class (in label order) the indices are permuted with one ``np.random.default_rng(seed)`` and
    ``round(fraction * n_c)`` (half up) are held out, but at least 1 when ``n_c >= 2`` and at most
    ``n_c - 1``, so every class keeps a training example; a class with one example is never held out.

    Args:
        labels: int array ``[N]``.
        fraction: in (0, 1).
        seed: RNG seed; the result is a pure function of ``(labels, fraction, seed)``.

    Returns:
        ``(kept, held_out)``: disjoint sorted index arrays covering ``range(N)``; ``held_out`` may be
        empty when every class has fewer than two examples.
    """
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for members in _class_members(labels)[1]:
        members = rng.permutation(members)
        n = members.size
        k = 0 if n < 2 else min(max(int(fraction * n + 0.5), 1), n - 1)
        held.append(members[:k])
    held_out = np.sort(np.concatenate(held)) if held else np.empty(0, np.int64)
    mask = np.ones(labels.shape[0], bool)
    mask[held_out] = False
    return np.flatnonzero(mask), held_out.astype(np.int64)


def stratified_subsample(labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Pick ``limit`` indices with class proportions preserved.

    Quotas use the largest-remainder method (ties to the lower label); a class present in ``labels`` keeps
    at least one example while ``limit`` allows. Within a class, examples are drawn with
    ``np.random.default_rng(seed)``.

    Returns:
        Sorted index array of length ``min(limit, len(labels))``.
    """
    n = labels.shape[0]
    if limit >= n:
        return np.arange(n)
    classes, members = _class_members(labels)
    counts = np.array([m.size for m in members])
    exact = counts * (limit / n)
    quota = np.floor(exact).astype(np.int64)
    order = np.lexsort((np.arange(classes.size), -(exact - quota)))  # largest remainder first
    quota[order[: limit - int(quota.sum())]] += 1
    # Keep every class represented when the limit allows it: take one from the biggest quota.
    for i in np.flatnonzero(quota == 0):
        donor = int(np.argmax(quota))
        if quota[donor] <= 1:
            break
        quota[donor] -= 1
        quota[i] = 1
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(m)[:q] for m, q in zip(members, quota)]
    return np.sort(np.concatenate(picked))


def _class_members(labels: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Sorted class values and, for each, its indices in ascending order (one sort, not one scan per class)."""
    classes, counts = np.unique(labels, return_counts=True)
    order = np.argsort(labels, kind="stable")
    return classes, np.split(order, np.cumsum(counts)[:-1])


# --------------------------------------------------------------------------------------------------
# idx files
# --------------------------------------------------------------------------------------------------

_IDX_IMAGES = re.compile(r"^(?P<prefix>.+?)[-.]images[-.]idx3[-.]ubyte(?P<gz>\.gz)?$", re.IGNORECASE)


def read_idx(path: str | Path) -> np.ndarray:
    """Read one idx file (the MNIST format), plain or gzip-compressed.

    Compression is detected by the gzip magic bytes ``1f 8b``, not by extension. The header is
    ``00 00 <dtype> <ndim>`` followed by ``ndim`` big-endian uint32 sizes; only dtype ``0x08`` (unsigned
    byte) is supported.

    Returns:
        A writable uint8 array of the stored shape.

    Raises:
        DataError: unreadable file, corrupt gzip, bad magic, unsupported dtype, or wrong data length.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read idx file {path}: {exc.strerror or exc}; check the path and permissions") from exc
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"idx file {path} is a corrupt gzip file ({exc}): download or copy it again") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"idx file {path} has bad magic bytes {raw[:4].hex(' ') or '(empty)'} (expected 00 00 08 "
                        f"<ndim>): it is not an idx file; replace it with a valid one")
    dtype_code, ndim = raw[2], raw[3]
    if dtype_code != 0x08:
        raise DataError(f"idx file {path} stores dtype 0x{dtype_code:02x}; only unsigned bytes (0x08) are "
                        f"supported: convert it to uint8 or use a .npz")
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"idx file {path} has a truncated header: replace it with a valid idx file")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    count = math.prod(dims)
    if len(raw) - header != count:
        raise DataError(f"idx file {path} holds {len(raw) - header} data bytes but its header {list(dims)} "
                        f"needs {count}: the file is truncated or corrupt; replace it")
    return np.frombuffer(raw, np.uint8, count=count, offset=header).reshape(dims).copy()


def _find_idx_images(folder: Path) -> dict[str, Path]:
    """``{prefix: images file}`` for idx image files directly in ``folder`` (plain preferred over .gz)."""
    found: dict[str, Path] = {}
    for p in sorted(_visible_files(folder)):  # "x-ubyte" sorts before "x-ubyte.gz": plain copy wins
        m = _IDX_IMAGES.match(p.name)
        if m and m["prefix"] not in found:
            found[m["prefix"]] = p
    return found


def _labels_file_for(images: Path, prefix: str) -> Path:
    candidates = sorted(p for p in _visible_files(images.parent)
                        if re.match(rf"^{re.escape(prefix)}[-.]labels[-.]idx1[-.]ubyte(\.gz)?$", p.name, re.I))
    if not candidates:
        raise DataError(f"idx images {images} have no labels file: put {prefix}-labels-idx1-ubyte[.gz] next "
                        f"to it")
    return candidates[0]


def _read_idx_pair(images_path: Path, prefix: str) -> ArraySplit:
    images = read_idx(images_path)
    labels_path = _labels_file_for(images_path, prefix)
    labels = read_idx(labels_path)
    if images.ndim != 3:
        raise DataError(f"idx file {images_path} has {images.ndim} dimensions, images need 3 (N, H, W): "
                        f"pass an idx3 images file")
    if labels.ndim != 1:
        raise DataError(f"idx file {labels_path} has {labels.ndim} dimensions, labels need 1: pass an idx1 "
                        f"labels file")
    if len(labels) != len(images):
        raise DataError(f"idx files {images_path.name} and {labels_path.name} hold {len(images)} images but "
                        f"{len(labels)} labels: use matching files")
    return ArraySplit(images[..., None], labels.astype(np.int64))


def _idx_roles(folder: Path) -> tuple[tuple[str, Path], tuple[str, Path] | None]:
    """Pick the training and (optional) test image files among the idx pairs in ``folder``."""
    found = _find_idx_images(folder)
    train = {k: v for k, v in found.items() if k.lower().startswith("train")}
    test = {k: v for k, v in found.items() if k.lower().startswith(("t10k", "test"))}
    if len(found) == 1 and not test:
        return next(iter(found.items())), None
    if len(train) != 1 or len(test) > 1 or len(train) + len(test) != len(found):
        raise DataError(f"idx folder {folder} holds image files with prefixes {', '.join(sorted(found))}: "
                        f"cannot tell training from test; name them train-* and t10k-* (or test-*), one each")
    return next(iter(train.items())), (next(iter(test.items())) if test else None)


def _load_idx(target: str, channels: int | None = None, size: tuple[int, int] | None = None,
              class_names: list[str] | None = None) -> _Loaded:
    folder = Path(target)
    (train_prefix, train_path), test_entry = _idx_roles(folder)
    pool = _read_idx_pair(train_path, train_prefix)
    test = _read_idx_pair(test_entry[1], test_entry[0]) if test_entry else None
    named = class_names is not None
    if class_names is None:
        class_names = _placeholder_names(pool, test)
    _check_labels(str(folder), pool, test, class_names)
    return _finish_arrays(_Loaded(pool, test, class_names, named), channels, size)


def _load_builtin(target: str, channels: int | None = None, size: tuple[int, int] | None = None) -> _Loaded:
    spec = BUILTIN_DATASETS[target]
    return _load_idx(str(spec.root), channels, size, class_names=list(spec.class_names))


def _require_builtin(name: str) -> None:
    spec = BUILTIN_DATASETS[name]
    if not all((spec.root / f).is_file() for f in _BUILTIN_FILES):
        raise DataError(f"built-in data set {name} is not installed: run `apt-get install -y {spec.package}` "
                        f"(Debian/Ubuntu) or pass the idx files' folder")


# --------------------------------------------------------------------------------------------------
# .npz archives
# --------------------------------------------------------------------------------------------------

_NPZ_LAYOUTS = (("x_train", "y_train"), ("images", "labels"), ("x", "y"))


def _load_npz(target: str, channels: int | None = None, size: tuple[int, int] | None = None) -> _Loaded:
    path = Path(target)
    # np.load falls back to unpickling non-zip files; check the container first so a corrupt file is
    # reported as such, and never unpickle (a data file must not be able to run code).
    if not zipfile.is_zipfile(path):
        raise DataError(f"npz file {path} cannot be read (not a zip archive): re-save it with numpy.savez")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except ValueError as exc:  # object arrays need pickle, which we refuse
        raise DataError(f"npz file {path} holds object arrays: save images/labels as numeric arrays and "
                        f"class_names as a string array") from exc
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"npz file {path} cannot be read ({exc}): re-save it with numpy.savez") from exc
    xk, yk = next(((x, y) for x, y in _NPZ_LAYOUTS if x in arrays and y in arrays), (None, None))
    if xk is None:
        raise DataError(f"npz file {path} has keys {', '.join(sorted(arrays)) or '(none)'}: save the data under "
                        f"x_train+y_train (+x_test+y_test), images+labels, or x+y")
    pool = _npz_split(path, arrays[xk], arrays[yk], xk, yk)
    test = None
    if xk == "x_train" and ("x_test" in arrays or "y_test" in arrays):
        if not ("x_test" in arrays and "y_test" in arrays):
            raise DataError(f"npz file {path} has only one of x_test/y_test: save both or neither")
        test = _npz_split(path, arrays["x_test"], arrays["y_test"], "x_test", "y_test")
    named = "class_names" in arrays
    if named:
        names = [str(n) for n in np.asarray(arrays["class_names"]).reshape(-1)]
        if len(set(names)) != len(names):
            dup = sorted(n for n, k in Counter(names).items() if k > 1)
            raise DataError(f"npz file {path} repeats class names {', '.join(dup)}: make class_names unique")
    else:
        names = _placeholder_names(pool, test)
    _check_labels(str(path), pool, test, names)
    return _finish_arrays(_Loaded(pool, test, names, named), channels, size)


def _npz_split(path: Path, x: np.ndarray, y: np.ndarray, xk: str, yk: str) -> ArraySplit:
    """Validate one images/labels pair from an npz and bring it to uint8 ``[N,H,W,C]`` / int64 ``[N]``."""
    if x.ndim == 3:
        x = x[..., None]
    elif x.ndim == 4 and x.shape[-1] not in (1, 3) and x.shape[1] in (1, 3):
        x = np.moveaxis(x, 1, -1)  # channel-first [N,C,H,W], as torch code tends to save it
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise DataError(f"npz file {path}: {xk} has shape {x.shape}; expected [N,H,W], [N,H,W,C] or "
                        f"[N,C,H,W] with C 1 or 3")
    x = _to_uint8_images(path, xk, x)
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or _integral_floats(y)):
        raise DataError(f"npz file {path}: {yk} must be a 1-D array of integer class indices, got "
                        f"{y.dtype} {y.shape}")
    if len(y) != len(x):
        raise DataError(f"npz file {path}: {xk} has {len(x)} images but {yk} has {len(y)} labels: save "
                        f"one label per image")
    if len(x) == 0:
        raise DataError(f"npz file {path}: {xk} is empty: save at least one image per class")
    return ArraySplit(np.ascontiguousarray(x), y.astype(np.int64))


def _integral_floats(y: np.ndarray) -> bool:
    return np.issubdtype(y.dtype, np.floating) and bool(np.all(np.isfinite(y) & (y == np.round(y))))


def _to_uint8_images(path: Path, key: str, x: np.ndarray) -> np.ndarray:
    """uint8 as is; integers in [0, 255] cast; floats in [0, 1] scaled by 255; anything else refused."""
    if x.dtype == np.uint8:
        return x
    if x.size and np.issubdtype(x.dtype, np.integer) and x.min() >= 0 and x.max() <= 255:
        return x.astype(np.uint8)
    if x.size and np.issubdtype(x.dtype, np.floating) and np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1:
        return np.round(x * 255).astype(np.uint8)
    raise DataError(f"npz file {path}: {key} is {x.dtype} with values outside uint8 [0, 255] or float "
                    f"[0, 1]: save images as uint8")


# --------------------------------------------------------------------------------------------------
# Shared checks for array sources
# --------------------------------------------------------------------------------------------------


def _placeholder_names(pool: ArraySplit, test: ArraySplit | None) -> list[str]:
    """``"0".."K-1"`` with K one past the largest label of either split (negative labels fail later)."""
    top = max(int(s.labels.max(initial=-1)) for s in (pool, test) if s is not None)
    return [str(i) for i in range(top + 1)]


def _check_labels(source: str, pool: ArraySplit, test: ArraySplit | None, names: list[str]) -> None:
    """Labels in range for both splits; train and test (when both exist) use the same class set."""
    for split_name, split in (("training", pool), ("test", test)):
        if split is None:
            continue
        bad = split.labels[(split.labels < 0) | (split.labels >= len(names))]
        if bad.size:
            raise DataError(f"{source}: {split_name} labels include {', '.join(map(str, np.unique(bad)[:5]))} "
                            f"outside [0, {len(names)}) for {len(names)} classes: fix the labels or the class "
                            f"names")
    if test is not None:
        _check_same_classes(source, [names[i] for i in np.unique(pool.labels)],
                            [names[i] for i in np.unique(test.labels)])


def _check_same_classes(source: str, train: list[str], test: list[str]) -> None:
    only_train, only_test = sorted(set(train) - set(test)), sorted(set(test) - set(train))
    if only_train or only_test:
        parts = ([f"only in train: {', '.join(only_train)}"] if only_train else []) + (
            [f"only in test: {', '.join(only_test)}"] if only_test else [])
        raise DataError(f"{source}: train and test have different classes ({'; '.join(parts)}): give both "
                        f"the same classes")


def _check_same_shape(source: str, train: ArraySplit, test: ArraySplit, resize_pending: bool) -> None:
    (h, w, c), (th, tw, tc) = train.images.shape[1:], test.images.shape[1:]
    if c != tc:
        raise DataError(f"{source}: train images have {c} channel(s) but test images have {tc}: store both "
                        f"as gray or both as colour")
    if (h, w) != (th, tw) and not resize_pending:
        raise DataError(f"{source}: train images are {w}x{h} but test images are {tw}x{th}: store them at "
                        f"one size or pass an image size to resize both")


def _finish_arrays(loaded: _Loaded, channels: int | None, size: tuple[int, int] | None) -> _Loaded:
    """Apply a loader's forced ``channels`` / ``size`` to both splits of an array source."""
    if channels is None and size is None:
        return loaded

    def conv(split: ArraySplit | None) -> ArraySplit | None:
        return None if split is None else _conform(split, channels or split.channels, size)

    return _Loaded(conv(loaded.pool), conv(loaded.test), loaded.class_names, loaded.named)


# --------------------------------------------------------------------------------------------------
# Image folders
# --------------------------------------------------------------------------------------------------


@dataclass
class _FolderPlan:
    """Files of one image folder, before decoding: ``{split: [(path, class name)]}``.

    ``split`` is ``"train"``/``"test"`` for a folder with train/ and test/ sub-folders, else ``"all"``.
    ``modes`` / ``sizes`` come from a header-only scan and drive the channel and size decisions.
    """

    root: Path
    splits: dict[str, list[tuple[Path, str]]]
    classes: dict[str, list[str]]
    modes: list[str]
    sizes: list[tuple[int, int]]


def _visible_subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _visible_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _class_files(class_dir: Path) -> list[Path]:
    """Image files directly inside one class folder (not recursive); other files are ignored."""
    files = [p for p in _visible_files(class_dir) if p.suffix.lower() in IMAGE_EXTENSIONS]
    if not files:
        sub = [p.name for p in _visible_subdirs(class_dir)]
        why = (f"only sub-folders ({', '.join(sub[:5])}); images must sit directly in each class folder"
               if sub else "add images (png, jpg, bmp, gif, webp, tif) or remove the folder")
        raise DataError(f"class folder {class_dir} has no images: {why}")
    return files


def _is_split_layout(root: Path) -> bool:
    names = {p.name for p in _visible_subdirs(root)}
    return {"train", "test"} <= names and all(_visible_subdirs(root / s) for s in ("train", "test"))


def _plan_folder(root: Path, eval_only: bool = False) -> _FolderPlan:
    """List a folder's images per split and class, and read every image header.

    With ``eval_only`` a split-layout folder contributes only ``test/``.
    """
    if _is_split_layout(root):
        extra = sorted(p.name for p in _visible_subdirs(root) if p.name not in ("train", "test"))
        if extra:
            raise DataError(f"data folder {root} has train/ and test/ plus other sub-folders ({', '.join(extra)}): "
                            f"only train/ and test/ are used (validation comes from train/); merge or move them")
        split_dirs = {"test": root / "test"} if eval_only else {"train": root / "train", "test": root / "test"}
    else:
        split_dirs = {"all": root}
    splits: dict[str, list[tuple[Path, str]]] = {}
    classes: dict[str, list[str]] = {}
    for split, d in split_dirs.items():
        class_dirs = _visible_subdirs(d)
        classes[split] = [c.name for c in class_dirs]
        splits[split] = [(f, c.name) for c in class_dirs for f in _class_files(c)]
    modes, sizes = [], []
    for files in splits.values():
        for f, _ in files:
            mode, wh = _read_header(f)
            modes.append(mode)
            sizes.append(wh)
    return _FolderPlan(root, splits, classes, modes, sizes)


def _read_header(path: Path) -> tuple[str, tuple[int, int]]:
    try:
        with Image.open(path) as im:
            return im.mode, im.size
    except Exception as exc:  # Pillow raises many types for bad files; all mean "this file is broken"
        raise _bad_image(path, exc) from exc


def _bad_image(path: Path, exc: Exception) -> DataError:
    detail = str(exc).splitlines()[0].replace(f"'{path}'", "").strip() if str(exc) else ""
    detail = detail or type(exc).__name__  # Pillow often repeats the path; the message names it once
    return DataError(f"image {path} cannot be read ({detail}): remove or fix the file")


def _decide_channels(modes: list[str]) -> int:
    """1 when every image's Pillow mode is grayscale, else 3 (everything is converted to RGB)."""
    return 1 if all(m in _GRAY_MODES for m in modes) else 3


def _decide_size(sizes: list[tuple[int, int]]) -> tuple[int, int]:
    """The most common (W, H); ties go to the larger area, then the larger (W, H), for determinism."""
    counts = Counter(sizes)
    return max(counts, key=lambda wh: (counts[wh], wh[0] * wh[1], wh))


def _decode_plan(plan: _FolderPlan, names: list[str], channels: int,
                 size: tuple[int, int]) -> tuple[dict[str, ArraySplit], int]:
    """Decode every planned image to ``channels`` at ``size``; returns splits and how many were resized."""
    index = {n: i for i, n in enumerate(names)}
    out, resized = {}, 0
    for split, files in plan.splits.items():
        images = np.empty((len(files), size[1], size[0], channels), np.uint8)
        labels = np.empty(len(files), np.int64)
        for i, (path, cls) in enumerate(files):
            arr = _decode(path, channels)
            if arr.shape[1::-1] != size:
                arr, resized = _resize_array(arr, size), resized + 1
            images[i], labels[i] = arr, index[cls]
        out[split] = ArraySplit(images, labels)
    return out, resized


def _load_folder(target: str, channels: int | None = None, size: tuple[int, int] | None = None) -> _Loaded:
    return _load_folders(Path(target), None, channels, size)[0]


def _load_folders(root: Path, test_root: Path | None, channels: int | None,
                  size: tuple[int, int] | None, eval_only: bool = False) -> tuple[_Loaded, ArraySplit | None]:
    """Load a folder (and optionally a separate test folder), deciding channels and size over both.

    Deciding jointly means a colour test folder turns a gray training folder into colour, rather than the
    two disagreeing.
    """
    plan = _plan_folder(root, eval_only=eval_only)
    test_plan = _plan_folder(test_root, eval_only=True) if test_root is not None else None
    modes = plan.modes + (test_plan.modes if test_plan else [])
    sizes = plan.sizes + (test_plan.sizes if test_plan else [])
    channels = channels or _decide_channels(modes)
    size = size or _decide_size(sizes)
    pool_key = "all" if "all" in plan.splits else ("train" if "train" in plan.splits else "test")
    names = plan.classes[pool_key]
    if "train" in plan.splits and "test" in plan.splits:
        _check_same_classes(str(root), plan.classes["train"], plan.classes["test"])
    splits, resized = _decode_plan(plan, names, channels, size)
    pool = splits[pool_key]
    own_test = splits.get("test") if pool_key == "train" else None
    separate = None
    if test_plan is not None:
        test_classes = next(iter(test_plan.classes.values()))
        _check_same_classes(f"{root} with test {test_root}", names, test_classes)
        test_splits, test_resized = _decode_plan(test_plan, names, channels, size)
        separate, resized = next(iter(test_splits.values())), resized + test_resized
    return _Loaded(pool, own_test, names, named=True, resized=resized), separate


# --------------------------------------------------------------------------------------------------
# Pixels
# --------------------------------------------------------------------------------------------------


def _decode(path: Path, channels: int) -> np.ndarray:
    """Decode one file to uint8 ``[H, W, channels]`` (first frame of animations).

    Gray modes go through :func:`_gray_array`; every other mode through Pillow's RGB conversion (alpha is
    dropped); colour -> gray uses :func:`_rgb_to_gray` so arrays and files convert identically.
    """
    try:
        with Image.open(path) as im:
            if im.mode in _GRAY_MODES:
                gray = _gray_array(im)
                return gray[..., None] if channels == 1 else np.repeat(gray[..., None], 3, axis=2)
            rgb = np.asarray(im.convert("RGB"))
    except DataError:
        raise
    except Exception as exc:  # truncated data, unsupported codec, ...: name the file
        raise _bad_image(path, exc) from exc
    return _rgb_to_gray(rgb)[..., None] if channels == 1 else rgb


def _gray_array(im: Image.Image) -> np.ndarray:
    """uint8 ``[H, W]`` from a gray-mode image.

    16-bit modes (``I;16*``) are scaled from [0, 65535]; 32-bit ``I`` is scaled the same way only when it
    exceeds 255 (Pillow may open 16-bit PNGs as ``I``); float ``F`` is scaled from [0, 1] when it fits,
    else clipped.
    """
    if im.mode in ("1", "L", "LA"):
        return np.asarray(im.convert("L"))
    arr = np.asarray(im).astype(np.float64)
    if im.mode.startswith("I;16") or (im.mode == "I" and arr.size and arr.max() > 255):
        arr = arr * (255.0 / 65535.0)
    elif im.mode == "F" and arr.size and arr.min() >= 0 and arr.max() <= 1:
        arr = arr * 255.0
    return np.clip(np.round(arr), 0, 255).astype(np.uint8)


def _rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma with Pillow's exact integer rounding, on ``[..., 3]`` uint8 arrays."""
    r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)


def _resize_array(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize uint8 ``[H, W, C]`` to ``size`` = (W, H) with PIL bilinear."""
    if arr.shape[1::-1] == size:
        return arr
    if arr.shape[-1] == 1:
        return np.asarray(Image.fromarray(arr[..., 0], "L").resize(size, Image.BILINEAR))[..., None]
    return np.asarray(Image.fromarray(arr, "RGB").resize(size, Image.BILINEAR))


def _conform(split: ArraySplit, channels: int, size: tuple[int, int] | None) -> ArraySplit:
    """Convert a split to ``channels`` and (when given) ``size``; a no-op when it already matches."""
    images = split.images
    if images.shape[-1] != channels:
        images = np.repeat(images, 3, axis=3) if channels == 3 else _rgb_to_gray(images)[..., None]
    if size is not None and images.shape[2:0:-1] != size:
        out = np.empty((images.shape[0], size[1], size[0], channels), np.uint8)
        for i, img in enumerate(images):
            out[i] = _resize_array(img, size)
        images = out
    return split if images is split.images else ArraySplit(images, split.labels)


# --------------------------------------------------------------------------------------------------
# Helpers for load_dataset / load_eval_split
# --------------------------------------------------------------------------------------------------


def _load_with_separate_test(kind: str, target: str, test: str,
                             size: tuple[int, int] | None) -> tuple[_Loaded, ArraySplit, str]:
    """Load the primary source and a separate test source of the same kind.

    The test source contributes its own test split if it has one, else all of it; its labels are put
    into the primary's label space (by name when both sources name their classes, else by index) and
    its class set must equal the training class set. Returns ``(primary, test split, test target)``.
    """
    test_kind, test_target = resolve_source(test)
    if test_kind != kind:
        raise DataError(f"test data {test} is a {test_kind} source but the training data is a {kind} source: "
                        f"pass a test source of the same kind")
    where = f"{target} with test {test_target}"
    if kind == "folder":
        loaded, separate = _load_folders(Path(target), Path(test_target), None, size)
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


def _too_few_message(source: str, split: str, labels: np.ndarray, needed: int) -> str:
    most = int(np.bincount(labels).max()) if labels.size else 0
    return (f"data source {source} has too few images for a {split} split (at most {most} per class): "
            f"need at least {needed} images per class (train, validation"
            f"{', test' if needed >= 3 else ''}); add images or pass a separate test source")


def _check_fraction(name: str, value: float) -> None:
    if not (0.0 < float(value) < 1.0):
        raise DataError(f"{name} is {value}: pass a fraction between 0 and 1 (exclusive), e.g. 0.1")


def _check_positive(name: str, value: int | None) -> None:
    if value is not None and (int(value) != value or value < 1):
        raise DataError(f"{name} is {value}: pass a positive whole number or leave it unset")


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
