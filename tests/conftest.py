"""Shared fixtures: a tiny learnable image data set and a tiny recipe, fast on 2 CPU cores."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("SLIMSHIP_THREADS", "2")


def make_images(n_per_class: int, classes: int = 3, size: int = 16, channels: int = 1, seed: int = 0):
    """Class k = a bright bar at a class-specific place, plus noise: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for k in range(classes):
        for _ in range(n_per_class):
            img = rng.integers(0, 60, (size, size, channels)).astype(np.uint8)
            band = slice(k * size // classes, (k + 1) * size // classes)
            img[band, :, :] = np.clip(img[band, :, :].astype(int) + 180, 0, 255).astype(np.uint8)
            xs.append(img)
            ys.append(k)
    x, y = np.stack(xs), np.array(ys, dtype=np.int64)
    p = rng.permutation(len(y))
    return x[p], y[p]


@pytest.fixture
def tiny_npz(tmp_path):
    x, y = make_images(40, seed=0)
    xt, yt = make_images(12, seed=1)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=x, y_train=y, x_test=xt, y_test=yt, class_names=np.array(["top", "middle", "bottom"]))
    return path


def examples(x, y, size: int = 32):
    """Stored examples (uint8 [N,C,size,size], int64 labels) of numpy images [N,H,W,C] and labels."""
    import torch

    from slimship.data.task import Examples
    from slimship.data.transforms import resize_uint8

    return Examples(resize_uint8(x, size), torch.from_numpy(y))


def compress_context(teacher, pre, n_train: int = 20, n_val: int = 6):
    """A CompressContext over the tiny bar images (the test_efficientnet adapter at 32 px, 3 classes)."""
    from slimship.compress import CompressContext
    from slimship.models.timm_image import TimmImageAdapter

    return CompressContext(TimmImageAdapter("test_efficientnet", 32), examples(*make_images(n_train, seed=0)),
                           examples(*make_images(n_val, seed=1)), pre, teacher=teacher, num_classes=3,
                           log=lambda s: None)


def tiny_recipe(data: str, **over) -> dict:
    r = {
        "name": "tiny",
        "model": {"architecture": "test_efficientnet", "weights": "none", "image_size": 32},
        "data": {"source": data, "val_fraction": 0.2},
        "transfer": {"budget": {"epochs": 3}, "lr": 0.003, "batch_size": 16, "evals": 2, "bn": "train",
                     "scratch_budget": {"epochs": 1}},
        "compress": {"accuracy_budget": 100.0, "candidates": [
            {"name": "int8", "steps": [{"method": "int8", "calibration": ["minmax"], "keep_fp32": ["none"],
                                        "calibration_images": 32}]},
            {"name": "pruned", "steps": [{"method": "prune_channels", "ratio": 0.25, "steps": 1,
                                          "recovery": {"epochs": 0.5, "seconds": None}}]},
        ]},
        "evaluate": {"latency_runs": 3},
    }
    for k, v in over.items():
        r[k] = v
    return r
