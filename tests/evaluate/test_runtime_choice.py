"""Which runtime a model ships for at each batch size: the rule on given figures, and the measure stage applying
it to what it measured (no test asserts on a time: only on how measured times are used)."""

from __future__ import annotations

import pytest

from slimship.core.runtime import runtime_for_batch
from slimship.evaluate.runtime_choice import describe, main_runtime, runtime_by_batch, ships_at


def _f(b1: float, b64: float, val: float = 0.9) -> dict:
    return {"val_accuracy": val, "accuracy": val, "latency_ms": {"batch1": b1, "batch64": b64}}


ORT, OV = "onnxruntime", "openvino"
CASES = [  # (figures, runtime at batch 1, at batch 64, why)
    ({ORT: _f(1.0, 20.0), OV: _f(0.8, 10.0)}, OV, OV, "faster at both batch sizes"),
    ({ORT: _f(1.0, 20.0), OV: _f(1.2, 10.0)}, ORT, OV, "each batch size in its own fastest runtime"),
    ({ORT: _f(0.448, 9.87), OV: _f(0.614, 7.16)}, ORT, OV, "W0's shipped model (docs/runtimes.md)"),
    ({ORT: _f(1.0, 20.0), OV: _f(0.99, 19.7)}, ORT, ORT, "within the 2 % margin at both: noise"),
    ({ORT: _f(1.0, 20.0), OV: _f(0.99, 19.5)}, ORT, OV, "2.5 % faster at batch 64 only"),
    ({ORT: _f(1.0, 20.0), OV: _f(0.5, 5.0, val=0.89)}, ORT, ORT, "1 point less accurate: at no batch size"),
    ({ORT: _f(1.0, 20.0), OV: _f(0.5, 5.0, val=0.897)}, OV, OV, "0.3 points: tolerated"),
    ({ORT: _f(1.0, 20.0, val=0.897), OV: _f(0.5, 5.0, val=0.9)}, OV, OV, "more accurate"),
    ({OV: _f(0.5, 5.0), "other": _f(0.4, 6.0)}, "other", OV, "no reference runtime measured: fastest at each"),
    ({ORT: _f(1.0, 20.0)}, ORT, ORT, "only one runtime"),
]


@pytest.mark.parametrize("figures,b1,b64,why", CASES, ids=[c[3] for c in CASES])
def test_each_batch_size_ships_in_its_fastest_runtime(figures, b1, b64, why):
    by = runtime_by_batch(figures, ORT)
    assert by == {"batch1": b1, "batch64": b64}, why
    assert list(by) == ["batch1", "batch64"]
    assert main_runtime(by, ORT) == b64  # the largest batch size's: what accuracy figures come from


def test_batch_sizes_are_ordered_by_size_not_text():
    figures = {ORT: {"val_accuracy": 0.9, "latency_ms": {"batch64": 20.0, "batch8": 3.0, "batch1": 1.0}}}
    assert list(runtime_by_batch(figures, ORT)) == ["batch1", "batch8", "batch64"]
    assert main_runtime({}, ORT) == ORT


@pytest.mark.parametrize("n,want", [(0, ORT), (1, ORT), (4, ORT), (7, ORT), (8, OV), (32, OV), (64, OV),
                                    (1000, OV)])
def test_a_batch_runs_in_the_runtime_of_the_nearest_measured_batch_size_on_a_log_scale(n, want):
    assert runtime_for_batch(n, {1: ORT, 64: OV}, "x") == want
    assert runtime_for_batch(n, {}, "x") == "x"


def test_the_choice_is_described_in_reports():
    assert describe({"batch1": ORT, "batch64": ORT}, ORT) == ORT
    assert describe({"batch1": ORT, "batch64": OV}, OV) == "onnxruntime at batch 1, openvino at batch 64"
    assert describe({"batch1": ORT, "batch64": OV}, OV, short=True) == "onnxruntime / openvino"
    assert [ships_at({"batch1": ORT, "batch64": OV}, OV, rt) for rt in (ORT, OV, "x")] == ["b1", "b64", ""]
    assert [ships_at({}, ORT, rt) for rt in (ORT, OV)] == ["yes", ""]


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
        assert m.runtime_by_batch == runtime_by_batch(m.runtimes, REFERENCE_RUNTIME,
                                                      val_correct=m.val_correct_by_runtime())
        assert m.runtime == m.runtime_by_batch["batch4"]
        shipped = m.runtimes[m.runtime]
        assert (m.accuracy, m.val_accuracy) == (shipped["accuracy"], shipped["val_accuracy"])
        assert m.latency_ms == {k: m.runtimes[rt]["latency_ms"][k] for k, rt in m.runtime_by_batch.items()}
        d = m.to_dict()
        assert d["runtimes"] == m.runtimes and d["runtime_by_batch"] == m.runtime_by_batch


