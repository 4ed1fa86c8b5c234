"""drop_blocks: which CNN blocks can go (traced, no model-specific code), the greedy choice, the model really
losing them (fewer ONNX nodes), rebuilding from the arch edits without pickle, and clear refusals."""

from __future__ import annotations

import onnx
import pytest
import torch

from slimship.compress import ModelState, apply_step
from slimship.compress.drop_blocks import DropBlocksConfig, droppable_blocks, dropped_count
from slimship.core.errors import SlimshipError
from slimship.data.transforms import ImagePreprocessing
from slimship.models import create_model
from slimship.models.export import export_onnx
from slimship.models.rebuild import apply_arch_edits_
from tests.conftest import examples, make_images

ARCH = "mobilenetv3_small_050"  # 0.57 M parameters; stages of 1-3 blocks, like EfficientNet-Lite0's


def _model(arch: str = ARCH):
    torch.manual_seed(0)
    return create_model(arch, 3, weights=None, image_size=32).model.eval()


@pytest.mark.parametrize("arch,want", [
    (ARCH, ["blocks.1.1", "blocks.2.1", "blocks.2.2", "blocks.3.1", "blocks.4.1", "blocks.4.2"]),
    ("tf_efficientnet_lite0", ["blocks.1.1", "blocks.2.1", "blocks.3.1", "blocks.3.2", "blocks.4.1", "blocks.4.2",
                               "blocks.5.1", "blocks.5.2", "blocks.5.3"]),
    ("resnet18", ["layer1.1", "layer2.1", "layer3.1", "layer4.1"]),  # not the downsample BNs, not the stem
    ("test_efficientnet", []),  # every stage one block that changes the shape
])
def test_the_droppable_blocks_are_the_shape_keeping_blocks_of_each_stage(arch, want):
    assert droppable_blocks(_model(arch), torch.zeros(1, 3, 32, 32)) == want


def _ctx(pre, teacher):
    from slimship.compress import CompressContext
    from slimship.models.timm_image import TimmImageAdapter

    return CompressContext(TimmImageAdapter(ARCH, 32), examples(*make_images(24, seed=0)),
                           examples(*make_images(12, seed=1)), pre, teacher=teacher, num_classes=3,
                           log=lambda s: None)


def test_drop_blocks_removes_the_blocks_and_the_model_rebuilds_from_its_edits():
    model = _model()
    pre = ImagePreprocessing(32, 1, (0.5,) * 3, (0.25,) * 3)
    ctx = _ctx(pre, model)
    cfg = DropBlocksConfig(drop=3, recovery={"epochs": 0.5, "seconds": None})
    out = apply_step(ModelState(model=model), cfg, ctx)
    dropped = out.notes["drop_blocks"]["dropped"]
    assert len(dropped) == 3 and set(dropped) <= set(droppable_blocks(model, torch.zeros(1, 3, 32, 32)))
    stages = {n.rpartition(".")[0] for n in droppable_blocks(model, torch.zeros(1, 3, 32, 32))}
    blocks = lambda m: sum(len(m.get_submodule(s)) for s in stages)  # noqa: E731
    assert blocks(out.model) == blocks(model) - 3
    # the model really lost them: fewer convolutions in the deploy graph
    convs = lambda m: sum(n.op_type == "Conv" for n in onnx.load_from_string(export_onnx(m, 32)).graph.node)  # noqa: E731
    assert convs(out.model) < convs(model)
    # a fresh model plus the arch edits takes the weights strictly and computes the same
    fresh = create_model(ARCH, 3, weights=None, image_size=32).model
    apply_arch_edits_(fresh, out.arch_edits)
    fresh.load_state_dict(out.model.state_dict())
    x = pre.model_input(examples(*make_images(4, seed=2)).x)
    assert torch.allclose(fresh.eval()(x), out.model.eval()(x), atol=1e-5)


def test_named_blocks_go_and_bad_names_or_counts_are_refused():
    model = _model()
    pre = ImagePreprocessing(32, 1, (0.5,) * 3, (0.25,) * 3)
    ctx = _ctx(pre, model)
    out = apply_step(ModelState(model=model), DropBlocksConfig(blocks=["blocks.2.2", "blocks.4.1"],
                                                                recovery={"epochs": 0.2, "seconds": None}), ctx)
    assert out.notes["drop_blocks"]["dropped"] == ["blocks.2.2", "blocks.4.1"]
    assert len(out.model.blocks[2]) == 2 and len(out.model.blocks[4]) == 2
    with pytest.raises(SlimshipError, match="name distinct blocks among those that can go: blocks.1.1"):
        apply_step(ModelState(model=model), DropBlocksConfig(blocks=["blocks.1.0"]), ctx)
    with pytest.raises(SlimshipError, match="ask for 1 to 6"):
        apply_step(ModelState(model=model), DropBlocksConfig(drop=7), ctx)
    assert [dropped_count(d, 9) for d in (0.5, 0.3, 2)] == [4, 3, 2]
    with pytest.raises(SlimshipError, match="neither a whole number"):
        dropped_count(2.5, 9)


def test_a_model_without_droppable_blocks_is_refused_in_one_line():
    from slimship.compress import CompressContext
    from slimship.models.timm_image import TimmImageAdapter

    model = _model("test_efficientnet")
    pre = ImagePreprocessing(32, 1, (0.5,) * 3, (0.25,) * 3)
    ctx = CompressContext(TimmImageAdapter("test_efficientnet", 32), examples(*make_images(8, seed=0)),
                          examples(*make_images(4, seed=1)), pre, teacher=model, num_classes=3, log=lambda s: None)
    with pytest.raises(SlimshipError, match="test_efficientnet has no block that can be dropped"):
        apply_step(ModelState(model=model), DropBlocksConfig(), ctx)


def test_a_run_chains_drop_blocks_prune_channels_int8_packages_it_and_resumes_from_the_cache(tiny_npz, tmp_path):
    """End to end: the chain trains, packages and loads; a second run rebuilds the cached steps from their arch
    edits (no pickle) and gives the same package graph."""
    import slimship
    from slimship.api import run
    from slimship.recipe import parse_recipe
    from tests.conftest import tiny_recipe

    rec = tiny_recipe(str(tiny_npz), model={"architecture": ARCH, "weights": "none", "image_size": 32})
    rec["transfer"].update(budget={"epochs": 1}, scratch_baseline=False)
    rec["evaluate"].update(runtimes=["onnxruntime"], batch_sizes=[1])
    rec["compress"]["candidates"] = [{"name": "blocks-int8", "steps": [
        {"method": "drop_blocks", "drop": 2, "recovery": {"epochs": 0.5, "seconds": None}},
        {"method": "prune_channels", "ratio": 0.25, "steps": 1, "recovery": {"epochs": 0.5, "seconds": None}},
        {"method": "int8", "calibration": ["minmax"], "keep_fp32": ["none"], "calibration_images": 32}]}]
    recipe = parse_recipe(rec, "tiny")
    m = run(recipe, tmp_path / "out")
    e = next(e for e in m["models"] if e["name"] == "blocks-int8")
    assert len(e["notes"]["drop_blocks"]["dropped"]) == 2 and e["notes"]["prune_channels"]
    images = make_images(3, seed=3)[0]
    assert slimship.load(e["package"]).logits(images).shape == (len(images), 3)
    first = slimship.load(e["package"]).onnx
    m2 = run(recipe, tmp_path / "out")
    assert slimship.load(next(x for x in m2["models"] if x["name"] == "blocks-int8")["package"]).onnx == first
