"""Bounds on what a data source may ask for: classes, labels and decoded bytes.

Unnamed labels (idx files, an npz without ``class_names``) become classes ``0..max``. Without a bound one label of
1e9 asks for a billion classes (the process runs out of memory before anything is said), and a label of 1e7 makes
ten million classes almost all of which have no image. These checks run before anything is sized by the labels,
and a class with no image, or too few to appear in every split, is named. Compressed arrays are bounded by what they
take once decompressed, read from their headers before anything is inflated.
"""

from __future__ import annotations

import os

import numpy as np

from slimship.core.errors import DataError

#: The most classes a data source may have: class folders, ``class_names`` or one past the largest label.
MAX_CLASSES = 10_000

#: Decoded arrays (an npz's members, a gzip'd idx file) may take at most this fraction of the memory the process
#: may use (physical memory, or its address-space limit when lower).
MAX_MEMORY_FRACTION = 0.5

#: Labels listed by name in an error message (the rest are counted).
_SHOWN = 5


def check_label_values(source: str, key: str, labels: np.ndarray) -> None:
    """Labels must be whole numbers in ``[0, MAX_CLASSES)`` (checked on the raw values, before any cast)."""
    if not labels.size:
        return
    if np.issubdtype(labels.dtype, np.floating) and not np.isfinite(labels).all():
        raise DataError(f"{source}: {key} holds non-finite values (nan or inf): store class indices 0..K-1")
    top, low = labels.max(), labels.min()
    if top >= MAX_CLASSES:
        raise DataError(f"{source}: {key} goes up to {_num(top)}, but slimship trains at most {MAX_CLASSES:,} "
                        f"classes: labels must be class indices 0..K-1; renumber them (e.g. numpy.unique(labels, "
                        f"return_inverse=True))")
    if low < 0:
        raise DataError(f"{source}: {key} holds negative labels (down to {_num(low)}): labels must be class indices "
                        f"0..K-1; renumber them (e.g. numpy.unique(labels, return_inverse=True))")


def check_class_count(source: str, count: int, what: str) -> None:
    """At most MAX_CLASSES classes named by folders or ``class_names``."""
    if count > MAX_CLASSES:
        raise DataError(f"{source} has {count:,} {what}, but slimship trains at most {MAX_CLASSES:,} classes: "
                        f"merge or drop classes")


def check_every_class_used(source: str, class_names: list[str], named: bool, labels: list[np.ndarray]) -> None:
    """Every class must have at least one image; a sparse or gapped label set is named with what to do."""
    used = np.unique(np.concatenate([np.asarray(x, np.int64) for x in labels])) if labels else np.empty(0, np.int64)
    missing = np.setdiff1d(np.arange(len(class_names)), used)
    if not missing.size:
        return
    shown = ", ".join(class_names[i] for i in missing[:_SHOWN]) + (
        f" and {missing.size - _SHOWN:,} more" if missing.size > _SHOWN else "")
    if named:
        raise DataError(f"{source}: class_names lists {missing.size:,} class(es) with no image ({shown}): remove "
                        f"them from class_names or add their images")
    raise DataError(f"{source}: labels are not contiguous: {used.size:,} distinct labels span 0..{len(class_names) - 1}, "
                    f"so {missing.size:,} label(s) have no image ({shown}): renumber the labels to 0..{used.size - 1} "
                    f"(e.g. numpy.unique(labels, return_inverse=True)) or add images of the missing classes")


def check_images_per_class(source: str, class_names: list[str], labels: np.ndarray, needed: int) -> None:
    """Every class needs ``needed`` images: one for training, one for validation (and one for test when the
    source has no test split of its own), or it is missing from the splits that judge it."""
    counts = np.bincount(labels, minlength=len(class_names))
    few = np.flatnonzero((counts > 0) & (counts < needed))
    if not few.size:
        return
    shown = ", ".join(f"{class_names[i]} ({counts[i]})" for i in few[:_SHOWN]) + (
        f" and {few.size - _SHOWN:,} more" if few.size > _SHOWN else "")
    roles = "training, validation, test" if needed >= 3 else "training, validation"
    raise DataError(f"{source}: {few.size:,} class(es) have fewer than {needed} images ({shown}): need at least "
                    f"{needed} images per class ({roles}); add images, remove the class"
                    f"{', or pass a separate test source' if needed >= 3 else ''}")


def _num(v) -> str:
    f = float(v)
    return f"{int(f):,}" if f.is_integer() and abs(f) < 1e18 else f"{f:g}"


def memory_bytes() -> int:
    """Memory this process may use: physical memory, or less under an address-space limit (``ulimit -v``);
    0 when it cannot be told."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 0
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY and soft > 0:
            total = min(total, soft) if total else soft
    except (ImportError, ValueError, OSError):
        pass
    return total


def decoded_limit() -> int:
    """The most bytes one source's decoded arrays may take (``MAX_MEMORY_FRACTION`` of physical memory)."""
    total = memory_bytes()
    return int(total * MAX_MEMORY_FRACTION) if total else 1 << 62


def check_decoded_size(source: str, nbytes: int, what: str, limit: int | None = None, at_least: bool = False) -> None:
    """Refuse a source whose decoded ``what`` would not fit in memory (``limit``: :func:`decoded_limit`), before
    anything is decompressed; ``at_least`` when decompressing stopped at the limit."""
    limit = decoded_limit() if limit is None else limit
    if nbytes > limit:
        size = f"{'at least ' if at_least else ''}{nbytes / 2**30:,.1f} GiB"
        raise DataError(f"{source} holds {size} of {what} once decompressed, more than {MAX_MEMORY_FRACTION:.0%} "
                        f"of the memory this process may use ({limit / 2**30:,.1f} GiB): use fewer or smaller images, "
                        f"or an image folder (decoded one image at a time)")
