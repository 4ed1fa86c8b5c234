"""downscale: the first convolution sees the input pooled (found by tracing), the deploy graph runs at the lower
resolution (fewer MACs, same input size), TF-"same" padding follows the new sizes, the model rebuilds from its arch
edits without pickle, and a model that cannot run smaller is refused in one line."""

from __future__ import annotations

import onnx
import pytest
import torch

from slimship.compress import CompressContext, ModelState, apply_step
from slimship.compress.downscale import DownscaleConfig, input_layer
from slimship.core.errors import SlimshipError
from slimship.data.transforms import ImagePreprocessing
from slimship.models import create_model
from slimship.models.export import export_onnx
from slimship.models.rebuild import apply_arch_edits_, pool_input_
from slimship.models.timm_image import TimmImageAdapter
from tests.conftest import examples, make_images

PRE = ImagePreprocessing(32, 1, (0.5,) * 3, (0.25,) * 3)


def _model(arch: str, size: int = 32):
    torch.manual_seed(0)
    return create_model(arch, 3, weights=None, image_size=size).model.eval()


def _ctx(arch: str, teacher, size: int = 32, pre=PRE):
    return CompressContext(TimmImageAdapter(arch, size), examples(*make_images(24, seed=0), size=size),
                           examples(*make_images(12, seed=1), size=size), pre, teacher=teacher, num_classes=3,
                           log=lambda s: None)


@pytest.mark.parametrize("arch,want", [("mobilenetv3_small_050", "conv_stem"), ("resnet18", "conv1"),
                                       ("tf_efficientnet_lite0", "conv_stem")])
def test_the_input_layer_is_the_first_convolution_the_input_reaches(arch, want):
    assert input_layer(_model(arch), torch.zeros(1, 3, 32, 32)) == want


def _macs(onx: bytes) -> int:
    """Multiply-adds of the graph's convolutions, from their weight shapes and output sizes (shape inference)."""
    m = onnx.shape_inference.infer_shapes(onnx.load_from_string(onx))
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in m.graph.value_info}
    inits = {i.name: list(i.dims) for i in m.graph.initializer}
    total = 0
    for n in m.graph.node:
        if n.op_type == "Conv":
            w, out = inits[n.input[1]], shapes[n.output[0]]
            total += out[2] * out[3] * w[0] * w[1] * w[2] * w[3]
    return total


def test_downscale_runs_the_model_at_half_resolution_and_rebuilds_from_its_edits():
    arch, pre = "mobilenetv3_small_050", ImagePreprocessing(64, 1, (0.5,) * 3, (0.25,) * 3)
    model = _model(arch, 64)
    out = apply_step(ModelState(model=model), DownscaleConfig(factor=2, recovery={"epochs": 0.5, "seconds": None}),
                     _ctx(arch, model, 64, pre))
    assert out.notes["downscale"] == {"factor": 2, "layer": "conv_stem", "inner_size": 32}
    dense, small = export_onnx(model, 64), export_onnx(out.model, 64)
    graph = onnx.load_from_string(small).graph
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim][1:] == [3, 64, 64]  # same inputs
    assert graph.node[0].op_type == "AveragePool"
    # fewer multiply-adds in the convolutions (not 4x: the last stages' maps are 2x2 and 1x1 at 64 px already)
    assert _macs(small) * 2.5 < _macs(dense)
    # a fresh model plus the arch edits takes the weights strictly and computes the same (no pickle)
    assert out.arch_edits["conv_stem#input_pool"] == {"type": "input_pool", "factor": 2, "input": [3, 64, 64]}
    fresh = create_model(arch, 3, weights=None, image_size=64).model
    apply_arch_edits_(fresh, out.arch_edits)
    fresh.load_state_dict(out.model.state_dict())
    x = pre.model_input(examples(*make_images(4, seed=2), size=64).x)
    assert torch.allclose(fresh.eval()(x), out.model.eval()(x), atol=1e-5)
    assert export_onnx(fresh, 64) == small  # and exports the same graph (the pool is part of the export's key)


