"""Classify with a loaded package: logits → softmax → the most likely classes, in one place.

``slimship predict``, :func:`slimship.api.predict`, ``slimship.load(PKG).predict(images)`` and the model server
(:mod:`slimship.serve`) all turn logits into answers here, so a served prediction is the same as a local one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np


def top_classes(logits: np.ndarray, class_names: Sequence[str], top: int = 3) -> list[list[dict]]:
    """Per row of ``logits`` [N, K]: the ``top`` most likely classes (at least 1, at most K), most likely first,
    as ``[{"class": name, "probability": p}]`` with ``p`` the softmax probability rounded to 4 decimals."""
    z = logits - logits.max(1, keepdims=True)  # shifted so that exp cannot overflow
    probs = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    out = []
    for p in probs:
        best = np.argsort(-p, kind="stable")[: max(1, top)]
        out.append([{"class": class_names[i], "probability": round(float(p[i]), 4)} for i in best])
    return out


def predict_images(pkg: Any, images: Sequence[str | Path] | np.ndarray, top: int = 3) -> list[dict]:
    """``[{"image": path (or index in an array), "top": [...]}]`` of a loaded package (``LoadedPackage``: no
    import of it here, pack.py calls this) for image files (any Pillow format, all of one
    size; one path alone is one image) or uint8 images ``[N, H, W, C]`` as the data sources deliver them.
    Raises DataError for no images, a missing or unreadable file, or files of different sizes."""
    if isinstance(images, np.ndarray):
        arrays, names = images, list(range(len(images)))
    else:
        from slimship.data import load_images_for_prediction

        names = [str(images)] if isinstance(images, (str, Path)) else [str(p) for p in images]
        arrays = load_images_for_prediction(names, pkg.preprocessing.channels, None)
    return [{"image": name, "top": row} for name, row in zip(names, top_classes(pkg.logits(arrays), pkg.class_names, top))]
