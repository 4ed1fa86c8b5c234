"""The package API (slimship.api.packages) called directly, on the small packages in tests/fixtures (no training).

The fixtures were made from the tiny test recipe, whose test split is ``make_images(12, seed=1)``: evaluating
them on that split must give the accuracy they recorded when they were packed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import slimship
from slimship.api import evaluate_package, inspect_package, load, predict
from slimship.core.errors import DataError, PackageError
from tests.conftest import make_images

FIXTURES = Path(__file__).parent / "fixtures" / "slim-v0.1"
NAMES = ["top", "middle", "bottom"]


@pytest.fixture(scope="module")
def test_split(tmp_path_factory):
    """The tiny recipe's data (train and test split) as an npz, and two image files of one size."""
    root = tmp_path_factory.mktemp("api")
    x, y = make_images(40, seed=0)
    xt, yt = make_images(12, seed=1)
    data = root / "tiny.npz"
    np.savez(data, x_train=x, y_train=y, x_test=xt, y_test=yt, class_names=np.array(NAMES))
    files = []
    for i in range(2):
        files.append(root / f"{i}.png")
        Image.fromarray(np.repeat(xt[i], 3, axis=2)).resize((40, 30)).save(files[-1])  # colour, another size
    return data, xt, yt, files


@pytest.fixture(scope="module")
def int8():
    return load(FIXTURES / "int8.slim")


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("name", ["int8", "sparse-kmeans"])
def test_evaluate_package_reproduces_recorded_accuracy(name, test_split):
    data, *_ = test_split
    r = evaluate_package(FIXTURES / f"{name}.slim", data)
    assert set(r) == {"package", "data", "images", "examples", "example_kind", "accuracy", "recorded_accuracy",
                      "seconds", "runtime"}
    assert r["example_kind"] == "images" and r["examples"] == r["images"]
    assert r["images"] == 36 and r["runtime"] == "onnxruntime" and r["seconds"] >= 0
    assert r["package"] == str(FIXTURES / f"{name}.slim") and r["data"] == str(data)
    assert r["accuracy"] == pytest.approx(r["recorded_accuracy"], abs=1e-9)


def test_evaluate_delta_package_with_its_base(test_split):
    """A delta package is rebuilt against its base (found next to it, or given); its accuracy is not 100 %, so
    a wrong rebuild would show."""
    data, xt, yt, _ = test_split
    delta = FIXTURES / "finetuned-delta.delta.slim"
    found = evaluate_package(delta, data)
    given = evaluate_package(delta, data, base=FIXTURES / "base.slim")
    assert found["accuracy"] == given["accuracy"] == pytest.approx(found["recorded_accuracy"], abs=1e-9)
    assert 0.4 < found["accuracy"] < 1.0
    # the same figure by hand from the logits of the loaded package
    pkg = load(delta, base=FIXTURES / "base.slim")
    assert float((pkg.logits(xt).argmax(1) == yt).mean()) == found["accuracy"]
    with pytest.raises(ValueError, match="loaded already"):
        evaluate_package(pkg, data, base=FIXTURES / "base.slim")


def test_evaluate_package_accepts_a_loaded_package(int8, test_split):
    data, *_ = test_split
    r = evaluate_package(int8, data)
    assert r["package"] == str(FIXTURES / "int8.slim") and r["accuracy"] == r["recorded_accuracy"]


def test_predict_is_the_softmax_of_the_logits(int8, test_split):
    _, xt, _, _ = test_split
    rows = predict(int8, xt[:5], top=3)
    probs = _softmax(int8.logits(xt[:5]))
    assert [r["image"] for r in rows] == [0, 1, 2, 3, 4]
    for row, p in zip(rows, probs):
        got = {t["class"]: t["probability"] for t in row["top"]}
        assert set(got) == set(NAMES) and abs(sum(got.values()) - 1) < 1e-3
        for i, name in enumerate(NAMES):
            assert got[name] == pytest.approx(p[i], abs=5e-5)  # rounded to 4 decimals
        ranked = [t["probability"] for t in row["top"]]
        assert ranked == sorted(ranked, reverse=True) and row["top"][0]["class"] == NAMES[int(p.argmax())]


def test_predict_files_top_k_and_paths(int8, test_split):
    _, _, _, files = test_split
    rows = predict(FIXTURES / "int8.slim", files, top=1)
    assert [r["image"] for r in rows] == [str(f) for f in files] and all(len(r["top"]) == 1 for r in rows)
    assert predict(int8, files[0], top=0)[0]["top"] == rows[0]["top"]  # one path alone; at least one class
    assert len(predict(int8, files, top=10)[0]["top"]) == 3  # never more than the package has
    with pytest.raises(DataError, match="does not exist"):
        predict(int8, [files[0].parent / "missing.png"])


def test_inspect_package_fields():
    info = inspect_package(FIXTURES / "int8.slim")
    assert info["path"] == str(FIXTURES / "int8.slim") and info["size_bytes"] == (FIXTURES / "int8.slim").stat().st_size
    assert info["format_version"] == 1 and len(info["package_sha256"]) == 64
    assert info["model"]["architecture"] == "test_efficientnet" and info["model"]["class_names"] == NAMES
    assert "arch_edits" not in info["model"] and info["structural_edits"] == 0
    assert info["metrics"]["name"] == "int8" and info["metrics"]["accuracy"] == 1.0
    assert [p["name"] for p in info["parts"]] == ["model.onnx"] and info["parts"][0]["stored_bytes"] > 0
    assert info["recipe"] == "tiny" and info["delta"] is None and info["rebuilt_from"] is None
    assert "layers" not in info


def test_inspect_package_layers_and_delta():
    rows = inspect_package(FIXTURES / "sparse-kmeans.slim", layers=True)["layers"]
    assert rows and all(r["params"] > 0 and r["compressed_bytes"] > 0 for r in rows)
    assert {"sparse", "shared"} <= {r["encoding"] for r in rows}  # the sparse + k-means weights encoding
    delta = inspect_package(FIXTURES / "finetuned-delta.delta.slim")["delta"]
    base = inspect_package(FIXTURES / "base.slim")
    assert delta["base_package_sha256"] == base["package_sha256"] and delta["mode"] == "sparse"
    with pytest.raises(PackageError, match="own deploy graph"):
        inspect_package(FIXTURES / "finetuned-delta.delta.slim", layers=True)


def test_bad_package_is_refused(tmp_path, test_split):
    data, *_ = test_split
    bad = tmp_path / "notes.slim"
    bad.write_text("hello")
    for call in (lambda: load(bad), lambda: evaluate_package(bad, data), lambda: inspect_package(bad),
                 lambda: predict(bad, test_split[3])):
        with pytest.raises(PackageError, match="not a slimship package"):
            call()


def test_top_level_exports_are_lazy():
    assert slimship.predict is predict and slimship.evaluate_package is evaluate_package
    assert slimship.inspect_package is inspect_package and slimship.load is load
    assert {"predict", "evaluate_package", "inspect_package", "load", "run"} <= set(slimship.__all__) & set(dir(slimship))
    with pytest.raises(AttributeError):
        slimship.no_such_function
    # Looking a function up does not import torch either; calling one works in a fresh process (nothing
    # imported before it, e.g. the preprocessing kinds the manifest names).
    code = ("import sys, numpy as np, slimship; slimship.predict; slimship.inspect_package; print('torch' in sys.modules); "
            f"print(slimship.predict({str(FIXTURES / 'int8.slim')!r}, np.zeros((1, 16, 16, 1), np.uint8))[0]['image'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "0"]
