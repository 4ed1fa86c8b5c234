import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from slimship.compress import METHODS, ModelState
from slimship.compress.kmeans import KMeansShareConfig, bake_, kmeans_1d, share_weights_
from slimship.compress.sparsity import _layer_mask, magnitude_masks, prunable_layers
from slimship.compress.unstructured import UnstructuredConfig, cubic_sparsity
from slimship.data.transforms import ImagePreprocessing, resize_uint8
from slimship.core.errors import PackageError
from slimship.models import create_model
from slimship.models.export import export_onnx
from slimship.package.weights_codec import decode_graph, decode_tensor, encode_graph, encode_tensor
from tests.conftest import compress_context, make_images


def _ctx_and_model():
    torch.manual_seed(0)
    b = create_model("test_efficientnet", 3, weights=None, image_size=32)
    pre = ImagePreprocessing(32, 1, b.mean, b.std)
    ctx = compress_context(b.model.eval(), pre)
    return ctx, b.model


def test_cubic_schedule_reaches_the_target():
    assert cubic_sparsity(0.8, 0.0) == 0 and cubic_sparsity(0.8, 0.75) == pytest.approx(0.8)
    assert cubic_sparsity(0.8, 0.3) > 0.8 * 0.3  # front-loaded


def test_layer_caps_and_spared_layers():
    _, m = _ctx_and_model()
    cfg = UnstructuredConfig(sparsity=0.99, scope="global", max_layer_sparsity=0.9)
    layers = prunable_layers(m, cfg.spare)
    assert "conv_stem" not in layers and "classifier" not in layers
    assert all(mod.groups == 1 or mod.groups != mod.in_channels for mod in layers.values())
    for n, mask in magnitude_masks(layers, 0.99, cfg).items():
        assert mask.float().mean() >= 0.099, n  # never emptied (cap 0.9, rounded per layer)


def test_nm_masks_keep_two_of_four():
    w = torch.randn(8, 16, 1, 1)
    from slimship.compress.sparsity import _nm_mask

    mask = _nm_mask(w, 2, 4)
    assert torch.all(mask.reshape(8, 4, 4).sum(-1) == 2)


def test_unstructured_then_kmeans_keeps_zeros_and_shares():
    ctx, m = _ctx_and_model()
    rec = {"epochs": 0.5, "seconds": None}
    s1 = METHODS.get("unstructured").handler(ModelState(model=m), UnstructuredConfig(sparsity=0.7, recovery=rec), ctx)
    layers = prunable_layers(s1.model, ["first", "last", "depthwise"])
    zeros = {n: (mod.weight == 0).clone() for n, mod in layers.items()}
    frac = sum(int(z.sum()) for z in zeros.values()) / sum(z.numel() for z in zeros.values())
    assert frac == pytest.approx(0.7, abs=0.02)
    s2 = METHODS.get("kmeans").handler(s1, KMeansShareConfig(bits=3, min_weights=64, recovery=rec), ctx)
    for n, mod in prunable_layers(s2.model, ["first", "last", "depthwise"]).items():
        assert torch.all(mod.weight[zeros[n]] == 0), n  # zeros survived clustering and fine-tuning
        if mod.weight.numel() >= 64:
            assert torch.unique(mod.weight[mod.weight != 0]).numel() <= 8, n  # shared: at most 2**3 values


def test_later_recoveries_leave_shared_and_quantized_weights_alone():
    """unstructured -> kmeans -> weight_only (depthwise, with recovery) -> unstructured: no later fine-tune
    moves a weight an earlier step shared or put on a grid."""
    from slimship.compress.weight_only import WeightOnlyConfig, quantizable_layers

    ctx, m = _ctx_and_model()
    rec = {"epochs": 0.5, "seconds": None}
    s1 = METHODS.get("unstructured").handler(ModelState(model=m), UnstructuredConfig(sparsity=0.5, recovery=rec), ctx)
    s2 = METHODS.get("kmeans").handler(s1, KMeansShareConfig(bits=3, min_weights=64, recovery=rec), ctx)
    shared = {n: mod.weight.detach().clone() for n, mod in s2.model.named_modules() if f"{n}.weight" in
              {f"{k}.weight" for k in s2.notes["fixed_layers"]}}
    assert shared
    wo = WeightOnlyConfig(layers="depthwise", min_weights=0, recovery=rec)
    s3 = METHODS.get("weight_only").handler(s2, wo, ctx)
    dw = quantizable_layers(s3.model, wo)
    assert dw and all(mod.groups == mod.in_channels > 1 for mod in dw.values())
    assert set(dw) <= set(s3.notes["fixed_layers"]) and set(shared) <= set(s3.notes["fixed_layers"])
    grid = {n: mod.weight.detach().clone() for n, mod in dw.items()}
    for n, w in shared.items():
        assert torch.equal(dict(s3.model.named_modules())[n].weight, w), n  # weight_only's recovery kept it
    # the same sparsity again: the masks are the ones already there, so any change would come from training
    s4 = METHODS.get("unstructured").handler(s3, UnstructuredConfig(sparsity=0.5, recovery=rec), ctx)
    mods = dict(s4.model.named_modules())
    for n, w in {**shared, **grid}.items():
        assert torch.equal(mods[n].weight, w), n  # the final recovery trained around it
    moved = [n for n, p in s4.model.named_parameters() if n.endswith("bias") and not torch.equal(
        p, dict(s3.model.named_parameters())[n])]
    assert moved  # ...while the rest of the model did train