def _correct(n: int, wrong: list[int]) -> "np.ndarray":
    import numpy as np

    c = np.ones(n, bool)
    c[wrong] = False
    return c


def test_a_runtime_a_few_images_behind_on_validation_stays_eligible_when_judged_per_image():
    """W0 (2026-12-06): one int8 graph, 87.7 % in ONNX Runtime and 88.3 % in OpenVINO on 1,000 validation images,
    89.67 % and 89.52 % on the 10k test images. The bare 0.5-point threshold excluded ONNX Runtime and shipped batch 1
    in OpenVINO, 1.6x slower; judged on the same images (12 discordant, 9 against 3), the gap is within noise."""
    ort_wrong = list(range(0, 123))  # 123 wrong: 87.7 %
    ov_wrong = list(range(0, 114)) + [200, 201, 202]  # 117 wrong: 88.3 %; ORT's 123 and OV's 117 share 114
    figures = {ORT: _f(0.175, 4.0, val=0.877), OV: _f(0.28, 3.6, val=0.883)}
    correct = {ORT: _correct(1000, ort_wrong), OV: _correct(1000, ov_wrong)}
    assert runtime_by_batch(figures, ORT) == {"batch1": OV, "batch64": OV}  # figures only: the bare threshold
    assert runtime_by_batch(figures, ORT, val_correct=correct) == {"batch1": ORT, "batch64": OV}


def test_a_runtime_that_computes_the_graph_wrongly_is_still_excluded_when_judged_per_image():
    figures = {ORT: _f(0.1, 1.0, val=0.85), OV: _f(0.5, 5.0, val=0.90)}  # ORT 5 points down, and faster
    correct = {ORT: _correct(1000, list(range(150))), OV: _correct(1000, list(range(100)))}
    assert runtime_by_batch(figures, ORT, val_correct=correct) == {"batch1": OV, "batch64": OV}
    # and one with no per-image results is judged by the figures
    assert runtime_by_batch(figures, ORT, val_correct={OV: correct[OV]}) == {"batch1": OV, "batch64": OV}


def test_measure_judges_each_runtime_on_its_per_image_validation_results(monkeypatch):
    """The measure stage hands each runtime's per-image validation results to the rule (scripted timings: no
    clock): the trial above, ONNX Runtime faster at batch 1 and a few images behind, ships batch 1 there."""
    import numpy as np
    import torch

    from slimship.core import runtime as runtime_mod
    from slimship.evaluate import measure as measure_mod
    from slimship.evaluate.measure import Measurement

    labels = np.zeros(1000, int)
    preds = {rt: np.where(_correct(1000, list(range(wrong))), 0, 1) for rt, wrong in ((ORT, 123), (OV, 117))}
    m = Measurement(name="small", kind="test", accuracy=0.9, val_accuracy=0.883, onnx_bytes=1, params=1,
                    nonzero_params=1, macs=1, compressed=True, val_labels=labels, test_labels=labels, num_classes=2)
    m.runtimes = {rt: {"accuracy": 0.9, "val_accuracy": float((preds[rt] == labels).mean())} for rt in (ORT, OV)}
    m.by_runtime = {rt: (preds[rt], labels) for rt in (ORT, OV)}
    timings = {("small", ORT): (0.175, 4.0), ("small", OV): (0.28, 3.6)}

    def scripted(sessions, shape, batch_sizes, **kw):
        return {k: {f"batch{b}": {"p50": timings[k][b != 1], "p95": timings[k][b != 1]} for b in batch_sizes}
                for k in sessions}

    monkeypatch.setattr(measure_mod, "interleaved_session_stats", scripted)
    monkeypatch.setattr(runtime_mod, "session", lambda graph, rt, threads=None: object())
    measure_mod.measure_latency([m], {"small": b"s"}, torch.zeros(1, 3, 8, 8), batch_sizes=[1, 64], runs=3)
    assert m.runtime_by_batch == {"batch1": ORT, "batch64": OV}
    assert m.latency_ms == {"batch1": 0.175, "batch64": 3.6}
