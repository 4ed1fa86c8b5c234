"""Bringing images to the model's input size, one image at a time for files, with a bounded footprint.

Two interpolations, recorded in a package's preprocessing (``interpolation``) so that prediction reproduces
training:

* ``"bilinear"`` (what packages made before ``"bilinear-antialias"`` existed record): bilinear resampling with
  half-pixel centres and no antialiasing (``torch.nn.functional.interpolate``), in float, rounded back to uint8.
* ``"bilinear-antialias"`` (the default): the same, except for an image more than twice the input size on either
  side: that one is resized with Pillow's antialiased bilinear filter (a triangle filter as wide as the scale,
  ``Image.resize(..., BILINEAR)``), which averages the area each output pixel covers. Plain bilinear reads only
  the 2x2 pixels nearest each output pixel: shrinking a 4000-px photo to 64 px it sees 4 of every ~3,900 pixels,
  and the result depends on which. Images at most twice the input size (Fashion-MNIST at 64 px, say) give
  exactly what ``"bilinear"`` gives.

  A JPEG that large is decoded with the decoder's DCT scaling (1/2, 1/4 or 1/8, as long as it stays at least the
  input size on both sides), so a 4000x3000 photo is never decoded whole; the filter then works on the scaled
  pixels, with the exact geometry of the full image. This differs slightly (a few grey levels) from resizing the
  fully decoded pixels, which is what an array of the same photo gets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

__all__ = ["INTERPOLATIONS", "fit_files", "fit_rows"]

#: The interpolations a preprocessing may name (see the module docstring); the first is what old packages used.
INTERPOLATIONS = ("bilinear", "bilinear-antialias")


def fit_rows(images: np.ndarray, size: int, interpolation: str = "bilinear-antialias", chunk: int = 2048):
    """uint8 ``[N, H, W, C]`` numpy (one size for all) → uint8 torch tensor ``[N, C, size, size]``, ``chunk``
    images at a time."""
    import torch

    _check(interpolation)
    if images.ndim != 4:
        raise ValueError(f"expected [N,H,W,C] images, got shape {images.shape}")
    out = torch.empty((len(images), images.shape[3], size, size), dtype=torch.uint8)
    antialias = interpolation == "bilinear-antialias" and _shrinks_much(images.shape[2], images.shape[1], size)
    for i in range(0, len(images), chunk):
        part = images[i : i + chunk]
        if antialias:
            part = np.stack([_antialiased(img, size) for img in part])
        out[i : i + len(part)] = _bilinear(part, size)
    return out


def fit_files(paths: Sequence[Path], channels: int, size: int, interpolation: str = "bilinear-antialias"):
    """Decode image files one by one, straight to uint8 torch ``[N, channels, size, size]``.

    Only one file is ever held decoded. Raises DataError naming a file that cannot be read.
    """
    import torch

    from slimship.data.folder import _decode_scaled, _read_header

    _check(interpolation)
    out = torch.empty((len(paths), channels, size, size), dtype=torch.uint8)
    for i, path in enumerate(paths):
        width, height = _read_header(Path(path))[1]
        if interpolation == "bilinear-antialias" and _shrinks_much(width, height, size):
            arr, box = _decode_scaled(Path(path), channels, (size, size))
            arr = _antialiased(arr, size, box)
        else:
            arr = _decode_scaled(Path(path), channels, None)[0]
        out[i] = _bilinear(arr[None], size)[0]
    return out


def _shrinks_much(width: int, height: int, size: int) -> bool:
    """More than twice the input size on either side: resized with the antialiased filter."""
    return width > 2 * size or height > 2 * size


def _check(interpolation: str) -> None:
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {interpolation!r}; known: {', '.join(INTERPOLATIONS)}")


def _antialiased(arr: np.ndarray, size: int, box: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """One uint8 ``[H, W, C]`` image → ``[size, size, C]`` with Pillow's antialiased bilinear filter; ``box`` is the
    region of ``arr`` to resize (the whole image by default; fractional for a JPEG decoded at a DCT scale)."""
    mode = "L" if arr.shape[-1] == 1 else "RGB"
    im = Image.fromarray(np.ascontiguousarray(arr[..., 0] if mode == "L" else arr), mode)
    out = np.asarray(im.resize((size, size), Image.BILINEAR, box=box))
    return out[..., None] if mode == "L" else out


def _bilinear(images: np.ndarray, size: int):
    """uint8 ``[N, H, W, C]`` → uint8 torch ``[N, C, size, size]``: half-pixel bilinear, no antialias, rounded
    (a no-op for images already at ``size``)."""
    import torch
    import torch.nn.functional as F

    if not images.flags.writeable:  # Pillow's arrays are read-only; torch wants to own writable memory
        images = images.copy()
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False)
        x = x.round_().clamp_(0, 255).to(torch.uint8)
    return x.contiguous()
