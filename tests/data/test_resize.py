"""Images reach the model's input size one by one: folders stay undecoded until the preprocessing fits each file,
JPEGs decode at a reduced DCT scale, and the resize semantics stay what they were where images are small."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from PIL import Image

from slimship.core.errors import PackageError
from slimship.data import load_dataset
from slimship.data.task import load_task_data, prepare_task_data
from slimship.data.transforms import ImagePreprocessing
from slimship.recipe import parse_recipe


def _photos(folder, n_per_class: int, size: tuple[int, int], fmt: str = "JPEG") -> None:
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (folder / c).mkdir(parents=True)
        for i in range(n_per_class):
            small = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
            Image.fromarray(small).resize(size, Image.BILINEAR).save(folder / c / f"{i}.{fmt.lower()}", fmt)


def test_the_run_never_holds_a_folder_at_its_native_resolution(tmp_path):
    """12 photos of 1600x1200 (5.8 MB each decoded, 69 MB together) into a 32 px model: the data stage's numpy
    allocations peak far below one decoded photo per image, let alone the whole set."""
    _photos(tmp_path / "f", 6, (1600, 1200))
    section = parse_recipe({"model": {"architecture": "test_efficientnet", "image_size": 32},
                            "data": {"source": str(tmp_path / "f")}}).data
    pre = ImagePreprocessing(32, 3, (0.5,) * 3, (0.5,) * 3)
    pre.prepare(np.zeros((1, 64, 64, 3), np.uint8))  # import torch first: its modules are Python allocations too
    tracemalloc.start()
    try:
        data = prepare_task_data(load_task_data(section, seed=0), pre)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert tuple(data.train.x.shape[1:]) == (3, 32, 32) and len(data.train) + len(data.val) + len(data.test) == 12
    assert peak < 1600 * 1200 * 3, f"peak {peak / 1e6:.1f} MB: a photo was decoded at full size"


def test_lazy_folder_splits_hold_files_until_prepared(tmp_path, monkeypatch):
    from slimship.data import ImageFiles
    from slimship.data.resize import fit_rows

    _photos(tmp_path / "f", 5, (40, 30), "PNG")
    monkeypatch.setattr("slimship.data.folder._decode", lambda *a, **k: pytest.fail("decoded while loading"))
    d = load_dataset(str(tmp_path / "f"), lazy=True)
    monkeypatch.undo()
    assert isinstance(d.train.images, ImageFiles) and d.info["image_shape"] == [30, 40, 3]
    assert len(d.train) + len(d.val) + len(d.test) == 10 and len(d.train.images[np.array([0, 1])]) == 2
    x = ImagePreprocessing(16, 3, (0.5,) * 3, (0.5,) * 3).prepare(d.train.images)
    eager = load_dataset(str(tmp_path / "f"))  # the same split, decoded: identical rows
    assert x.shape == (len(d.train), 3, 16, 16) and np.array_equal(x.numpy(), fit_rows(eager.train.images, 16).numpy())


def test_antialias_is_plain_bilinear_up_to_twice_the_input_size():
    from slimship.data.resize import fit_rows

    rng = np.random.default_rng(1)
    for side in (8, 28, 40, 64):  # upsampling, and shrinking by at most 2x, to 32 px
        x = rng.integers(0, 256, (3, side, side, 1), dtype=np.uint8)
        assert np.array_equal(fit_rows(x, 32).numpy(), fit_rows(x, 32, "bilinear").numpy())


def test_antialias_averages_where_plain_bilinear_point_samples():
    from slimship.data.resize import fit_rows

    # a 1-pixel checkerboard of 0/255 at 321 px averages 127.5 everywhere; plain bilinear at 32 px reads pairs of
    # neighbouring pixels at fractional offsets, and turns the board into stripes
    board = (np.indices((321, 321)).sum(0) % 2 * 255).astype(np.uint8)[None, ..., None]
    smooth = fit_rows(board, 32).numpy().astype(int)
    assert np.abs(smooth - 127.5).max() <= 3
    assert np.abs(fit_rows(board, 32, "bilinear").numpy().astype(int) - 127.5).max() > 60


def test_a_png_file_and_its_pixels_fit_identically(tmp_path):
    from slimship.data.resize import fit_files, fit_rows

    rng = np.random.default_rng(2)
    arr = rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    assert np.array_equal(fit_files([tmp_path / "a.png"], 3, 32).numpy(), fit_rows(arr[None], 32).numpy())


def test_a_jpeg_decodes_at_a_reduced_scale_and_fits_closely(tmp_path):
    from slimship.data.resize import fit_files, fit_rows

    yy, xx = np.mgrid[0:1200, 0:1600] / 100.0  # smooth content: the two averaging filters agree closely
    arr = (127.5 + 120 * np.stack([np.sin(xx), np.cos(yy), np.sin(xx + yy)], -1)).astype(np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.jpg", quality=95)
    seen = []
    original = Image.Image.resize

    def spy(self, size, *a, **k):
        seen.append(self.size)
        return original(self, size, *a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Image.Image, "resize", spy)
        got = fit_files([tmp_path / "a.jpg"], 3, 32).numpy().astype(int)
    assert seen == [(200, 150)]  # decoded at 1/8 scale, never at 1600x1200
    full = fit_rows(np.asarray(Image.open(tmp_path / "a.jpg").convert("RGB"))[None], 32).numpy().astype(int)
    assert np.abs(got - full).mean() < 6


def test_interpolation_is_recorded_and_old_packages_keep_plain_bilinear():
    pre = ImagePreprocessing(32, 1, (0.5,) * 3, (0.5,) * 3)
    assert pre.to_dict()["interpolation"] == "bilinear-antialias"
    assert ImagePreprocessing.from_dict({**pre.to_dict(), "interpolation": "bilinear"}).interpolation == "bilinear"
    old = {k: v for k, v in pre.to_dict().items() if k != "interpolation"}
    assert ImagePreprocessing.from_dict(old).interpolation == "bilinear"
    from slimship.core.preprocessing import preprocessing_from_dict

    with pytest.raises(PackageError, match="interpolation 'lanczos' is not one of bilinear, bilinear-antialias"):
        preprocessing_from_dict({**pre.to_dict(), "interpolation": "lanczos"})
