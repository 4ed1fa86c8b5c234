import onnx
import torch

from slimship.compress.int8 import Int8Config
from slimship.compress.int8.quantize import quantize_int8
from slimship.compress.prune_channels import PruneChannelsConfig, prune_channels_
from slimship.data.transforms import ImagePreprocessing, resize_uint8, to_model_input, to_model_input_np
from slimship.evaluate.compute import count_macs
from slimship.core.runtime import ort_logits, ort_session
from slimship.models import create_model
from slimship.models.export import export_onnx
from slimship.models.rebuild import apply_arch_edits_, arch_edits
from slimship.data.task import Examples
from slimship.transfer.trainer import TrainConfig, train
from tests.conftest import make_images


def _trained():
    torch.manual_seed(0)
    b = create_model("test_efficientnet", 3, weights=None, image_size=32)
    pre = ImagePreprocessing(32, 1, b.mean, b.std)
    x, y = make_images(30, seed=0)
    vx, vy = make_images(10, seed=1)
    X, VX = resize_uint8(x, 32), resize_uint8(vx, 32)
    train(b.model, Examples(X, torch.from_numpy(y)), Examples(VX, torch.from_numpy(vy)), pre,
          TrainConfig(epochs=4, lr=3e-3, batch_size=16, bn="train", evals=1))
    return b.model.eval(), pre, X, torch.from_numpy(y), VX, vy


def test_int8_quantizes_convolutions_and_keeps_accuracy():
    model, pre, X, Y, VX, vy = _trained()
    fp32 = export_onnx(model, 32)
    vin = to_model_input_np(VX.numpy(), pre)

    def score(b):
        return float((ort_logits(ort_session(b), vin).argmax(1) == vy).mean())

    res = quantize_int8(fp32, to_model_input_np(X.numpy(), pre), score,
                        Int8Config(calibration=["minmax"], keep_fp32=["none"], calibration_images=64), log=lambda s: None)
    g = onnx.load_from_string(res.onnx).graph
    ops = {n.op_type for n in g.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    int8_weights = [i for i in g.initializer if i.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) >= sum(1 for n in g.node if n.op_type == "Conv") * 0.9
    assert len(res.onnx) < len(fp32) / 2  # tiny model: names and scales weigh more than in a real one
    assert score(res.onnx) >= score(fp32) - 0.05
    assert len(res.trials) == 1 and res.choice["calibration"] == "minmax"


def test_prune_channels_shrinks_and_rebuilds_from_edits():
    model, pre, X, Y, VX, vy = _trained()
    shape = (3, 32, 32)
    macs0 = count_macs(model, torch.zeros(1, *shape))
    rounds = []
    calib = [to_model_input(X[i : i + 16], pre) for i in range(0, 48, 16)]
    info = prune_channels_(model, PruneChannelsConfig(ratio=0.5, steps=2), to_model_input(X[:1], pre), calib,
                           lambda m, r: rounds.append(r), log=lambda s: None)
    assert rounds == [0, 1]
    assert info["params_after"] < info["params_before"] and count_macs(model, torch.zeros(1, *shape)) < macs0 * 0.7
    fresh = create_model("test_efficientnet", 3, weights=None, image_size=32).model
    edits = arch_edits(create_model("test_efficientnet", 3, weights=None, image_size=32).model, model)
    assert edits
    apply_arch_edits_(fresh, edits)
    fresh.load_state_dict(model.state_dict())  # strict: every shape matches
    x = to_model_input(VX[:4], pre)
    assert torch.allclose(fresh.eval()(x), model.eval()(x), atol=1e-5)


def test_prune_to_a_macs_target():
    model, pre, X, *_ = _trained()
    calib = [to_model_input(X[:16], pre)]
    info = prune_channels_(model, PruneChannelsConfig(ratio=None, macs_reduction=2.0, steps=1, round_to=None),
                           to_model_input(X[:1], pre), calib, lambda m, r: None, log=lambda s: None)
    assert info["macs_after"] <= info["macs_before"] / 2.0 * 1.05


def test_a_macs_target_is_spread_over_the_rounds():
    """Each recovery round follows an equal (geometric) share of the reduction, not all of it in round one."""
    model, pre, X, *_ = _trained()
    calib = [to_model_input(X[:16], pre)]
    example = to_model_input(X[:1], pre)
    seen = []
    info = prune_channels_(model, PruneChannelsConfig(ratio=None, macs_reduction=2.0, steps=3, round_to=None),
                           example, calib, lambda m, r: seen.append(count_macs(m, example)),
                           log=lambda s: None)
    m0 = info["macs_before"]
    assert len(seen) == 3 and seen[0] > seen[1] > seen[2]
    assert seen[0] >= m0 / 2 ** (1 / 3) * 0.85  # round one did not take the whole reduction
    assert info["macs_after"] <= m0 / 2.0


def test_global_scope_prunes_layers_unevenly_within_the_cap():
    """scope=global: channels compete across layers (Taylor importance), no layer loses more than the cap."""
    model, pre, X, Y, *_ = _trained()

    def convs(m):
        return {n: c.out_channels for n, c in m.named_modules() if isinstance(c, torch.nn.Conv2d) and c.groups == 1}

    before = convs(model)
    cfg = PruneChannelsConfig(ratio=None, macs_reduction=1.6, steps=1, round_to=None, importance="taylor",
                              scope="global", max_layer_ratio=0.6)
    info = prune_channels_(model, cfg, to_model_input(X[:1], pre), [to_model_input(X[:16], pre)],
                           lambda m, r: None, loss_batches=lambda: [(to_model_input(X[:16], pre), Y[:16])],
                           log=lambda s: None)
    assert info["macs_after"] <= info["macs_before"] / 1.6
    after = convs(model)
    assert all(after[n] >= int(0.4 * before[n]) for n in before), (before, after)  # the cap: ≤ 60 % removed
    kept = {n: after[n] / before[n] for n in before}
    assert max(kept.values()) - min(kept.values()) > 0.2, kept  # not one uniform ratio
