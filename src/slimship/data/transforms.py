"""Turn stored uint8 images into model inputs, the same way in training, evaluation and prediction.

The pipeline is deliberately tiny and deterministic so that the deployed package reproduces the accuracy
measured during the run: uint8 HWC → resize to the input size (done once per data set, image by image for
files; see :mod:`slimship.data.resize`) → /255 → replicate gray to the model's channels → normalise with the
model's mean/std.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from slimship.core.preprocessing import PREPROCESSINGS
from slimship.data.resize import INTERPOLATIONS

# Bounds a stored image preprocessing (a package manifest) must keep. The sizes are the recipe's own
# (model.image_size); outside them a hostile manifest could make a reader allocate gigabytes per image.
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 1024
CHANNELS = (1, 3)  # gray or RGB, stored and as the model sees them
MAX_ABS_MEAN = 1e4
MIN_STD, MAX_STD = 1e-4, 1e4  # std 0 would divide by zero; 1/255 (inputs in 0..255) is well inside
_FIELDS = frozenset({"kind", "image_size", "channels", "mean", "std", "model_channels", "interpolation"})


@dataclass(frozen=True)
class ImagePreprocessing:
    """The image input contract (:class:`slimship.core.preprocessing.Preprocessing`): uint8 [B,C,H,W] at
    ``image_size`` → normalised float [B,model_channels,H,W]."""

    kind = "image"
    image_size: int
    channels: int  # channels of the stored images: 1 (gray) or 3
    mean: tuple[float, ...]
    std: tuple[float, ...]
    model_channels: int = 3
    # packages that record "bilinear" (written before "bilinear-antialias" existed) or none keep plain bilinear
    interpolation: str = "bilinear-antialias"

    def to_dict(self) -> dict:
        return {"kind": self.kind, **asdict(self)}

    def describe(self) -> str:
        return f"resized to {self.image_size}x{self.image_size}"

    def summary(self) -> dict:
        return {"image_size": self.image_size}

    def input_shape(self) -> tuple[int, ...]:
        return (self.model_channels, self.image_size, self.image_size)

    def prepare(self, raw):
        """Images as the data sources deliver them (uint8 [N,H,W,C] at any size, or undecoded
        :class:`~slimship.data.files.ImageFiles`, decoded one at a time) → stored rows at ``image_size``."""
        from slimship.data.files import ImageFiles
        from slimship.data.resize import fit_files, fit_rows

        if isinstance(raw, ImageFiles):
            return fit_files(raw.paths, self.channels, self.image_size, self.interpolation)
        return fit_rows(raw, self.image_size, self.interpolation)

    def random_rows(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(0, 256, (n, self.channels, self.image_size, self.image_size), dtype=np.uint8)

    def model_input(self, batch):
        return to_model_input(batch, self)

    def model_input_np(self, batch: np.ndarray) -> np.ndarray:
        return to_model_input_np(batch, self)

    def augment(self, batch, generator, hflip: bool = True, shift: int = 0):
        return augment(batch, generator, hflip, shift)

    @classmethod
    def from_dict(cls, d: dict, read_file=None) -> "ImagePreprocessing":  # images need no data files
        """Rebuild from :meth:`to_dict` (a package manifest), checking every value: integers within
        [MIN_IMAGE_SIZE, MAX_IMAGE_SIZE] and CHANNELS (gray may feed an RGB model, not the reverse), one finite
        mean and std per model channel within bounds, a known interpolation, no unknown field (a newer
        slimship's). Raises KeyError for a missing field, ValueError naming the first bad value."""
        unknown = sorted(set(d) - _FIELDS)
        if unknown:
            raise ValueError(f"unknown field {unknown[0][:40]!r}: upgrade slimship to read this package")
        size = _int_in(d["image_size"], "image_size", MIN_IMAGE_SIZE, MAX_IMAGE_SIZE)
        channels = _int_in(d["channels"], "channels", 1, 3, CHANNELS)
        model_channels = _int_in(d.get("model_channels", 3), "model_channels", 1, 3, CHANNELS)
        if channels > model_channels:
            raise ValueError(f"channels {channels} cannot feed a {model_channels}-channel model (model_channels)")
        interpolation = d.get("interpolation", "bilinear")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation {repr(interpolation)[:40]} is not one of {', '.join(INTERPOLATIONS)}")
        return cls(
            image_size=size,
            channels=channels,
            mean=_floats_in(d["mean"], "mean", model_channels, -MAX_ABS_MEAN, MAX_ABS_MEAN),
            std=_floats_in(d["std"], "std", model_channels, MIN_STD, MAX_STD),
            model_channels=model_channels,
            interpolation=interpolation,
        )


def _int_in(value: Any, name: str, low: int, high: int, allowed: tuple[int, ...] | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, not {repr(value)[:40]}")
    if not low <= value <= high or (allowed is not None and value not in allowed):
        within = " or ".join(map(str, allowed)) if allowed else f"between {low} and {high}"
        raise ValueError(f"{name} {value} is out of bounds (it must be {within})")
    return value


def _floats_in(values: Any, name: str, count: int, low: float, high: float) -> tuple[float, ...]:
    if not isinstance(values, (list, tuple)) or len(values) != count:
        raise ValueError(f"{name} must list one number per model channel ({count}), not {repr(values)[:60]}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not low <= v <= high:
            raise ValueError(f"{name} value {repr(v)[:40]} is out of bounds (a number between {low:g} and {high:g})")
        out.append(float(v))
    return tuple(out)


def resize_uint8(images: np.ndarray, size: int, chunk: int = 2048):
    """uint8 [N,H,W,C] numpy → uint8 torch tensor [N,C,size,size] (plain bilinear, no antialias)."""
    from slimship.data.resize import fit_rows

    return fit_rows(images, size, "bilinear", chunk)


def to_model_input(batch, pre: ImagePreprocessing):
    """uint8 tensor [B,C,H,W] (already at pre.image_size) → normalised float [B,model_channels,H,W]."""
    import torch

    x = batch.float().div_(255.0)
    if x.shape[1] == 1 and pre.model_channels == 3:
        x = x.expand(-1, 3, -1, -1)
    mean = torch.tensor(pre.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(pre.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def to_model_input_np(batch: np.ndarray, pre: ImagePreprocessing) -> np.ndarray:
    """numpy twin of :func:`to_model_input` for ONNX Runtime: uint8 [B,C,H,W] → float32."""
    x = batch.astype(np.float32) / np.float32(255.0)
    if x.shape[1] == 1 and pre.model_channels == 3:
        x = np.repeat(x, 3, axis=1)
    mean = np.asarray(pre.mean, np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(pre.std, np.float32).reshape(1, -1, 1, 1)
    return np.ascontiguousarray((x - mean) / std, dtype=np.float32)


def augment(batch, generator, hflip: bool = True, shift: int = 0):
    """Random horizontal flip and random translation (zero-filled) of a uint8 batch [B,C,H,W], on the batch's
    device (the random draws come from ``generator``, a CPU generator, so they do not depend on the device)."""
    import torch

    if hflip:
        flip = (torch.rand(batch.shape[0], generator=generator) < 0.5).to(batch.device)
        batch = torch.where(flip.view(-1, 1, 1, 1), batch.flip(-1), batch)
    if shift > 0:
        b, c, h, w = batch.shape
        padded = torch.nn.functional.pad(batch, (shift, shift, shift, shift))
        dx, dy = torch.randint(0, 2 * shift + 1, (2,), generator=generator).tolist()
        batch = padded[:, :, dy : dy + h, dx : dx + w]  # one shift per batch: cheap, and enough jitter
    return batch


PREPROCESSINGS.add("image", ImagePreprocessing, help="images: resize, /255, gray to RGB, mean/std")
