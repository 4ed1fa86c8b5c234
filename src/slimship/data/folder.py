"""Image folders: one sub-folder per class (optionally inside ``train/`` and ``test/``), decoded with Pillow.

A folder is first planned (files listed, every image header read) so channels and size can be decided over
all images before any pixel is decoded; decoding then converts every file the same way.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from slimship.data.arrays import ArraySplit, _check_same_classes, _Loaded, _resize_array, _rgb_to_gray
from slimship.data.files import ImageFiles
from slimship.data.limits import check_class_count
from slimship.core.errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "image_files"]

#: File extensions (lower case) read from image folders; anything else in a class folder is ignored.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})

#: Pillow modes treated as grayscale. Deciding by mode only (not by inspecting pixels) keeps the
#: header-only scan cheap; an RGB image that happens to be gray still counts as colour.
_GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})


# --------------------------------------------------------------------------------------------------
# Planning and loading
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
        check_class_count(f"data folder {d}", len(class_dirs), "class folders")
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


def _plan_files(plan: _FolderPlan, names: list[str], channels: int,
                size: tuple[int, int]) -> tuple[dict[str, ArraySplit], int]:
    """Like :func:`_decode_plan`, but nothing is decoded: the splits hold :class:`ImageFiles`; the count is of
    files whose native size differs from ``size``."""
    index = {n: i for i, n in enumerate(names)}
    out = {split: ArraySplit(ImageFiles(tuple(p for p, _ in files), channels, size),
                             np.array([index[c] for _, c in files], np.int64))
           for split, files in plan.splits.items()}
    return out, sum(wh != size for wh in plan.sizes)


def _load_folder(target: str, channels: int | None = None, size: tuple[int, int] | None = None) -> _Loaded:
    return _load_folders(Path(target), None, channels, size)[0]


def _load_folders(root: Path, test_root: Path | None, channels: int | None, size: tuple[int, int] | None,
                  eval_only: bool = False, lazy: bool = False) -> tuple[_Loaded, ArraySplit | None]:
    """Load a folder (and optionally a separate test folder), deciding channels and size over both.

    With ``lazy`` (and no ``size``) nothing is decoded: the splits hold :class:`ImageFiles`, which the
    preprocessing decodes one by one at the model's input size, so memory does not follow the photos' size.

    Deciding jointly means a colour test folder turns a gray training folder into colour, rather than the
    two disagreeing.
    """
    plan = _plan_folder(root, eval_only=eval_only)
    test_plan = _plan_folder(test_root, eval_only=True) if test_root is not None else None
    modes = plan.modes + (test_plan.modes if test_plan else [])
    sizes = plan.sizes + (test_plan.sizes if test_plan else [])
    channels = channels or _decide_channels(modes)
    pool_key = "all" if "all" in plan.splits else ("train" if "train" in plan.splits else "test")
    names = plan.classes[pool_key]
    if "train" in plan.splits and "test" in plan.splits:
        _check_same_classes(str(root), plan.classes["train"], plan.classes["test"])
    materialise = _plan_files if lazy and size is None else _decode_plan
    size = size or _decide_size(sizes)
    splits, resized = materialise(plan, names, channels, size)
    pool = splits[pool_key]
    own_test = splits.get("test") if pool_key == "train" else None
    separate = None
    if test_plan is not None:
        test_classes = next(iter(test_plan.classes.values()))
        _check_same_classes(f"{root} with test {test_root}", names, test_classes)
        test_splits, test_resized = materialise(test_plan, names, channels, size)
        separate, resized = next(iter(test_splits.values())), resized + test_resized
    return _Loaded(pool, own_test, names, named=True, resized=resized), separate


def image_files(paths, channels: int) -> ImageFiles:
    """Image files to classify, undecoded: each file as given, and every image inside a given folder
    (recursively, in sorted order, hidden names skipped).

    Raises:
        DataError: no paths, a path that does not exist, or a folder without images.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if not paths:
        raise DataError("no images given for prediction: pass image files or a folder of images")
    found: list[Path] = []
    for p in paths:
        path = Path(p).expanduser()
        try:
            path.exists()
        except (OSError, ValueError) as e:  # a name too long for the file system, a NUL byte, ...
            raise DataError(f"image {p} cannot be used ({getattr(e, 'strerror', None) or e}): check the path") from None
        if path.is_dir():
            inside = sorted(f for f in path.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file()
                            and not any(part.startswith(".") for part in f.relative_to(path).parts))
            if not inside:
                raise DataError(f"folder {p} has no images (png, jpg, bmp, gif, webp, tif): pass image files or a "
                                f"folder of images")
            found += inside
        elif path.is_file():
            found.append(path)
        else:
            raise DataError(f"image {p} does not exist: pass image files (png, jpg, bmp, gif, webp, tif) or a folder")
    return ImageFiles(tuple(found), channels)


# --------------------------------------------------------------------------------------------------
# Decoding files
# --------------------------------------------------------------------------------------------------


def _decode(path: Path, channels: int) -> np.ndarray:
    """Decode one file to uint8 ``[H, W, channels]`` (first frame of animations).

    Gray modes go through :func:`_gray_array`; every other mode through Pillow's RGB conversion (alpha is
    dropped); colour -> gray uses :func:`_rgb_to_gray` so arrays and files convert identically.
    """
    return _decode_scaled(path, channels, None)[0]


def _decode_scaled(path: Path, channels: int,
                   draft: tuple[int, int] | None) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """:func:`_decode`, where a JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) that keeps it at least
    ``draft`` (W, H) (other formats ignore it). Also returns the whole image's box in the decoded pixels'
    coordinates: ``(0, 0, W, H)`` divided by the scale (fractional when a side is not a multiple of it)."""
    try:
        with Image.open(path) as im:
            box = (0.0, 0.0, float(im.size[0]), float(im.size[1]))
            if draft is not None:
                drafted = im.draft(None, draft)
                box = tuple(float(v) for v in drafted[1]) if drafted else box
            if im.mode in _GRAY_MODES:
                gray = _gray_array(im)
                return (gray[..., None] if channels == 1 else np.repeat(gray[..., None], 3, axis=2)), box
            rgb = np.asarray(im.convert("RGB"))
    except DataError:
        raise
    except Exception as exc:  # truncated data, unsupported codec, ...: name the file
        raise _bad_image(path, exc) from exc
    return (_rgb_to_gray(rgb)[..., None] if channels == 1 else rgb), box


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
