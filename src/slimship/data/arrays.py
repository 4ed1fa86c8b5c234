"""In-memory splits and the array-level operations every source shares (numpy + Pillow, no torch).

:class:`ArraySplit` / :class:`DatasetSplits` are what loaders hand back; ``_Loaded`` is what one source
yields before it is cut into splits. The helpers below convert channels and sizes of whole splits and run
the label / class / shape checks common to array sources (idx, npz, built-ins) and image folders.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from slimship.core.errors import DataError
from slimship.data.files import ImageFiles
from slimship.data.limits import check_class_count

__all__ = ["ArraySplit", "DatasetSplits"]


# --------------------------------------------------------------------------------------------------
# Data model
# --------------------------------------------------------------------------------------------------


@dataclass
class ArraySplit:
    """One split held in memory.

    Attributes:
        images: uint8 array ``[N, H, W, C]`` with ``C`` in {1, 3}, or undecoded :class:`ImageFiles` standing in
            for one (a folder loaded lazily).
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

    @property
    def raw(self) -> np.ndarray:
        """The examples as the model's preprocessing reads them (the images)."""
        return self.images

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


# --------------------------------------------------------------------------------------------------
# Pixels (whole arrays)
# --------------------------------------------------------------------------------------------------


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
    """Convert a split to ``channels`` and (when given) ``size``; a no-op when it already matches.

    Undecoded files (:class:`ImageFiles`) only change the channels they will be decoded to; they are never
    resized here (the preprocessing decodes them at the model's input size)."""
    images = split.images
    if isinstance(images, ImageFiles):
        if size is not None:
            raise ValueError("undecoded image files are fitted by the preprocessing, not resized here")
        return split if images.channels == channels else ArraySplit(images.with_channels(channels), split.labels)
    if images.shape[-1] != channels:
        images = np.repeat(images, 3, axis=3) if channels == 3 else _rgb_to_gray(images)[..., None]
    if size is not None and images.shape[2:0:-1] != size:
        out = np.empty((images.shape[0], size[1], size[0], channels), np.uint8)
        for i, img in enumerate(images):
            out[i] = _resize_array(img, size)
        images = out
    return split if images is split.images else ArraySplit(images, split.labels)


# --------------------------------------------------------------------------------------------------
# Shared checks for array sources
# --------------------------------------------------------------------------------------------------


def _placeholder_names(pool: ArraySplit, test: ArraySplit | None, source: str = "data source") -> list[str]:
    """``"0".."K-1"`` with K one past the largest label of either split (negative labels fail later); K is
    bounded by :data:`~slimship.data.labels.MAX_CLASSES` before any name is made."""
    top = max(int(s.labels.max(initial=-1)) for s in (pool, test) if s is not None)
    check_class_count(source, top + 1, "class indices (one past the largest label)")
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
