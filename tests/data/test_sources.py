"""Tests for slimship.data.sources: every source kind, the splitting rules, and every user error.

All data is tiny and synthetic (made in tmp_path) except the built-in Fashion-MNIST check, which skips when
the Debian package is not installed.
"""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, features

from slimship.data import (
    BUILTIN_DATASETS,
    SOURCES,
    ArraySplit,
    load_dataset,
    load_eval_split,
    load_images_for_prediction,
    read_idx,
    resolve_source,
    stratified_split,
    stratified_subsample,
)
from slimship.data import sources as S
from slimship.core.errors import DataError, SlimshipError

# ----------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------


def raises(phrase: str):
    """pytest.raises(DataError) whose message contains ``phrase``; the one-line rule is checked by _one_line."""
    return pytest.raises(DataError, match=phrase)


def _one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and msg.strip() == msg and ":" in msg, msg  # what is wrong: what to do
    return msg


def save_image(path: Path, value: int, size=(8, 8), mode="L", fmt=None) -> None:
    """An image filled with ``value`` (colour modes use (value, 255-value, value//2))."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    if mode in ("L", "1"):
        im = Image.fromarray(np.full((h, w), value, np.uint8), "L").convert(mode)
    elif mode == "I;16":
        im = Image.fromarray(np.full((h, w), value * 257, np.uint16))
    elif mode == "LA":
        im = Image.fromarray(np.dstack([np.full((h, w), value, np.uint8), np.full((h, w), 255, np.uint8)]), "LA")
    else:
        rgb = np.zeros((h, w, 3), np.uint8)
        rgb[..., 0], rgb[..., 1], rgb[..., 2] = value, 255 - value, value // 2
        im = Image.fromarray(rgb, "RGB")
        if mode == "RGBA":
            im = im.convert("RGBA")
        elif mode == "P":
            im = im.convert("P")
    im.save(path, format=fmt)


def make_folder(root: Path, counts: dict[str, int], size=(8, 8), mode="L", start=0) -> dict[int, str]:
    """Class folders with ``counts[c]`` PNGs each; every image has a unique fill value -> its class."""
    owner, v = {}, start
    for cls, n in counts.items():
        for i in range(n):
            save_image(root / cls / f"{i:03d}.png", v, size, mode)
            owner[v] = cls
            v += 1
    return owner


def write_idx(path: Path, arr: np.ndarray, gz: bool | None = None) -> Path:
    """Write an idx file by hand (big-endian header); gzip when ``gz`` (default: by extension)."""
    arr = np.asarray(arr, np.uint8)
    raw = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    if gz if gz is not None else path.suffix == ".gz":
        raw = gzip.compress(raw, compresslevel=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)
    return path


def idx_data(n_per_class: int, classes: int, hw=(6, 6), offset=0):
    labels = np.repeat(np.arange(classes), n_per_class).astype(np.uint8)
    images = np.zeros((labels.size, *hw), np.uint8)
    images[:] = (np.arange(labels.size) + offset)[:, None, None] % 256
    return images, labels


def make_idx_dir(root: Path, gz: bool, test_prefix="t10k", train_hw=(6, 6), test_hw=(6, 6)) -> Path:
    ext = "-ubyte.gz" if gz else "-ubyte"
    x, y = idx_data(10, 3, train_hw)
    write_idx(root / f"train-images-idx3{ext}", x)
    write_idx(root / f"train-labels-idx1{ext}", y)
    if test_prefix:
        xt, yt = idx_data(4, 3, test_hw, offset=100)
        write_idx(root / f"{test_prefix}-images-idx3{ext}", xt)
        write_idx(root / f"{test_prefix}-labels-idx1{ext}", yt)
    return root


def fill_values(split: ArraySplit) -> np.ndarray:
    """The per-image fill value (first pixel, first channel) used as an image id."""
    return split.images[:, 0, 0, 0].astype(int)


# ----------------------------------------------------------------------------------------------------------
# registry, resolution, import cost
# ----------------------------------------------------------------------------------------------------------


def test_registry_lists_every_kind():
    assert {e.name for e in SOURCES.list()} == {"folder", "idx", "npz", "fashion-mnist", "spam-assassin", "text-folder",
                                               "text-table"}
    assert all(e.help for e in SOURCES.list())


def test_resolve_source_kinds(tmp_path):
    make_folder(tmp_path / "imgs", {"a": 1, "b": 1})
    make_idx_dir(tmp_path / "idx", gz=False)
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 4, 4), np.uint8), y=np.array([0, 1]))
    assert resolve_source(str(tmp_path / "imgs")) == ("folder", str((tmp_path / "imgs").resolve()))
    assert resolve_source(str(tmp_path / "idx"))[0] == "idx"
    assert resolve_source(str(tmp_path / "d.npz"))[0] == "npz"


def test_import_does_not_pull_in_torch():
    code = "import sys, slimship.data; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_data_error_is_a_slimship_error():
    assert issubclass(DataError, SlimshipError)


# ----------------------------------------------------------------------------------------------------------
# image folders
# ----------------------------------------------------------------------------------------------------------


def test_folder_round_trip_gray(tmp_path):
    owner = make_folder(tmp_path, {"cat": 10, "ant": 10, "bee": 10})
    d = load_dataset(str(tmp_path))
    assert d.class_names == ["ant", "bee", "cat"]  # sorted folder names
    assert d.channels == 1 and d.num_classes == 3
    assert d.info["kind"] == "folder" and d.info["image_shape"] == [8, 8, 1]
    assert d.info["test_from"].startswith("stratified split (seed 0, fraction 0.2)")
    assert d.info["sizes"] == {"train": 21, "val": 3, "test": 6}
    for split in (d.train, d.val, d.test):
        assert split.images.dtype == np.uint8 and split.labels.dtype == np.int64
        # pixels survive and every image keeps its own class
        assert [d.class_names[lab] for lab in split.labels] == [owner[v] for v in fill_values(split)]


def test_folder_mixed_gray_and_colour_is_rgb(tmp_path):
    make_folder(tmp_path, {"a": 3, "b": 3}, mode="L")
    save_image(tmp_path / "a" / "colour.png", 7, mode="RGB")
    d = load_dataset(str(tmp_path))
    assert d.channels == 3
    allx = np.concatenate([d.train.images, d.val.images, d.test.images])
    gray = allx[allx[:, 0, 0, 0] != 7]
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    assert ((allx[:, 0, 0] == [7, 248, 3]).all(axis=1)).sum() == 1  # the colour image kept its colour


@pytest.mark.parametrize("mode", ["L", "1", "LA", "I;16"])
def test_folder_all_gray_modes_give_one_channel(tmp_path, mode):
    make_folder(tmp_path, {"a": 3, "b": 3}, mode=mode, start=1)
    d = load_dataset(str(tmp_path))
    assert d.channels == 1


@pytest.mark.parametrize("mode", ["RGBA", "P"])
def test_folder_palette_and_alpha_are_colour(tmp_path, mode):
    make_folder(tmp_path, {"a": 3, "b": 3}, mode=mode)
    assert load_dataset(str(tmp_path)).channels == 3


def test_folder_reads_every_pillow_format(tmp_path):
    formats = [("png", "PNG"), ("jpg", "JPEG"), ("jpeg", "JPEG"), ("bmp", "BMP"), ("gif", "GIF"),
               ("tif", "TIFF"), ("tiff", "TIFF")]
    if features.check("webp"):
        formats.append(("webp", "WEBP"))
    for i, (ext, fmt) in enumerate(formats):
        save_image(tmp_path / "a" / f"{i}.{ext}", 40, mode="RGB", fmt=fmt)
        save_image(tmp_path / "B" / f"{i}.{ext.upper()}", 200, mode="RGB", fmt=fmt)  # extension case ignored
    d = load_dataset(str(tmp_path))
    assert sum(d.info["sizes"].values()) == 2 * len(formats)
    assert d.channels == 3 and d.class_names == ["B", "a"]


def test_folder_ignores_hidden_and_non_image_files(tmp_path):
    make_folder(tmp_path, {"a": 3, "b": 3})
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    save_image(tmp_path / "a" / ".hidden.png", 1)
    make_folder(tmp_path / ".cache", {"x": 2})  # hidden folder: not a class
    save_image(tmp_path / ".secret" / "y.png", 1)
    d = load_dataset(str(tmp_path))
    assert d.class_names == ["a", "b"] and sum(d.info["sizes"].values()) == 6


def test_folder_sizes_most_common_or_image_size(tmp_path):
    make_folder(tmp_path, {"a": 3, "b": 3}, size=(10, 6))
    save_image(tmp_path / "a" / "big.png", 9, size=(20, 20))
    d = load_dataset(str(tmp_path))
    assert d.info["image_shape"] == [6, 10, 1] and d.info["resized"] == 1
    d = load_dataset(str(tmp_path), image_size=5)
    assert d.info["image_shape"] == [5, 5, 1] and d.info["resized"] == 7
    assert d.test.images.shape[1:] == (5, 5, 1)


def test_folder_with_train_and_test_subfolders(tmp_path):
    make_folder(tmp_path / "train", {"a": 5, "b": 5})
    make_folder(tmp_path / "test", {"a": 2, "b": 1}, start=100)
    d = load_dataset(str(tmp_path))
    assert d.info["test_from"] == "own split"
    assert len(d.test) == 3 and (fill_values(d.test) >= 100).all()
    assert len(d.train) + len(d.val) == 10
    assert d.class_names == ["a", "b"]


def test_folder_separate_test_source_decides_channels_jointly(tmp_path):
    make_folder(tmp_path / "tr", {"a": 4, "b": 4}, mode="L")
    make_folder(tmp_path / "te", {"a": 1, "b": 1}, mode="RGB", start=50)
    d = load_dataset(str(tmp_path / "tr"), test=str(tmp_path / "te"))
    assert d.channels == 3
    assert d.info["test_from"].startswith("separate source") and len(d.test) == 2
    assert d.info["test_source"] == str((tmp_path / "te").resolve())
    assert [d.class_names[i] for i in d.test.labels] == ["a", "b"]


# ----------------------------------------------------------------------------------------------------------
# idx files
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path, gz):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    out = read_idx(write_idx(tmp_path / "x-images-idx3-ubyte", arr, gz=gz))
    assert out.dtype == np.uint8 and (out == arr).all() and out.flags.writeable


def test_read_idx_detects_gzip_by_magic_not_extension(tmp_path):
    arr = np.arange(6, dtype=np.uint8)
    assert (read_idx(write_idx(tmp_path / "a.gz", arr, gz=False)) == arr).all()  # .gz name, plain bytes
    assert (read_idx(write_idx(tmp_path / "b", arr, gz=True)) == arr).all()  # plain name, gzip bytes


@pytest.mark.parametrize("gz", [False, True])
def test_idx_folder_round_trip(tmp_path, gz):
    d = load_dataset(str(make_idx_dir(tmp_path, gz=gz)))
    assert d.info["kind"] == "idx" and d.info["test_from"] == "own split"
    assert d.class_names == ["0", "1", "2"] and d.channels == 1
    assert len(d.test) == 12 and len(d.train) + len(d.val) == 30
    x, y = idx_data(10, 3)
    ids = fill_values(d.train)
    assert (d.train.labels == y[ids]).all() and (d.train.images[..., 0] == x[ids]).all()


def test_idx_folder_test_prefix_and_single_pair(tmp_path):
    d = load_dataset(str(make_idx_dir(tmp_path / "a", gz=False, test_prefix="test")))
    assert d.info["test_from"] == "own split"
    d = load_dataset(str(make_idx_dir(tmp_path / "b", gz=True, test_prefix=None)))
    assert d.info["test_from"].startswith("stratified split") and len(d.test) == 6


def test_idx_image_size_resizes_after_subsampling(tmp_path):
    d = load_dataset(str(make_idx_dir(tmp_path, gz=False)), image_size=10, train_limit=6)
    assert d.train.images.shape == (6, 10, 10, 1) and d.test.images.shape == (12, 10, 10, 1)
    assert d.info["train_subsampled_from"] == 27


# ----------------------------------------------------------------------------------------------------------
# npz
# ----------------------------------------------------------------------------------------------------------


def test_npz_train_test_layout_with_class_names(tmp_path):
    x, y = idx_data(10, 2, (5, 5))
    xt, yt = idx_data(3, 2, (5, 5), offset=100)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=xt, y_test=yt, class_names=np.array(["no", "yes"]))
    d = load_dataset(str(tmp_path / "d.npz"))
    assert d.class_names == ["no", "yes"] and d.info["test_from"] == "own split" and len(d.test) == 6
    assert (fill_values(d.test) >= 100).all()


@pytest.mark.parametrize("xk,yk", [("images", "labels"), ("x", "y")])
def test_npz_single_pool_layouts(tmp_path, xk, yk):
    x, y = idx_data(10, 3, (4, 4))
    np.savez(tmp_path / "d.npz", **{xk: x, yk: y.astype(np.int32)})
    d = load_dataset(str(tmp_path / "d.npz"))
    assert d.class_names == ["0", "1", "2"] and d.info["test_from"].startswith("stratified")


def test_npz_channel_first_colour_and_float_images(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((12, 3, 4, 5)).astype(np.float32)  # [N, C, H, W] in [0, 1]
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(12) % 2)
    d = load_dataset(str(tmp_path / "d.npz"))
    assert d.channels == 3 and d.info["image_shape"] == [4, 5, 3]


# ----------------------------------------------------------------------------------------------------------
# stratified splitting and limits
# ----------------------------------------------------------------------------------------------------------


def test_splits_are_stratified_disjoint_and_deterministic(tmp_path):
    x, y = idx_data(20, 5, (3, 3))
    np.savez(tmp_path / "d.npz", x=x, y=y)
    d = load_dataset(str(tmp_path / "d.npz"), seed=3)
    assert (np.bincount(d.test.labels) == 4).all()  # 20% of 20 per class
    assert (np.bincount(d.val.labels) == 2).all()  # round(10% of 16) per class
    ids = [set(fill_values(s)) for s in (d.train, d.val, d.test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert len(ids[0] | ids[1] | ids[2]) == 100
    again = load_dataset(str(tmp_path / "d.npz"), seed=3)
    assert (fill_values(again.test) == fill_values(d.test)).all()
    assert (fill_values(again.val) == fill_values(d.val)).all()
    other = load_dataset(str(tmp_path / "d.npz"), seed=4)
    assert set(fill_values(other.test)) != ids[2]


def test_validation_never_touches_own_test(tmp_path):
    d = load_dataset(str(make_idx_dir(tmp_path, gz=False)), val_fraction=0.3)
    assert (fill_values(d.test) >= 100).all() and (fill_values(d.val) < 100).all()
    assert (np.bincount(d.val.labels) == 3).all()


def test_limits_are_stratified_and_recorded(tmp_path):
    x, y = idx_data(20, 5, (3, 3))
    np.savez(tmp_path / "d.npz", x=x, y=y)
    d = load_dataset(str(tmp_path / "d.npz"), train_limit=10, test_limit=5)
    assert (np.bincount(d.train.labels) == 2).all() and (np.bincount(d.test.labels) == 1).all()
    assert d.info["train_subsampled_from"] == 70 and d.info["test_subsampled_from"] == 20
    assert load_dataset(str(tmp_path / "d.npz")).info["train_subsampled_from"] is None


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=60), st.floats(0.01, 0.99), st.integers(0, 3))
def test_stratified_split_properties(labels, fraction, seed):
    labels = np.array(labels)
    kept, held = stratified_split(labels, fraction, seed)
    assert np.intersect1d(kept, held).size == 0 and kept.size + held.size == labels.size
    for c, n in zip(*np.unique(labels, return_counts=True)):
        k = int((labels[held] == c).sum())
        assert (k == 0) if n < 2 else (1 <= k <= n - 1)
        assert (labels[kept] == c).sum() >= 1  # every class keeps a training example
    again = stratified_split(labels, fraction, seed)
    assert (again[1] == held).all()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=60), st.integers(1, 70))
def test_stratified_subsample_properties(labels, limit):
    labels = np.array(labels)
    idx = stratified_subsample(labels, limit, 0)
    assert idx.size == min(limit, labels.size) and np.unique(idx).size == idx.size
    if limit >= np.unique(labels).size:
        assert set(labels[idx]) == set(labels)


# ----------------------------------------------------------------------------------------------------------
# built-in Fashion-MNIST
# ----------------------------------------------------------------------------------------------------------


def test_builtin_fashion_mnist():
    root = BUILTIN_DATASETS["fashion-mnist"].root
    if not (root / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Debian package dataset-fashion-mnist is not installed")
    d = load_dataset("fashion-mnist", train_limit=1000)
    assert len(d.train) == 1000 and len(d.test) == 10000 and len(d.val) == 6000
    assert d.num_classes == 10 and d.class_names[0] == "T-shirt/top" and d.class_names[-1] == "Ankle boot"
    assert d.train.images.shape[1:] == (28, 28, 1) and d.channels == 1
    assert (np.bincount(d.train.labels) == 100).all()
    assert d.info["source"] == "fashion-mnist" and d.info["test_from"] == "own split"


def test_builtin_not_installed(tmp_path, monkeypatch):
    monkeypatch.setitem(BUILTIN_DATASETS, "fashion-mnist",
                        S.BuiltinDataset(tmp_path / "nope", ["a"], "dataset-fashion-mnist"))
    with raises("apt-get install -y dataset-fashion-mnist") as e:
        load_dataset("fashion-mnist")
    _one_line(e)


# ----------------------------------------------------------------------------------------------------------
# evaluation and prediction
# ----------------------------------------------------------------------------------------------------------


def test_load_eval_split_maps_folder_classes_by_name(tmp_path):
    make_folder(tmp_path, {"cat": 2, "ant": 1}, mode="RGB")
    split = load_eval_split(str(tmp_path), ["dog", "cat", "ant"], channels=1, image_size=4)
    assert split.images.shape == (3, 4, 4, 1)
    assert sorted(split.labels.tolist()) == [1, 1, 2]


def test_load_eval_split_unknown_class(tmp_path):
    make_folder(tmp_path, {"cat": 1, "zebra": 1})
    with raises("zebra") as e:
        load_eval_split(str(tmp_path), ["cat", "dog"], channels=1, image_size=None)
    assert "rename or remove" in _one_line(e)


def test_load_eval_split_uses_own_test_split(tmp_path):
    split = load_eval_split(str(make_idx_dir(tmp_path, gz=True)), ["0", "1", "2"], channels=3, image_size=None)
    assert len(split) == 12 and split.images.shape[1:] == (6, 6, 3)
    make_folder(tmp_path / "f" / "train", {"a": 3, "b": 3})
    make_folder(tmp_path / "f" / "test", {"b": 2}, start=100)
    split = load_eval_split(str(tmp_path / "f"), ["a", "b"], channels=1, image_size=None)
    assert split.labels.tolist() == [1, 1] and (fill_values(split) >= 100).all()


def test_load_images_for_prediction_converts_and_resizes(tmp_path):
    save_image(tmp_path / "c.png", 90, size=(12, 7), mode="RGB")
    save_image(tmp_path / "g.png", 30, size=(5, 5), mode="L")
    out = load_images_for_prediction([str(tmp_path / "c.png"), str(tmp_path / "g.png")], channels=1, image_size=6)
    assert out.shape == (2, 6, 6, 1) and out.dtype == np.uint8
    expected = np.asarray(Image.open(tmp_path / "c.png").convert("L"))[0, 0]  # Pillow's luma, as training
    assert out[0, 0, 0, 0] == expected and out[1, 0, 0, 0] == 30
    rgb = load_images_for_prediction([str(tmp_path / "g.png")], channels=3, image_size=None)
    assert rgb.shape == (1, 5, 5, 3) and (rgb == 30).all()


def test_load_images_for_prediction_errors(tmp_path):
    save_image(tmp_path / "a.png", 1, size=(4, 4))
    save_image(tmp_path / "b.png", 1, size=(5, 5))
    with raises("different sizes") as e:
        load_images_for_prediction([str(tmp_path / "a.png"), str(tmp_path / "b.png")], 1, None)
    _one_line(e)
    with raises("does not exist"):
        load_images_for_prediction([str(tmp_path / "missing.png")], 1, None)
    with raises("no images"):
        load_images_for_prediction([], 1, None)


# ----------------------------------------------------------------------------------------------------------
# errors: every one a DataError with a single actionable line
# ----------------------------------------------------------------------------------------------------------


def _bad_folder_no_classes(p: Path) -> str:
    p.mkdir()
    return str(p)


def _bad_folder_loose_images(p: Path) -> str:
    save_image(p / "x.png", 1)
    return str(p)


def _bad_empty_class(p: Path) -> str:
    make_folder(p, {"a": 2})
    (p / "empty_cls").mkdir()
    return str(p)


def _bad_nested_class(p: Path) -> str:
    make_folder(p / "images", {"a": 2, "b": 2})
    make_folder(p / "other", {"a": 2})
    return str(p)


def _bad_corrupt_image(p: Path) -> str:
    make_folder(p, {"a": 2, "b": 2})
    (p / "b" / "broken.png").write_bytes(b"this is not a png")
    return str(p)


def _bad_truncated_image(p: Path) -> str:
    make_folder(p, {"a": 2, "b": 2})
    save_image(p / "b" / "trunc.jpg", 5, size=(64, 64), mode="RGB")
    data = (p / "b" / "trunc.jpg").read_bytes()
    (p / "b" / "trunc.jpg").write_bytes(data[: len(data) // 2])
    return str(p)


def _bad_one_class(p: Path) -> str:
    make_folder(p, {"only": 5})
    return str(p)


def _bad_split_classes(p: Path) -> str:
    make_folder(p / "train", {"a": 3, "b": 3})
    make_folder(p / "test", {"a": 1, "c": 1})
    return str(p)


def _bad_split_extra(p: Path) -> str:
    make_folder(p / "train", {"a": 3, "b": 3})
    make_folder(p / "test", {"a": 1, "b": 1})
    make_folder(p / "val", {"a": 1, "b": 1})
    return str(p)


def _bad_too_few(p: Path) -> str:
    make_folder(p, {"a": 1, "b": 1})
    return str(p)


def _bad_too_few_val(p: Path) -> str:
    make_folder(p / "train", {"a": 1, "b": 1})
    make_folder(p / "test", {"a": 1, "b": 1})
    return str(p)


def _bad_idx_magic(p: Path) -> str:
    make_idx_dir(p, gz=False)
    (p / "train-images-idx3-ubyte").write_bytes(b"\x12\x34\x08\x03" + b"\0" * 40)
    return str(p)


def _bad_idx_dtype(p: Path) -> str:
    make_idx_dir(p, gz=False)
    (p / "train-labels-idx1-ubyte").write_bytes(bytes([0, 0, 0x0D, 1]) + struct.pack(">I", 30) + b"\0" * 120)
    return str(p)


def _bad_idx_truncated(p: Path) -> str:
    make_idx_dir(p, gz=True)
    raw = gzip.decompress((p / "train-images-idx3-ubyte.gz").read_bytes())
    (p / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[:-10]))
    return str(p)


def _bad_idx_gzip(p: Path) -> str:
    make_idx_dir(p, gz=True)
    (p / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b" + b"garbage" * 5)
    return str(p)


def _bad_idx_no_labels(p: Path) -> str:
    make_idx_dir(p, gz=False)
    (p / "t10k-labels-idx1-ubyte").unlink()
    return str(p)


def _bad_idx_shapes(p: Path) -> str:
    return str(make_idx_dir(p, gz=False, test_hw=(5, 5)))


def _bad_idx_test_class(p: Path) -> str:
    make_idx_dir(p, gz=False)
    write_idx(p / "t10k-labels-idx1-ubyte", np.array([0, 1, 2, 5] * 3))
    return str(p)


def _bad_idx_length(p: Path) -> str:
    make_idx_dir(p, gz=False)
    write_idx(p / "train-labels-idx1-ubyte", np.zeros(7))
    return str(p)


def _bad_npz_keys(p: Path) -> str:
    np.savez(p.with_suffix(".npz"), pixels=np.zeros((2, 3, 3), np.uint8), targets=np.array([0, 1]))
    return str(p.with_suffix(".npz"))


def _bad_npz_channels(p: Path) -> str:
    np.savez(p.with_suffix(".npz"), x_train=np.zeros((6, 3, 3), np.uint8), y_train=np.arange(6) % 2,
             x_test=np.zeros((2, 3, 3, 3), np.uint8), y_test=np.array([0, 1]))
    return str(p.with_suffix(".npz"))


def _bad_npz_label_range(p: Path) -> str:
    np.savez(p.with_suffix(".npz"), x=np.zeros((4, 3, 3), np.uint8), y=np.array([0, 1, 5, 1]),
             class_names=np.array(["a", "b"]))
    return str(p.with_suffix(".npz"))


def _bad_npz_lengths(p: Path) -> str:
    np.savez(p.with_suffix(".npz"), x=np.zeros((4, 3, 3), np.uint8), y=np.array([0, 1, 1]))
    return str(p.with_suffix(".npz"))


def _bad_npz_values(p: Path) -> str:
    np.savez(p.with_suffix(".npz"), x=np.full((4, 3, 3), 300.0), y=np.array([0, 1, 0, 1]))
    return str(p.with_suffix(".npz"))


def _bad_npz_corrupt(p: Path) -> str:
    p.with_suffix(".npz").write_bytes(b"PK not really a zip")
    return str(p.with_suffix(".npz"))


def _bad_npz_objects(p: Path) -> str:
    np.savez(p.with_suffix(".npz"), x=np.zeros((2, 3, 3), np.uint8), y=np.array([0, 1]),
             class_names=np.array(["a", None], dtype=object))
    return str(p.with_suffix(".npz"))


def _bad_not_npz_file(p: Path) -> str:
    p.with_suffix(".dat").write_text("a,b")  # (.csv is a table of texts)
    return str(p.with_suffix(".dat"))


BAD_SOURCES = {
    "missing path": (lambda p: str(p / "nope"), "does not exist"),
    "no class folders": (_bad_folder_no_classes, "no class sub-folders and no idx files"),
    "loose images": (_bad_folder_loose_images, "holds 1 image\\(s\\) but no class sub-folders"),
    "empty class": (_bad_empty_class, "empty_cls has no images"),
    "nested class": (_bad_nested_class, "only sub-folders"),
    "corrupt image": (_bad_corrupt_image, r"broken\.png cannot be read.*remove or fix"),
    "truncated image": (_bad_truncated_image, r"trunc\.jpg cannot be read.*remove or fix"),
    "one class": (_bad_one_class, "fewer than two classes"),
    "train/test classes": (_bad_split_classes, "only in train: b; only in test: c"),
    "train/test + val": (_bad_split_extra, r"other sub-folders \(val\)"),
    "empty test split": (_bad_too_few, "need at least 3 images per class"),
    "empty val split": (_bad_too_few_val, "need at least 2 images per class"),
    "idx magic": (_bad_idx_magic, "bad magic bytes 12 34 08 03"),
    "idx dtype": (_bad_idx_dtype, "dtype 0x0d"),
    "idx truncated": (_bad_idx_truncated, "truncated or corrupt"),
    "idx bad gzip": (_bad_idx_gzip, "corrupt gzip file"),
    "idx no labels": (_bad_idx_no_labels, "no labels file"),
    "idx shapes": (_bad_idx_shapes, "train images are 6x6 but test images are 5x5"),
    "idx test class": (_bad_idx_test_class, "only in test: 5"),
    "idx lengths": (_bad_idx_length, "30 images but 7 labels"),
    "npz keys": (_bad_npz_keys, "has keys pixels, targets: save the data under x_train"),
    "npz channels": (_bad_npz_channels, "1 channel.*test images have 3"),
    "npz label range": (_bad_npz_label_range, r"labels include 5 outside \[0, 2\)"),
    "npz lengths": (_bad_npz_lengths, "4 images but y has 3 labels"),
    "npz values": (_bad_npz_values, "save images as uint8"),
    "npz corrupt": (_bad_npz_corrupt, "cannot be read"),
    "npz objects": (_bad_npz_objects, "holds object arrays"),
    "not npz file": (_bad_not_npz_file, "is not a .npz archive"),
}


@pytest.mark.parametrize("case", list(BAD_SOURCES))
def test_bad_sources_raise_one_line_data_error(tmp_path, case):
    make, phrase = BAD_SOURCES[case]
    source = make(tmp_path / "src")
    with raises(phrase) as e:
        load_dataset(source)
    _one_line(e)


@pytest.mark.parametrize("kwargs,phrase", [
    ({"val_fraction": 0.0}, "val_fraction is 0.0"),
    ({"test_fraction": 1.5}, "test_fraction is 1.5"),
    ({"train_limit": 0}, "train_limit is 0"),
    ({"image_size": -3}, "image_size is -3"),
    ({"train_limit": 2}, "smaller than the 3 classes"),
])
def test_bad_arguments(tmp_path, kwargs, phrase):
    make_folder(tmp_path, {"a": 5, "b": 5, "c": 5})
    with raises(phrase) as e:
        load_dataset(str(tmp_path), **kwargs)
    _one_line(e)


def test_separate_test_of_another_kind(tmp_path):
    make_folder(tmp_path / "f", {"a": 3, "b": 3})
    np.savez(tmp_path / "t.npz", x=np.zeros((2, 8, 8), np.uint8), y=np.array([0, 1]))
    with raises("pass a test source of the same kind") as e:
        load_dataset(str(tmp_path / "f"), test=str(tmp_path / "t.npz"))
    _one_line(e)


def test_separate_test_folder_with_other_classes(tmp_path):
    make_folder(tmp_path / "tr", {"a": 3, "b": 3})
    make_folder(tmp_path / "te", {"a": 1, "x": 1})
    with raises("only in train: b; only in test: x") as e:
        load_dataset(str(tmp_path / "tr"), test=str(tmp_path / "te"))
    _one_line(e)


def test_separate_npz_test_source(tmp_path):
    x, y = idx_data(5, 2, (4, 4))
    np.savez(tmp_path / "tr.npz", x=x, y=y)
    np.savez(tmp_path / "te.npz", x=x[:4] + 100, y=y[:4] * 0 + np.array([0, 1, 0, 1]))
    d = load_dataset(str(tmp_path / "tr.npz"), test=str(tmp_path / "te.npz"))
    assert len(d.test) == 4 and d.info["test_from"].startswith("separate source")
    np.savez(tmp_path / "bad.npz", x=x[:2], y=np.array([0, 0]))
    with raises("only in train: 1"):
        load_dataset(str(tmp_path / "tr.npz"), test=str(tmp_path / "bad.npz"))
