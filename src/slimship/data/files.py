"""Image files that are not decoded yet: a folder's images travel through splitting and subsampling as paths.

Real photos are large (a 4000x3000 JPEG is 36 MB decoded) while the model sees them at its input size (64x64 is
12 KB). Holding a folder decoded at its native size would make memory follow the photos' resolution, so a folder
source hands back :class:`ImageFiles` in place of a pixel array; the preprocessing decodes them one by one,
straight to the model's input size (:func:`slimship.data.resize.fit_files`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["ImageFiles"]


@dataclass(frozen=True)
class ImageFiles:
    """Undecoded image files standing in for a uint8 ``[N, H, W, C]`` array.

    It answers what the splitting code asks of an array (``len``, ``shape``, ``ndim``, ``dtype``, indexing by
    slice, index array or boolean mask), so splits, subsamples and batches stay lazy; only the preprocessing
    decodes.

    Attributes:
        paths: the files, in order.
        channels: 1 (gray) or 3: what every file is converted to when decoded.
        size: ``(W, H)`` reported by ``shape``: the folder's most common native size (each file keeps its own
            size until it is decoded and fitted to the model's input size).
    """

    paths: tuple[Path, ...]
    channels: int
    size: tuple[int, int] = (0, 0)

    ndim = 4
    dtype = np.dtype(np.uint8)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.paths), self.size[1], self.size[0], self.channels)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, idx) -> ImageFiles:
        """The files selected by a slice, an index array or a boolean mask (always an ImageFiles)."""
        if isinstance(idx, slice):
            return ImageFiles(self.paths[idx], self.channels, self.size)
        picked = np.arange(len(self.paths))[idx]
        return ImageFiles(tuple(self.paths[i] for i in np.atleast_1d(picked)), self.channels, self.size)

    def with_channels(self, channels: int) -> ImageFiles:
        return ImageFiles(self.paths, channels, self.size)
