"""`predict` streams: files are decoded a batch at a time straight to the input size, and folders are accepted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from slimship.api import load, predict
from slimship.core.errors import DataError
from tests.conftest import make_images

FIXTURES = Path(__file__).parent / "fixtures" / "slim-v0.1"


@pytest.fixture(scope="module")
def int8():
    return load(FIXTURES / "int8.slim")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Seven images of several sizes in a folder with a sub-folder (and a hidden file and a text file)."""
    root = tmp_path_factory.mktemp("photos")
    x, _ = make_images(3, seed=4)
    (root / "more").mkdir()
    for i, img in enumerate(x[:7]):
        size = (16 + 10 * i, 16 + 7 * i)
        Image.fromarray(np.repeat(img, 3, axis=2)).resize(size).save(root / ("more" if i > 3 else ".") / f"{i}.png")
    Image.new("RGB", (8, 8)).save(root / ".hidden.png")
    (root / "notes.txt").write_text("not an image")
    return root


def test_a_folder_is_classified_in_batches_in_sorted_order(int8, photos, monkeypatch):
    batches = []
    logits = int8.logits

    def spy(images, *a, **k):
        batches.append(len(images))
        return logits(images, *a, **k)

    monkeypatch.setattr(int8, "logits", spy)
    rows = predict(int8, photos, batch_size=3)
    names = [Path(r["image"]).relative_to(photos).as_posix() for r in rows]
    assert names == ["0.png", "1.png", "2.png", "3.png", "more/4.png", "more/5.png", "more/6.png"]
    assert batches == [3, 3, 1]  # never more than a batch decoded at once
    one_by_one = [predict(int8, photos / n, batch_size=1)[0]["top"] for n in names]
    assert [r["top"] for r in rows] == one_by_one  # batching changes nothing


def test_predict_is_lazy_until_iterated(int8, photos, monkeypatch):
    from slimship.api.packages import iter_predictions

    rows = iter_predictions(int8, [photos / "0.png", photos / "1.png"], batch_size=1)
    decoded = []
    monkeypatch.setattr("slimship.data.folder._decode_scaled",
                        lambda p, *a, **k: decoded.append(p) or (np.zeros((16, 16, 1), np.uint8), None))
    assert next(rows)["image"].endswith("0.png") and len(decoded) == 1


def test_folders_without_images_and_missing_paths_are_named(int8, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="folder .*empty has no images"):
        predict(int8, tmp_path / "empty")
    with pytest.raises(DataError, match="does not exist"):
        predict(int8, [tmp_path / "missing.png"])
    with pytest.raises(DataError, match="no images given"):
        predict(int8, [])


def test_cli_predict_takes_a_folder(photos):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    p = subprocess.run([sys.executable, "-m", "slimship.cli.main", "predict", str(FIXTURES / "int8.slim"), str(photos),
                        "--json", "--batch-size", "2", "--top", "1"], capture_output=True, text=True, env=env,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    assert len(json.loads(p.stdout)) == 7
    p = subprocess.run([sys.executable, "-m", "slimship.cli.main", "predict", str(FIXTURES / "int8.slim"), str(photos),
                        "--batch-size", "0"], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 2 and "--batch-size 0" in p.stderr and "Traceback" not in p.stderr
