"""Classify with a loaded package: logits → softmax → the most likely classes, in one place.

``slimship predict``, :func:`slimship.api.predict`, ``slimship.load(PKG).predict(images)`` and the model server
(:mod:`slimship.serve`) all turn logits into answers here, so a served prediction is the same as a local one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

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


def iter_predictions(pkg: Any, images: Sequence[str | Path] | str | Path | np.ndarray, top: int = 3,
                     batch_size: int = 64) -> Iterator[dict]:
    """``{"image": path (or index in an array), "top": [...]}`` per input of a loaded package (``LoadedPackage``:
    no import of it here, pack.py calls this), ``batch_size`` inputs classified at a time. Inputs are image files
    or folders of them (any Pillow format and size; decoded a slice at a time, straight to the package's input
    size), or uint8 images ``[N, H, W, C]`` as the data sources deliver them; for a text package, texts or text
    files (.txt, .eml), and the key is ``"text"`` (the file, or the text's start). Raises DataError for no inputs,
    a missing path, a folder without images, or a file that is not an image."""
    from slimship.core.preprocessing import examples_of
    from slimship.data.inputs import read_inputs

    key = "text" if examples_of(pkg.preprocessing) == "texts" else "image"
    if isinstance(images, np.ndarray):
        source, names = images, list(range(len(images)))
    else:
        items = [images] if isinstance(images, (str, Path)) else list(images)
        names, source = read_inputs([str(p) for p in items], pkg.preprocessing)
    step = max(1, int(batch_size))
    for i in range(0, len(names), step):
        rows = top_classes(pkg.logits(source[i : i + step]), pkg.class_names, top)
        yield from ({key: name, "top": row} for name, row in zip(names[i : i + step], rows))


def predict_images(pkg: Any, images: Sequence[str | Path] | str | Path | np.ndarray, top: int = 3,
                   batch_size: int = 64) -> list[dict]:
    """:func:`iter_predictions` as a list."""
    return list(iter_predictions(pkg, images, top, batch_size))