def test_kmeans_reassign_moves_a_weight_to_its_nearest_centroid():
    from torch.nn.utils import parametrize

    from slimship.compress.kmeans import SharedWeight

    for reassign in (False, True):
        lin = torch.nn.Linear(4, 1, bias=False)
        with torch.no_grad():
            lin.weight.copy_(torch.tensor([[0.0, 0.1, 0.9, 1.1]]))
        codebook = torch.tensor([0.1, 1.0])
        index = torch.tensor([[0, 0, 1, 1]])
        parametrize.register_parametrization(lin, "weight", SharedWeight(index, lin.weight != 0, codebook, reassign))
        assert torch.equal(lin.weight, torch.tensor([[0.0, 0.1, 1.0, 1.0]]))
        with torch.no_grad():
            lin.parametrizations.weight.original.copy_(torch.tensor([[0.0, 0.8, 0.2, 1.1]]))  # two weights moved
        expected = [[0.0, 1.0, 0.1, 1.0]] if reassign else [[0.0, 0.1, 1.0, 1.0]]
        assert torch.equal(lin.weight, torch.tensor(expected)), reassign  # zero stays zero either way
        lin.weight.sum().backward()
        assert lin.parametrizations.weight[0].codebook.grad is not None
        assert (lin.parametrizations.weight.original.grad is not None) == reassign


def test_kmeans_codebook_is_trainable_and_bakes():
    _, m = _ctx_and_model()
    info = share_weights_(m, KMeansShareConfig(bits=2, min_weights=64))
    assert info
    names = [n for n, _ in m.named_parameters() if n.endswith("codebook")]
    assert len(names) == len(info)
    bake_(m)
    assert not any(n.endswith("codebook") for n, _ in m.named_parameters())


def test_kmeans_1d_finds_clusters():
    v = torch.cat([torch.full((50,), -1.0), torch.full((50,), 2.0)]) + 0.01 * torch.randn(100)
    c, a = kmeans_1d(v, 4, 10)
    assert len(c) <= 4 and torch.allclose(c[a], v, atol=0.1)


@pytest.mark.parametrize("kind", ["shared", "sparse", "raw", "half"])
def test_tensor_codec_is_exact(kind):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    if kind == "half":
        a = a.astype(np.float16).astype(np.float32)
        a[0, 0, 0, :2] = [-0.0, 0.0]  # signed zeros survive too
    if kind == "shared":
        a = rng.choice(np.array([-0.5, 0.25, 0.75], np.float32), size=a.shape)
        a[rng.random(a.shape) < 0.6] = 0
    elif kind == "sparse":
        a[rng.random(a.shape) < 0.8] = 0
    e, chunks = encode_tensor(a)
    assert e["enc"] == kind
    e["shape"] = list(a.shape)
    assert np.array_equal(decode_tensor(e, chunks).view(np.uint32), a.view(np.uint32))  # bit for bit
    if kind == "half":
        assert sum(map(len, chunks)) == 2 * a.size
        with pytest.raises(PackageError, match="float16"):
            decode_tensor(e, [chunks[0][:-2]])


def test_batchnorm_affine_rewrite_keeps_the_function_and_halves_its_numbers():
    from slimship.core.runtime import ort_session
    from slimship.models.onnx_fold import affine_batchnorms

    _, m = _ctx_and_model()
    with torch.no_grad():
        for bn in (mod for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d)):
            bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.uniform_(0.5, 2)
    g = export_onnx(m.eval(), 32, fold_bn=False)
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    ref = ort_session(g)(x)
    for half, tol in ((False, 1e-4), (True, 2e-2)):
        g2 = affine_batchnorms(g, half=half)
        np.testing.assert_allclose(ort_session(g2)(x), ref, atol=tol * np.abs(ref).max())
        model = onnx.load_from_string(g2)
        inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        bns = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
        assert bns
        for n in bns:
            eps = next((a.f for a in n.attribute if a.name == "epsilon"), 1e-5)
            assert not inits[n.input[3]].any()  # mean 0
            assert np.all(inits[n.input[4]] + np.float32(eps) == np.float32(1))  # var + eps == 1 exactly
            if half:
                for k in n.input[1:3]:
                    assert encode_tensor(inits[k])[0]["enc"] in ("half", "shared") or inits[k].size < 2


