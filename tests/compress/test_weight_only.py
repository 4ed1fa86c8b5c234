"""weight_only: int8/int4 weights on a grid the package stores exactly, small, with pruned zeros kept."""

from __future__ import annotations

import copy
import json

import numpy as np
import onnx
import pytest
import timm
import torch
from onnx import numpy_helper
from torch import nn

from slimship.cli.main import main
from slimship.compress import METHODS, ModelState
from slimship.compress.unstructured import UnstructuredConfig
from slimship.compress.weight_only import WeightOnlyConfig, block_scales, quantizable_layers
from slimship.data.transforms import ImagePreprocessing, resize_uint8
from slimship.core.errors import RecipeError
from slimship.models.export import export_onnx
from slimship.package.pack import load_package, pack
from slimship.package.weights_codec import encode_tensor
from slimship.recipe import parse_recipe
from tests.conftest import compress_context, make_images

PRE = ImagePreprocessing(32, 1, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def _vit() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=64,
                             depth=2, num_heads=2, num_classes=3).eval()


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                         nn.Linear(64, 3)).eval()


def _ctx(model: nn.Module) -> CompressContext:
    return compress_context(copy.deepcopy(model).eval(), PRE)


def _run(model: nn.Module, **cfg) -> nn.Module:
    return METHODS.get("weight_only").handler(ModelState(model=model), WeightOnlyConfig(**cfg), _ctx(model)).model


def _initializers(onnx_bytes: bytes) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in onnx.load_from_string(onnx_bytes).graph.initializer}


def _pack(path, model: nn.Module, encode: bool) -> int:
    return pack(path, onnx=export_onnx(model, 32, fold_bn=not encode), architecture="tiny",
                class_names=["a", "b", "c"], preprocessing=PRE, encode_weights=encode)


def test_recipe_takes_weight_only_alone_and_after_pruning():
    base = {"model": {"architecture": "vit_tiny_patch16_224"}, "data": {"source": "x"}}
    r = parse_recipe({**base, "compress": {"candidates": [
        {"name": "w4", "steps": [{"method": "weight_only", "bits": 4, "granularity": "group", "group_size": 64}]},
        {"name": "sparse-w8", "steps": [{"method": "unstructured", "sparsity": 0.5}, {"method": "weight_only"}]},
    ]}})
    w4, w8 = r.compress.candidates[0].steps[0], r.compress.candidates[1].steps[1]
    assert (w4.bits, w4.granularity, w4.group_size, w4.layers, w4.clip) == (4, "group", 64, "linear", "mse")
    assert (w8.bits, w8.granularity, w8.recovery) == (8, "channel", None)
    for bad, phrase in [({"group_size": 100}, "power of two"), ({"bits": 3}, "bits"), ({"layers": "conv"}, "layers")]:
        with pytest.raises(RecipeError, match=phrase):
            parse_recipe({**base, "compress": {"candidates": [{"name": "a", "steps": [{"method": "weight_only", **bad}]}]}})


def test_slimship_list_shows_weight_only(capsys):
    assert main(["list", "--json"]) == 0
    assert "weight_only" in {e["name"] for e in json.loads(capsys.readouterr().out)["compression methods"]}


def test_layer_selection():
    vit = _vit()
    linear = quantizable_layers(vit, WeightOnlyConfig())
    assert "blocks.0.attn.qkv" in linear and "patch_embed.proj" not in linear
    assert "head" not in linear  # 3 x 64 weights: under min_weights
    assert "patch_embed.proj" in quantizable_layers(vit, WeightOnlyConfig(layers="all"))
    assert "patch_embed.proj" not in quantizable_layers(vit, WeightOnlyConfig(layers="all", spare=["first"]))
    convs = nn.Sequential(nn.Conv2d(3, 32, 3), nn.Conv2d(32, 32, 3, groups=32), nn.Conv2d(32, 32, 1))
    assert list(quantizable_layers(convs, WeightOnlyConfig(layers="all", min_weights=0))) == ["0", "2"]
    assert len(quantizable_layers(convs, WeightOnlyConfig(layers="all", min_weights=0, spare=[]))) == 3
    assert list(quantizable_layers(convs, WeightOnlyConfig(layers="depthwise", min_weights=0))) == ["1"]


