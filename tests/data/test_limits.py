"""Bounds on data sources: class counts, gapped or sparse labels, too few images per class, decompression size."""

from __future__ import annotations

import gzip
import struct
import time

import numpy as np
import pytest
from PIL import Image

from slimship.core.errors import DataError
from slimship.data import load_dataset, load_eval_split


def _npz(path, y, x=None, **extra):
    x = np.zeros((len(y), 4, 4), np.uint8) if x is None else x
    np.savez(path, x=x, y=np.asarray(y), **extra)
    return str(path)


@pytest.mark.parametrize("label", [10**9, 10**7, 1e30])
def test_a_huge_label_is_refused_before_anything_is_sized_by_it(tmp_path, label):
    y = np.array([0, 1, 2] * 3 + [label], dtype=np.float64 if isinstance(label, float) else np.int64)
    t0 = time.perf_counter()
    with pytest.raises(DataError, match=r"at most 10,000 classes.*renumber") as e:
        load_dataset(_npz(tmp_path / "d.npz", y))
    assert "\n" not in str(e.value) and time.perf_counter() - t0 < 5  # no billion-entry list on the way


def test_negative_labels_are_refused_with_what_to_do(tmp_path):
    with pytest.raises(DataError, match="negative labels.*renumber"):
        load_dataset(_npz(tmp_path / "d.npz", [0, 1, 2, -4] * 3))


def test_gapped_labels_are_named(tmp_path):
    y = [0, 1, 5] * 4  # labels 2, 3 and 4 have no image: three dead outputs
    with pytest.raises(DataError, match=r"not contiguous: 3 distinct labels span 0..5, so 3 label\(s\) have no "
                                        r"image \(2, 3, 4\): renumber the labels to 0..2"):
        load_dataset(_npz(tmp_path / "d.npz", y))


def test_sparse_labels_list_a_few_and_count_the_rest(tmp_path):
    y = [0, 1, 9000] * 4
    with pytest.raises(DataError, match=r"8,998 label\(s\) have no image \(2, 3, 4, 5, 6 and 8,993 more\)"):
        load_dataset(_npz(tmp_path / "d.npz", y))


def test_unused_class_names_are_named(tmp_path):
    path = _npz(tmp_path / "d.npz", [0, 1] * 4, class_names=np.array(["cat", "dog", "eel"]))
    with pytest.raises(DataError, match=r"class_names lists 1 class\(es\) with no image \(eel\)"):
        load_dataset(path)


def test_evaluation_may_use_a_subset_of_the_classes(tmp_path):
    split = load_eval_split(_npz(tmp_path / "d.npz", [0, 2] * 3), ["a", "b", "c"], channels=1, image_size=None)
    assert sorted(set(split.labels)) == [0, 2]  # a gap is fine for evaluation: classes missing from it are


def test_a_class_with_one_image_is_refused(tmp_path):
    for c, n in (("a", 5), ("b", 5), ("c", 1)):
        (tmp_path / "f" / c).mkdir(parents=True)
        for i in range(n):
            Image.new("L", (4, 4), i * 10).save(tmp_path / "f" / c / f"{i}.png")
    with pytest.raises(DataError, match=r"1 class\(es\) have fewer than 3 images \(c \(1\)\): need at least 3 images "
                                        r"per class \(training, validation, test\)"):
        load_dataset(str(tmp_path / "f"))


def test_with_its_own_test_split_a_class_needs_two_training_images(tmp_path):
    x = np.zeros((7, 4, 4), np.uint8)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x, y_train=np.array([0, 0, 0, 1, 1, 1, 2]), x_test=x[:3], y_test=np.array([0, 1, 2]))
    with pytest.raises(DataError, match=r"fewer than 2 images \(2 \(1\)\).*\(training, validation\)"):
        load_dataset(str(path))
    np.savez(path, x_train=np.zeros((8, 4, 4), np.uint8), y_train=np.array([0, 0, 0, 1, 1, 1, 2, 2]), x_test=x[:3],
             y_test=np.array([0, 1, 2]))
    assert load_dataset(str(path)).num_classes == 3


def test_class_count_is_bounded_for_folders_and_names(tmp_path, monkeypatch):
    monkeypatch.setattr("slimship.data.limits.MAX_CLASSES", 2)
    for c in "abc":
        (tmp_path / "f" / c).mkdir(parents=True)
        Image.new("L", (4, 4)).save(tmp_path / "f" / c / "0.png")
    with pytest.raises(DataError, match="has 3 class folders, but slimship trains at most 2 classes"):
        load_dataset(str(tmp_path / "f"))
    path = _npz(tmp_path / "d.npz", [0, 1] * 4, class_names=np.array(["a", "b", "c"]))
    with pytest.raises(DataError, match="3 class_names, but slimship trains at most 2"):
        load_dataset(path)


def test_npz_bomb_is_refused_from_the_zip_directory(tmp_path, monkeypatch):
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, x=np.zeros((64, 128, 128), np.uint8), y=np.zeros(64, np.int64))  # 1 MB inflated
    monkeypatch.setattr("slimship.data.limits.decoded_limit", lambda: 100_000)
    with pytest.raises(DataError, match=r"GiB of arrays once decompressed, more than 50% of the memory this process may use"):
        load_dataset(str(path))


def test_gzip_idx_bomb_is_refused_while_inflating(tmp_path, monkeypatch):
    folder = tmp_path / "idx"
    folder.mkdir()
    n = 1000
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(
        b"\x00\x00\x08\x03" + struct.pack(">3I", n, 28, 28) + bytes(n * 28 * 28)))
    (folder / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01" + struct.pack(">I", n) + bytes(n))
    monkeypatch.setattr("slimship.data.idx.decoded_limit", lambda: 100_000)
    with pytest.raises(DataError, match="once decompressed"):
        load_dataset(str(folder))