def test_graph_codec_round_trip_and_refuses_damage():
    from slimship.core.errors import PackageError

    _, m = _ctx_and_model()
    onnx_bytes = export_onnx(m, 32, fold_bn=False)
    skeleton, blob, info = encode_graph(onnx_bytes)
    assert len(skeleton) < len(onnx_bytes) / 2 and info["raw"] > 0
    import onnx

    a, b = onnx.load_from_string(onnx_bytes), onnx.load_from_string(decode_graph(skeleton, blob))
    from onnx import numpy_helper

    for x, y in zip(a.graph.initializer, b.graph.initializer):
        assert np.array_equal(numpy_helper.to_array(x), numpy_helper.to_array(y))
    for bad in (blob[:-3], blob + b"x", b"XXXX" + blob[4:], blob[:8] + b"[" + blob[9:]):
        with pytest.raises(PackageError):
            decode_graph(skeleton, bad)


def test_lowrank_factors_low_rank_layers_and_rebuilds():
    from slimship.compress.lowrank import LowRankConfig, factor_lowrank_
    from slimship.models.rebuild import apply_arch_edits_, arch_edits

    _, m = _ctx_and_model()
    # make one pointwise conv exactly rank 2 so the energy threshold must find it
    conv = m.blocks[1][0].conv_pwl
    with torch.no_grad():
        w = conv.weight.reshape(conv.weight.shape[0], -1)
        u = torch.randn(w.shape[0], 2)
        conv.weight.copy_((u @ torch.randn(2, w.shape[1])).reshape(conv.weight.shape))
    x = torch.randn(2, 3, 32, 32)
    m.eval()
    before = m(x)
    done = factor_lowrank_(m, LowRankConfig(energy=0.999999, min_saving=0.3))
    assert done["blocks.1.0.conv_pwl"]["rank"] == 2
    assert torch.allclose(m(x), before, atol=1e-3)
    fresh = create_model("test_efficientnet", 3, weights=None, image_size=32).model
    edits = arch_edits(create_model("test_efficientnet", 3, weights=None, image_size=32).model, m)
    assert edits["blocks.1.0.conv_pwl"]["type"] == "lowrank"
    apply_arch_edits_(fresh, edits)
    fresh.load_state_dict(m.state_dict())
    assert torch.allclose(fresh.eval()(x), m(x), atol=1e-6)


def test_sensitivity_allocation_spends_sparsity_where_it_is_cheap():
    from slimship.compress.sensitivity import allocate_sparsity

    table = {"cheap": {0.5: 0.0, 0.9: 0.01}, "costly": {0.5: 0.2, 0.9: 0.5}}
    alloc = allocate_sparsity(table, {"cheap": 100, "costly": 100}, target=0.5)
    assert alloc["cheap"] == 0.9 and alloc["costly"] < 0.5


def test_unstructured_with_sensitivity_allocation_runs():
    ctx, m = _ctx_and_model()
    cfg = UnstructuredConfig(sparsity=0.5, allocation="sensitivity", recovery={"epochs": 0.3, "seconds": None})
    s = METHODS.get("unstructured").handler(ModelState(model=m), cfg, ctx)
    notes = s.notes["unstructured"]
    assert set(notes["allocation"]) == set(notes["sensitivity"]["drop"])
    assert notes["layer_sparsity"] == pytest.approx(0.5, abs=0.1)
    import json

    assert json.loads(json.dumps(s.notes)) == s.notes  # what a package manifest can hold (string keys)


def test_sparse_transfer_prunes_the_source_and_keeps_its_masks_through_the_transfer():
    ctx, dense = _ctx_and_model()
    torch.manual_seed(1)
    source = create_model("test_efficientnet", 3, weights=None, image_size=32).model
    ctx.source = source
    before = {n: mod.weight.detach().clone() for n, mod in prunable_layers(source, ["first", "last", "depthwise"]).items()}
    cfg = UnstructuredConfig(sparsity=0.6, order="before_transfer", recovery={"epochs": 1, "seconds": None, "lr": 3e-3})
    s = METHODS.get("unstructured").handler(ModelState(model=dense), cfg, ctx)
    assert s.notes["unstructured"]["order"] == "before_transfer"
    for n, mod in prunable_layers(s.model, ["first", "last", "depthwise"]).items():
        w0 = before[n]
        # the masks are the source's own magnitude masks (one-shot on the pretrained weights), kept throughout
        src_mask = _layer_mask(w0.abs(), 0.6)
        assert torch.equal(mod.weight != 0, src_mask), n
        assert not torch.equal(mod.weight, w0 * src_mask), n  # and the kept weights were trained
    for n, mod in prunable_layers(source, ["first", "last", "depthwise"]).items():
        assert torch.equal(mod.weight, before[n])  # the source model itself is left untouched


def test_sparse_transfer_must_start_its_candidate():
    from slimship.core.errors import RecipeError
    from slimship.recipe import parse_recipe
    from tests.conftest import tiny_recipe

    r = tiny_recipe("data.npz")
    r["compress"]["candidates"] = [{"name": "bad", "steps": [
        {"method": "kmeans"}, {"method": "unstructured", "order": "before_transfer"}]}]
    with pytest.raises(RecipeError, match="first step"):
        parse_recipe(r)
