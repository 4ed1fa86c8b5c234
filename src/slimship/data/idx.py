"""MNIST-style idx files: reading one file, and loading a folder of train/test idx pairs."""

from __future__ import annotations

import gzip
import io
import math
import re
import struct
import zlib
from pathlib import Path

import numpy as np

from slimship.data.arrays import ArraySplit, _check_labels, _finish_arrays, _Loaded, _placeholder_names
from slimship.data.folder import _visible_files
from slimship.core.errors import DataError
from slimship.data.limits import check_decoded_size, decoded_limit

__all__ = ["read_idx"]

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
        check_decoded_size(f"idx file {path}", path.stat().st_size, "data")
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read idx file {path}: {exc.strerror or exc}; check the path and permissions") from exc
    if raw[:2] == b"\x1f\x8b":
        try:  # read at most the memory bound (plus one byte to tell that it was exceeded): no gzip bomb
            limit = decoded_limit()
            with gzip.GzipFile(fileobj=io.BytesIO(raw)) as gz:
                raw = gz.read(limit + 1)
            check_decoded_size(f"idx file {path}", len(raw), "data", limit, at_least=True)
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
        class_names = _placeholder_names(pool, test, f"idx folder {folder}")
    _check_labels(str(folder), pool, test, class_names)
    return _finish_arrays(_Loaded(pool, test, class_names, named), channels, size)