def test_mse_clipping_beats_minmax_on_heavy_tails():
    w = torch.distributions.Laplace(0.0, 1.0).sample((16, 256))  # weights have heavier tails than a Gaussian
    for bits in (4, 8):
        err = {}
        for clip in ("mse", "minmax"):
            s = block_scales(w, WeightOnlyConfig(bits=bits, clip=clip))
            q = torch.clamp(torch.round(w / s), -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1) * s
            err[clip] = float(((q - w) ** 2).sum())
        # the search includes the full range, so it is never worse; at 4 bits clipping the tails pays
        assert err["mse"] < err["minmax"] if bits == 4 else err["mse"] <= err["minmax"]


@pytest.mark.parametrize("make,cfg,ratio,qint", [
    (_vit, {"bits": 4, "granularity": "group", "group_size": 64, "layers": "all"}, 0.2, 9),  # 8 MatMuls + patch conv
    (_mlp, {"bits": 8}, 0.3, 2),  # Gemm layout; the 3 x 64 head stays in the graph
])
def test_package_is_small_and_decodes_to_the_model_bit_for_bit(tmp_path, make, cfg, ratio, qint):
    dense = make()
    model = _run(dense, **cfg)
    assert not any(n.endswith(".original") for n, _ in model.named_parameters())  # baked: plain weights
    fp32_size = _pack(tmp_path / "fp32.slim", dense, encode=False)
    size = _pack(tmp_path / "q.slim", model, encode=True)
    assert size < ratio * fp32_size, (size, fp32_size)
    loaded = load_package(tmp_path / "q.slim")
    assert loaded.manifest["model"]["weights_encoding"]["qint"] == qint
    want, got = _initializers(export_onnx(model, 32, fold_bn=False)), _initializers(loaded.onnx)
    assert want.keys() == got.keys()
    for name, a in want.items():
        assert a.dtype == got[name].dtype and np.array_equal(a.view(np.uint8), got[name].view(np.uint8)), name
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 1)).astype(np.uint8)
    from slimship.data.transforms import to_model_input

    with torch.no_grad():
        ref = model(to_model_input(resize_uint8(x, 32), PRE)).numpy()
    assert np.allclose(loaded.logits(x), ref, atol=1e-4)


def test_pruned_zeros_survive_weight_only_and_recovery():
    vit = _vit()
    ctx = _ctx(vit)
    rec = {"epochs": 0.3, "seconds": None}
    pruned = METHODS.get("unstructured").handler(
        ModelState(model=vit), UnstructuredConfig(sparsity=0.6, schedule="oneshot", recovery=rec), ctx).model
    zeros = {n: (m.weight == 0).clone() for n, m in pruned.named_modules() if isinstance(m, nn.Linear)}
    assert sum(int(z.sum()) for z in zeros.values()) > 0.5 * sum(z.numel() for n, z in zeros.items() if n != "head")
    for recovery in (None, rec):
        cfg = WeightOnlyConfig(bits=4, granularity="group", group_size=32, recovery=recovery)
        model = METHODS.get("weight_only").handler(ModelState(model=pruned), cfg, ctx).model
        for name, m in quantizable_layers(model, cfg).items():
            w = m.weight.detach()
            assert torch.all(w[zeros[name]] == 0), name  # a zero weight is code 0: exactly 0 again
            assert not torch.signbit(w[w == 0]).any(), name  # stored as +0.0
            a = w.numpy()
            e, _ = encode_tensor(a)
            assert e["enc"] == "qint" and e["nbits"] <= 4 and e["block"] >= 32, name  # still on the grid