def test_tf_same_padding_is_recomputed_for_the_smaller_sizes():
    # 40 px halves to 20: an odd size appears deeper in (20 -> 10 -> 5), where "same" padding differs from 40's
    m = _model("tf_efficientnet_lite0", 40)
    x = torch.randn(2, 3, 40, 40)
    ref = m(torch.nn.functional.avg_pool2d(x, 2))  # the same model fed 20 px images, padding still for 40 px
    pool_input_(m, "conv_stem", 2, (3, 40, 40))
    fresh = _model("tf_efficientnet_lite0", 20)  # built for 20 px: the padding "same" gives there
    fresh.load_state_dict(m.state_dict())
    pads = {n: mod.static_pad for n, mod in m.named_modules() if hasattr(mod, "static_pad")}
    assert pads == {n: mod.static_pad for n, mod in fresh.named_modules() if hasattr(mod, "static_pad")}
    assert torch.allclose(m(x), fresh(torch.nn.functional.avg_pool2d(x, 2)), atol=1e-5)
    assert not torch.allclose(m(x), ref, atol=1e-3)  # the old padding would have computed something else


def test_bad_factors_and_models_that_cannot_run_smaller_are_refused_in_one_line():
    arch = "mobilenetv3_small_050"
    model = _model(arch)
    with pytest.raises(SlimshipError, match="must divide by it into at least 8 px"):
        apply_step(ModelState(model=model), DownscaleConfig(factor=3), _ctx(arch, model))
    with pytest.raises(SlimshipError, match="must divide by it into at least 8 px"):
        apply_step(ModelState(model=model), DownscaleConfig(factor=8), _ctx(arch, model))
    import timm

    # a ViT's patch grid and position embeddings are fixed for its input size
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=64,
                            depth=2, num_heads=2, num_classes=3).eval()
    with pytest.raises(SlimshipError, match="does not run at 16 px.*leave downscale out"):
        apply_step(ModelState(model=vit), DownscaleConfig(factor=2), _ctx("vit_tiny_patch16_224", vit))


def test_a_run_chains_drop_blocks_downscale_int8_packages_it_and_resumes_from_the_cache(tiny_npz, tmp_path):
    import slimship
    from slimship.api import run
    from slimship.recipe import parse_recipe
    from tests.conftest import tiny_recipe

    arch = "mobilenetv3_small_050"
    rec = tiny_recipe(str(tiny_npz), model={"architecture": arch, "weights": "none", "image_size": 32})
    rec["transfer"].update(budget={"epochs": 1}, scratch_baseline=False)
    rec["evaluate"].update(runtimes=["onnxruntime"], batch_sizes=[1])
    rec["compress"]["candidates"] = [{"name": "small-int8", "steps": [
        {"method": "drop_blocks", "drop": 2, "recovery": {"epochs": 0.5, "seconds": None}},
        {"method": "downscale", "factor": 2, "recovery": {"epochs": 0.5, "seconds": None}},
        {"method": "int8", "calibration": ["minmax"], "keep_fp32": ["none"], "calibration_images": 32}]}]
    recipe = parse_recipe(rec, "tiny")
    m = run(recipe, tmp_path / "out")
    e = next(e for e in m["models"] if e["name"] == "small-int8")
    assert e["notes"]["downscale"]["inner_size"] == 16
    images = make_images(3, seed=3)[0]
    pkg = slimship.load(e["package"])
    assert pkg.logits(images).shape == (len(images), 3)
    assert sum(n.op_type == "AveragePool" for n in onnx.load_from_string(pkg.onnx).graph.node) == 1
    m2 = run(recipe, tmp_path / "out")
    assert slimship.load(next(x for x in m2["models"] if x["name"] == "small-int8")["package"]).onnx == pkg.onnx


def test_channels_pruned_after_downscale_keep_both_edits_of_the_input_layer():
    # the input layer gets a size edit (fewer output channels) and the pool: both must survive the rebuild
    from slimship.compress.prune_channels import PruneChannelsConfig

    arch, pre = "mobilenetv3_small_050", ImagePreprocessing(64, 1, (0.5,) * 3, (0.25,) * 3)
    model = _model(arch, 64)
    ctx = _ctx(arch, model, 64, pre)
    s = apply_step(ModelState(model=model), DownscaleConfig(recovery={"epochs": 0.2, "seconds": None}), ctx)
    s = apply_step(s, PruneChannelsConfig(ratio=0.25, steps=1, recovery={"epochs": 0.2, "seconds": None}), ctx)
    assert s.arch_edits["conv_stem"]["type"] == "conv" and s.arch_edits["conv_stem#input_pool"]["factor"] == 2
    fresh = create_model(arch, 3, weights=None, image_size=64).model
    apply_arch_edits_(fresh, s.arch_edits)
    fresh.load_state_dict(s.model.state_dict())
    x = pre.model_input(examples(*make_images(2, seed=2), size=64).x)
    assert torch.allclose(fresh.eval()(x), s.model.eval()(x), atol=1e-5)
