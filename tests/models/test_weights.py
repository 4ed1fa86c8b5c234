import pytest
import torch
from safetensors.torch import save_file

from slimship.core.errors import ModelError
from slimship.models import create_model
from slimship.models.rebuild import apply_arch_edits_, arch_edits
from slimship.models.static_pad import StaticPadConv2d, freeze_same_padding_


def _foreign_layout(state: dict) -> dict:
    """Rename every key (like efficientnet_pytorch vs timm) but keep order, shapes and leaf names."""
    return {f"_m.{i}.{k.rsplit('.', 1)[-1]}": v.clone() for i, (k, v) in enumerate(state.items())}


def test_foreign_layout_maps_by_order_and_shape(tmp_path):
    src = create_model("test_efficientnet", 1000, weights=None, image_size=32).model
    f = tmp_path / "foreign.safetensors"
    save_file(_foreign_layout(src.state_dict()), str(f))
    built = create_model("test_efficientnet", 5, weights=str(f), image_size=32)
    assert built.weights_report["layout"] == "mapped by order and shape"
    assert len(built.weights_report["skipped_head"]) == 2  # the 1000-class head
    for k, v in built.model.state_dict().items():
        if not k.startswith("classifier."):
            assert torch.equal(v, src.state_dict()[k]), k
    assert built.model.get_classifier().out_features == 5


def test_foreign_layout_in_a_torch_file_keeps_its_order(tmp_path):
    src = create_model("test_efficientnet", 1000, weights=None, image_size=32).model
    f = tmp_path / "foreign.pth"
    torch.save({f"x{i}.{k.rsplit('.', 1)[-1]}": v for i, (k, v) in enumerate(src.state_dict().items())}, f)
    built = create_model("test_efficientnet", 5, weights=str(f), image_size=32)
    assert torch.equal(built.model.conv_head.weight, src.conv_head.weight)


def test_native_layout_and_torch_file(tmp_path):
    src = create_model("test_efficientnet", 7, weights=None, image_size=32).model
    f = tmp_path / "w.pth"
    torch.save(src.state_dict(), f)
    built = create_model("test_efficientnet", 3, weights=str(f), image_size=32)
    assert built.weights_report["layout"] == "native"
    assert torch.equal(built.model.conv_stem.weight, src.conv_stem.weight)


def test_weights_that_do_not_fit_fail_loudly(tmp_path):
    state = create_model("test_resnet", 1000, weights=None, image_size=32).model.state_dict()
    f = tmp_path / "resnet.safetensors"
    save_file(_foreign_layout(state), str(f))
    with pytest.raises(ModelError, match="do not fit"):
        create_model("test_efficientnet", 3, weights=str(f), image_size=32)


class _Evil:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_untrusted_pickle_is_refused(tmp_path):
    f = tmp_path / "evil.pth"
    torch.save({"x": _Evil()}, f)
    with pytest.raises(ModelError, match="trust_pickle"):
        create_model("test_efficientnet", 3, weights=str(f), image_size=32)


@pytest.mark.parametrize("name, phrase", [("tf_efficientnet_lite9", "did you mean"), ("nope", "unknown model")])
def test_unknown_architecture(name, phrase):
    with pytest.raises(ModelError, match=phrase):
        create_model(name, 3, weights=None, image_size=32)


def test_missing_weights_file():
    with pytest.raises(ModelError, match="not found"):
        create_model("test_efficientnet", 3, weights="/no/such/file.safetensors", image_size=32)


def test_static_padding_matches_dynamic_same_padding():
    import timm

    torch.manual_seed(0)
    m = timm.create_model("tf_efficientnet_lite0", num_classes=4).eval()
    x = torch.randn(2, 3, 48, 48)
    y = m(x)
    assert freeze_same_padding_(m, (3, 48, 48)) > 0
    assert any(isinstance(mod, StaticPadConv2d) for mod in m.modules())
    assert torch.allclose(m(x), y, atol=1e-5)


def test_arch_edits_rebuild_a_shrunk_model():
    from torch import nn

    a = create_model("test_efficientnet", 3, weights=None, image_size=32).model
    b = create_model("test_efficientnet", 3, weights=None, image_size=32).model
    conv = b.conv_stem
    conv.out_channels = 4
    conv.weight = nn.Parameter(conv.weight[:4].clone())
    b.bn1.num_features = 4
    for n in ("weight", "bias"):
        setattr(b.bn1, n, nn.Parameter(getattr(b.bn1, n)[:4].clone()))
    b.bn1.running_mean, b.bn1.running_var = b.bn1.running_mean[:4].clone(), b.bn1.running_var[:4].clone()
    edits = arch_edits(a, b)
    assert set(edits) == {"conv_stem", "bn1"}
    apply_arch_edits_(a, edits)
    a.load_state_dict({k: v for k, v in b.state_dict().items() if not k.startswith("blocks")}, strict=False)
    assert a.conv_stem.weight.shape[0] == 4


def test_trusted_pickle_is_converted_once_to_safetensors(tmp_path, monkeypatch):
    import argparse

    monkeypatch.setenv("SLIMSHIP_CACHE", str(tmp_path / "cache"))
    src = create_model("test_efficientnet", 3, weights=None, image_size=32).model
    f = tmp_path / "legacy.pth"
    torch.save({"state_dict": src.state_dict(), "args": argparse.Namespace(lr=0.1)}, f)  # needs full unpickling
    with pytest.raises(ModelError, match="trust_pickle"):
        create_model("test_efficientnet", 3, weights=str(f), image_size=32)
    built = create_model("test_efficientnet", 3, weights=str(f), image_size=32, trust_pickle=True)
    assert torch.equal(built.model.conv_stem.weight, src.conv_stem.weight)
    converted = list((tmp_path / "cache" / "converted").glob("*.safetensors"))
    assert len(converted) == 1  # later loads read this copy, never the pickle


def test_export_folds_static_pads_into_convs():
    """The deploy graph has no Pad nodes left (each merged into its Conv) and computes the same logits."""
    import numpy as np
    import onnx
    import timm

    from slimship.core.runtime import ort_session
    from slimship.models.export import export_onnx

    torch.manual_seed(0)
    m = timm.create_model("tf_efficientnet_lite0", num_classes=4).eval()
    assert freeze_same_padding_(m, (3, 32, 32)) > 0
    g = export_onnx(m, 32)
    ops = [n.op_type for n in onnx.load_from_string(g).graph.node]
    assert "Pad" not in ops and "ConstantOfShape" not in ops
    asym = [n for n in onnx.load_from_string(g).graph.node if n.op_type == "Conv"
            and any(a.name == "pads" and a.ints[:2] != a.ints[2:] for a in n.attribute)]
    assert asym  # the TF-"same" stride-2 convs pad (0, 1): asymmetric pads on the Conv itself
    x = torch.randn(3, 3, 32, 32)
    got = ort_session(g)(x.numpy())
    np.testing.assert_allclose(got, m(x).detach().numpy(), atol=1e-4)
