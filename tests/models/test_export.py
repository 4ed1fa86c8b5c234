"""ONNX export: an identical export earlier in the process is reused; any change in weights or settings is not."""

import torch

from slimship.models import create_model
from slimship.models.export import export_onnx


def test_an_identical_export_is_reused_and_a_changed_model_is_exported_again(monkeypatch):
    import slimship.models.export as ex

    calls = []
    real = ex._export
    monkeypatch.setattr(ex, "_export", lambda *a: calls.append(a[1:]) or real(*a))
    m = create_model("test_efficientnet", 3, weights=None, image_size=32).model.eval()
    first = export_onnx(m, 32)
    assert export_onnx(m, 32) is first and len(calls) == 1  # the dense model's second export: a lookup
    assert export_onnx(m, 32, fold_bn=False) != first and len(calls) == 2
    with torch.no_grad():
        m.get_classifier().bias.add_(1.0)
    assert export_onnx(m, 32) != first and len(calls) == 3  # new weights: exported again
