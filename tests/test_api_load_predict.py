"""``slimship.load(PKG).predict(images)``: the embedding API, the same answers as ``slimship predict``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

import slimship
from tests.conftest import make_images

FIXTURES = Path(__file__).parent / "fixtures" / "slim-v0.1"


def test_load_predict_equals_the_cli(tmp_path):
    x, _ = make_images(1, seed=2)
    files = []
    for i, img in enumerate(x):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(img[..., 0]).save(files[-1])
    pkg = slimship.load(FIXTURES / "sparse-kmeans.slim")
    rows = pkg.predict([str(f) for f in files], top=2)
    cli = subprocess.run([sys.executable, "-m", "slimship.cli.main", "predict", str(FIXTURES / "sparse-kmeans.slim"),
                          *map(str, files), "--json", "--top", "2"], capture_output=True, text=True, check=True)
    assert rows == json.loads(cli.stdout)
    by_array = pkg.predict(x, top=2)  # uint8 [N,H,W,C] as the data sources deliver them
    assert [r["image"] for r in by_array] == [0, 1, 2] and [r["top"] for r in by_array] == [r["top"] for r in rows]
    assert slimship.predict(pkg, x, top=2) == by_array
    assert all(abs(sum(t["probability"] for t in pkg.predict(x, top=3)[i]["top"]) - 1) < 1e-3 for i in range(3))
    assert np.argmax(pkg.logits(x), 1).tolist() == [
        ["top", "middle", "bottom"].index(r["top"][0]["class"]) for r in by_array]
