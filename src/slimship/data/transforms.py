"""Turn stored uint8 images into model inputs, the same way in training, evaluation and prediction.

The pipeline is deliberately tiny and deterministic so that the deployed package reproduces the accuracy
measured during the run: uint8 HWC → bilinear resize (in float, rounded back to uint8, done once per data
set) → /255 → replicate gray to the model's channels → normalise with the model's mean/std.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from slimship.core.preprocessing import PREPROCESSINGS


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
    interpolation: str = "bilinear"

    def to_dict(self) -> dict:
        return {"kind": self.kind, **asdict(self)}

    def describe(self) -> str:
        return f"resized to {self.image_size}x{self.image_size}"

    def summary(self) -> dict:
        return {"image_size": self.image_size}

    def prepare(self, raw: np.ndarray):
        """Images as the data sources deliver them (uint8 [N,H,W,C], any size) → stored rows at ``image_size``."""
        return resize_uint8(raw, self.image_size)

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
        return cls(
            image_size=int(d["image_size"]),
            channels=int(d["channels"]),
            mean=tuple(float(v) for v in d["mean"]),
            std=tuple(float(v) for v in d["std"]),
            model_channels=int(d.get("model_channels", 3)),
            interpolation=str(d.get("interpolation", "bilinear")),
        )


def resize_uint8(images: np.ndarray, size: int, chunk: int = 2048):
    """uint8 [N,H,W,C] numpy → uint8 torch tensor [N,C,size,size] (bilinear, no antialias)."""
    import torch
    import torch.nn.functional as F

    if images.ndim != 4:
        raise ValueError(f"expected [N,H,W,C] images, got shape {images.shape}")
    out = []
    for i in range(0, len(images), chunk):
        x = torch.from_numpy(np.ascontiguousarray(images[i : i + chunk])).permute(0, 3, 1, 2)
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False)
            x = x.round_().clamp_(0, 255).to(torch.uint8)
        out.append(x.contiguous())
    if not out:
        return torch.zeros((0, images.shape[3], size, size), dtype=torch.uint8)
    return torch.cat(out)


def to_model_input(batch, pre: ImagePreprocessing):
    """uint8 tensor [B,C,H,W] (already at pre.image_size) → normalised float [B,model_channels,H,W]."""
    import torch

    x = batch.float().div_(255.0)
    if x.shape[1] == 1 and pre.model_channels == 3:
        x = x.expand(-1, 3, -1, -1)
    mean = torch.tensor(pre.mean, dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.tensor(pre.std, dtype=x.dtype).view(1, -1, 1, 1)
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
    """Random horizontal flip and random translation (zero-filled) of a uint8 batch [B,C,H,W]."""
    import torch

    if hflip:
        flip = torch.rand(batch.shape[0], generator=generator) < 0.5
        if flip.any():
            batch = batch.clone()
            batch[flip] = batch[flip].flip(-1)
    if shift > 0:
        b, c, h, w = batch.shape
        padded = torch.nn.functional.pad(batch, (shift, shift, shift, shift))
        dx, dy = torch.randint(0, 2 * shift + 1, (2,), generator=generator).tolist()
        batch = padded[:, :, dy : dy + h, dx : dx + w]  # one shift per batch: cheap, and enough jitter
    return batch


PREPROCESSINGS.add("image", ImagePreprocessing, help="images: resize, /255, gray to RGB, mean/std")
