"""Packages written by slimship 0.1.0 before the stage pipeline (commit 46c61df) still load and predict the same.

The fixtures were made by that commit from the tiny test recipe: an int8 graph, a sparse + k-means package in the
compressed weights encoding, and a task stored as a delta against its base. ``expected.npz`` holds the logits
that commit's ``load_package(...).logits`` gave for six images.
"""

from pathlib import Path

import numpy as np
import pytest

from slimship.package.pack import load_package

FIXTURES = Path(__file__).parent.parent / "fixtures" / "slim-v0.1"


@pytest.mark.parametrize("name", ["int8", "sparse-kmeans", "finetuned-delta.delta"])
def test_old_package_loads_and_predicts_as_before(name):
    expected = np.load(FIXTURES / "expected.npz")
    pkg = load_package(FIXTURES / f"{name}.slim")
    assert pkg.class_names == ["top", "middle", "bottom"]
    np.testing.assert_allclose(pkg.logits(expected["images"]), expected[name.replace(".", "_").replace("-", "_")],
                               rtol=1e-5, atol=1e-5)
