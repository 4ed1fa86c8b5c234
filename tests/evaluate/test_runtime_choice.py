"""Which runtime a model ships for: the rule on given figures, and the measure stage applying it to what it
measured (no test asserts on a time: only on how measured times are used)."""

from __future__ import annotations

import math

import pytest

from slimship.evaluate.runtime_choice import fastest_runtime, latency_ratio


def _f(b1: float, b64: float, val: float = 0.9) -> dict:
    return {"val_accuracy": val, "accuracy": val, "latency_ms": {"batch1": b1, "batch64": b64}}


CASES = [  # (figures, shipped runtime, why)
    ({"onnxruntime": _f(1.0, 20.0), "openvino": _f(0.8, 10.0)}, "openvino", "faster at both batch sizes"),
    ({"onnxruntime": _f(1.0, 20.0), "openvino": _f(1.2, 10.0)}, "openvino", "geomean 0.77: b64 gain outweighs b1"),
    ({"onnxruntime": _f(1.0, 20.0), "openvino": _f(1.6, 13.0)}, "onnxruntime", "geomean 1.02: slower overall"),
    ({"onnxruntime": _f(1.0, 20.0), "openvino": _f(0.99, 19.9)}, "onnxruntime", "within the 2 % margin: noise"),
    ({"onnxruntime": _f(1.0, 20.0), "openvino": _f(0.5, 5.0, val=0.89)}, "onnxruntime", "1 point less accurate"),
    ({"onnxruntime": _f(1.0, 20.0), "openvino": _f(0.5, 5.0, val=0.897)}, "openvino", "0.3 points: tolerated"),
    ({"onnxruntime": _f(1.0, 20.0, val=0.897), "openvino": _f(0.5, 5.0, val=0.9)}, "openvino", "more accurate"),
    ({"openvino": _f(0.5, 5.0), "other": _f(0.4, 6.0)}, "other", "no reference runtime measured: lowest geomean"),
    ({"onnxruntime": _f(1.0, 20.0)}, "onnxruntime", "only one runtime"),
]


@pytest.mark.parametrize("figures,want,why", CASES, ids=[c[2] for c in CASES])
def test_the_fastest_runtime_by_geometric_mean_of_latency_ratios(figures, want, why):
    assert fastest_runtime(figures, "onnxruntime") == want, why


def test_latency_ratio_is_the_geometric_mean_over_shared_batch_sizes():
    assert latency_ratio({"batch1": 2.0, "batch64": 5.0}, {"batch1": 1.0, "batch64": 20.0}) == pytest.approx(
        math.sqrt(2.0 * 0.25))
    assert latency_ratio({"batch1": 2.0}, {"batch1": 1.0, "batch64": 20.0}) == pytest.approx(2.0)
    assert math.isnan(latency_ratio({}, {"batch1": 1.0}))


def test_measure_ships_each_model_in_its_fastest_runtime_with_that_runtimes_figures():
    from slimship.core.runtime import REFERENCE_RUNTIME, available_runtimes
    from slimship.evaluate.measure import EvalSet, measure_latency, measure_model
    from slimship.models import create_model
    from tests.core.test_runtimes import _graphs

    fp32, int8, x = _graphs()
    ev = EvalSet(x, (x.reshape(len(x), -1).sum(1) > 0).astype(int))
    model = create_model("test_efficientnet", 3, weights=None, image_size=32).model.eval()
    import torch

    ms = [measure_model(name=n, kind="test", graph=g, model=model, example_input=torch.zeros(1, 3, 32, 32), val=ev,
                        test=ev, compressed=n == "int8") for n, g in (("dense", fp32), ("int8", int8))]
    assert all(list(m.runtimes) == available_runtimes() for m in ms)
    measure_latency(ms, {"dense": fp32, "int8": int8}, torch.zeros(1, 3, 32, 32), batch_sizes=[1, 4], runs=3)
    for m in ms:
        assert all(set(f["latency_ms"]) == {"batch1", "batch4"} for f in m.runtimes.values())
        assert m.runtime == fastest_runtime(m.runtimes, REFERENCE_RUNTIME)
        shipped = m.runtimes[m.runtime]
        assert (m.accuracy, m.val_accuracy, m.latency_ms) == (shipped["accuracy"], shipped["val_accuracy"],
                                                              shipped["latency_ms"])
        assert m.to_dict()["runtimes"] == m.runtimes
