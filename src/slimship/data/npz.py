"""``.npz`` archives: images/labels (and optional test split and class names) saved with numpy."""

from __future__ import annotations

import zipfile
from collections import Counter
from pathlib import Path

import numpy as np

from slimship.data.arrays import ArraySplit, _check_labels, _finish_arrays, _Loaded, _placeholder_names
from slimship.core.errors import DataError
from slimship.data.limits import check_class_count, check_decoded_size, check_label_values

_NPZ_LAYOUTS = (("x_train", "y_train"), ("images", "labels"), ("x", "y"))


def _load_npz(target: str, channels: int | None = None, size: tuple[int, int] | None = None) -> _Loaded:
    path = Path(target)
    # np.load falls back to unpickling non-zip files; check the container first so a corrupt file is
    # reported as such, and never unpickle (a data file must not be able to run code).
    if not zipfile.is_zipfile(path):
        raise DataError(f"npz file {path} cannot be read (not a zip archive): re-save it with numpy.savez")
    check_decoded_size(str(path), _npz_decoded_bytes(path), "arrays")
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
        check_class_count(f"npz file {path}", np.asarray(arrays["class_names"]).size, "class_names")
        names = [str(n) for n in np.asarray(arrays["class_names"]).reshape(-1)]
        if len(set(names)) != len(names):
            dup = sorted(n for n, k in Counter(names).items() if k > 1)
            raise DataError(f"npz file {path} repeats class names {', '.join(dup)}: make class_names unique")
    else:
        names = _placeholder_names(pool, test, f"npz file {path}")
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
    if 0 in x.shape[1:3]:
        raise DataError(f"npz file {path}: {xk} has shape {x.shape}, images of no pixels: save images at least "
                        f"1x1")
    x = _to_uint8_images(path, xk, x)
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or _integral_floats(y)):
        raise DataError(f"npz file {path}: {yk} must be a 1-D array of integer class indices, got "
                        f"{y.dtype} {y.shape}")
    check_label_values(f"npz file {path}", yk, y)
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


def _npz_decoded_bytes(path: Path) -> int:
    """What the archive's members take once decompressed (from the zip directory: nothing is inflated)."""
    try:
        with zipfile.ZipFile(path) as z:
            return sum(i.file_size for i in z.infolist())
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"npz file {path} cannot be read ({exc}): re-save it with numpy.savez") from exc
