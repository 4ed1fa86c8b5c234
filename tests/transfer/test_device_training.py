"""The training loop's device path, exercised on the CPU: bf16 autocast, channels_last, scaled batches; and the
same on a GPU when there is one (skipped otherwise: CI has none)."""

import copy

import pytest
import torch

from slimship.core.device import CPU, Device
from slimship.models.timm_image import parameter_groups
from slimship.transfer.probe import extract_features
from slimship.transfer.trainer import TrainConfig, accuracy, train
from tests.transfer.test_finetune import ADAPTER, _data, _model

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _learns_and_comes_back(device: Device) -> None:
    T, V = _data()
    m, pre = _model()
    r = train(m, T, V, pre, TrainConfig(epochs=4, lr=3e-3, batch_size=16, bn="train", evals=2),
              groups=parameter_groups(m), device=device)
    assert r.best_val_accuracy >= 0.8
    assert r.device["device"].startswith(device.type) and r.device["precision"] == device.precision
    # back where it came from, in the default layout (ONNX export and pruning expect that)
    assert all(p.device.type == "cpu" and p.is_contiguous() for p in m.parameters())
    assert accuracy(m, V, pre) == pytest.approx(r.best_val_accuracy, abs=0.1)  # fp32 on the CPU agrees


def test_bf16_channels_last_training_runs_the_device_path_on_the_cpu():
    _learns_and_comes_back(Device("cpu", "bf16", channels_last=True))


def test_batch_scale_takes_bigger_batches_at_a_larger_learning_rate():
    T, V = _data()  # 90 examples: one epoch is 5 batches of 16, or 1 batch of 64 with batch_scale 4
    steps, moved = {}, {}
    for scale, epochs in ((1, 0.2), (4, 1.0)):
        m, pre = _model()
        before = copy.deepcopy(m.state_dict())
        # one AdamW step moves every weight with a gradient by about the learning rate
        cfg = TrainConfig(epochs=epochs, lr=1e-3, batch_size=16, weight_decay=0.0, warmup=0.0, evals=1)
        steps[scale] = train(m, T, V, pre, cfg, device=Device(batch_scale=scale)).steps
        after = m.state_dict()
        moved[scale] = torch.cat([(after[k] - before[k]).abs().flatten() for k in after
                                  if after[k].is_floating_point() and (after[k] - before[k]).abs().max() > 0]).median()
    assert steps == {1: 1, 4: 1}  # a whole epoch in one step: the batch grew to 64
    assert 1.6 < float(moved[4] / moved[1]) < 2.4  # batch x4, learning rate x2 (square-root rule)


def test_micro_batches_accumulate_the_whole_batch_gradient():
    """device.micro_batch splits each batch into passes: the model ends where one pass per batch takes it (frozen
    BatchNorm, distillation included), while no pass holds more than micro_batch examples."""
    T, V = _data()
    teacher, _ = _model()
    ends, seen = {}, {}
    for micro in (None, 5):
        m, pre = _model()
        sizes = []
        m.register_forward_pre_hook(lambda mod, args: sizes.append(args[0].shape[0]))
        cfg = TrainConfig(epochs=0.4, lr=1e-3, batch_size=16, bn="frozen", kd_alpha=0.5, evals=1, eval_from=1.0)
        train(m, T, V, pre, cfg, teacher=teacher, device=Device(micro_batch=micro))
        ends[micro], seen[micro] = m.state_dict(), [s for s in sizes if s <= 16]  # evaluation passes are larger
    assert seen[None] == [16, 16] and seen[5] == [5, 5, 5, 1, 5, 5, 5, 1]  # two steps of 16
    for k, v in ends[None].items():
        torch.testing.assert_close(ends[5][k], v, rtol=1e-4, atol=1e-5, msg=k)


def test_recipe_micro_batch_reaches_the_device():
    from slimship.core.device import CPU_MICRO_BATCH, resolve_device

    assert resolve_device("cpu").micro_batch == CPU_MICRO_BATCH  # auto on the CPU
    assert resolve_device("cpu").describe()["micro_batch"] == CPU_MICRO_BATCH  # recorded in metrics.json
    assert resolve_device("cpu", micro_batch=None).micro_batch is None
    assert resolve_device("cpu", micro_batch=8).micro_batch == 8
    with pytest.raises(Exception, match="micro_batch"):
        resolve_device("cpu", micro_batch=0)


@cuda
def test_cuda_training_learns_and_returns_the_model_to_the_cpu():
    _learns_and_comes_back(Device("cuda", "bf16", 0, channels_last=True))


@cuda
def test_cuda_features_match_the_cpu_features():
    T, _ = _data()
    m, pre = _model()
    cpu = extract_features(ADAPTER, m, T.x, pre, device=CPU)
    gpu = extract_features(ADAPTER, m, T.x, pre, device=Device("cuda", "fp32", 0, channels_last=True))
    assert gpu.device.type == "cpu" and torch.allclose(cpu, gpu, atol=1e-3, rtol=1e-3)
