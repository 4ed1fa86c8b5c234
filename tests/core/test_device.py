"""The run's Device: how it is chosen, and what it does to modules and batches (on the CPU; tests/transfer/
test_cuda.py repeats the training checks on a GPU when there is one)."""

import pytest
import torch
from torch import nn

from slimship.core.device import CPU, Device, resolve_device
from slimship.core.distributed import World
from slimship.core.errors import SlimshipError

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the choice on a machine without a GPU")


@no_gpu
def test_auto_is_the_cpu_in_fp32_without_a_gpu():
    d = resolve_device()
    assert (d.type, d.precision, d.world.size, d.channels_last) == ("cpu", "fp32", 1, True)
    assert resolve_device("auto", "bf16").precision == "bf16"  # bf16 autocast on the CPU when asked for
    assert d.describe() == {"device": "cpu", "precision": "fp32", "channels_last": True, "world_size": 1,
                            "micro_batch": 32}


@no_gpu
@pytest.mark.parametrize("amx", [True, False])
def test_auto_on_the_cpu_is_the_model_kinds_precision_where_the_cpu_has_amx(monkeypatch, amx):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert resolve_device(cpu_auto="bf16").precision == ("bf16" if amx else "fp32")
    assert resolve_device(cpu_auto="fp32").precision == "fp32"  # image kinds: bf16 measured slower for convolutions
    assert resolve_device("cpu", "fp32", cpu_auto="bf16").precision == "fp32"  # an explicit precision wins


def test_each_model_kind_says_its_cpu_precision():
    from slimship.models.hf_text import HfTextAdapter
    from slimship.models.timm_image import TimmImageAdapter

    assert HfTextAdapter("tiny").cpu_precision == "bf16"
    assert TimmImageAdapter("resnet18", 32).cpu_precision == "fp32"


@no_gpu
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(SlimshipError, match="use --device cpu"):
        resolve_device("cuda")


@pytest.mark.parametrize("args, phrase", [(("tpu",), "use cpu, cuda or auto"), (("cpu", "fp16"), "use fp32, bf16"),
                                          (("cpu", None), None)])
def test_unknown_values_are_refused(args, phrase):
    if phrase is None:
        assert resolve_device(*args).type == "cpu"
        return
    with pytest.raises(SlimshipError, match=phrase):
        resolve_device(*args)


def test_holding_places_modules_and_gives_them_back():
    d = Device("cpu", channels_last=True)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3))
    cl = torch.channels_last
    with d.holding(net, None):
        assert net[0].weight.is_contiguous(memory_format=cl) and not net[0].weight.is_contiguous()
        with d.holding(net):  # nested (the training loop evaluating the model it trains): left as it is
            pass
        assert net[0].weight.is_contiguous(memory_format=cl) and not net[0].weight.is_contiguous()
        assert d.layout(torch.zeros(2, 3, 8, 8)).is_contiguous(memory_format=cl)
    assert net[0].weight.is_contiguous() and net[1].weight.device.type == "cpu"


def test_batch_and_learning_rate_scale_together():
    assert CPU.scaled_batch(64, 10_000) == (64, 1.0)
    assert Device(batch_scale=4).scaled_batch(64, 10_000) == (256, 2.0)
    assert Device(batch_scale=4).scaled_batch(64, 100) == (100, 1.25)  # capped by the data: lr x sqrt(100/64)
    two = Device(world=World(0, 2, 0, "gloo"))
    assert two.scaled_batch(15, 1000) == (14, pytest.approx((14 / 15) ** 0.5))  # a multiple of the world size
    with pytest.raises(SlimshipError, match="cannot be shared by 4 processes"):
        Device(world=World(0, 4, 0, "gloo")).scaled_batch(64, 3)


def test_the_recipe_section_chooses_the_device():
    from slimship.recipe import parse_recipe

    base = {"model": {"architecture": "test_efficientnet"}, "data": {"source": "x"}}
    assert parse_recipe(base).device.type == "auto"
    r = parse_recipe({**base, "device": {"type": "cpu", "precision": "bf16", "batch_scale": 2}})
    assert (r.device.type, r.device.precision, r.device.batch_scale) == ("cpu", "bf16", 2)
    with pytest.raises(SlimshipError, match="device.type"):
        parse_recipe({**base, "device": {"type": "gpu"}})


def test_the_recipe_sets_the_micro_batch():
    from slimship.api.run import run_device
    from slimship.recipe import parse_recipe

    base = {"model": {"architecture": "test_efficientnet"}, "data": {"source": "x"}}
    assert parse_recipe(base).device.micro_batch == "auto"
    for value, want in ((8, 8), (None, None), ("auto", 32)):
        r = parse_recipe({**base, "device": {"type": "cpu", "micro_batch": value}})
        assert run_device(r).micro_batch == want
    for bad in (0, -3, "half"):
        with pytest.raises(SlimshipError, match="micro_batch"):
            parse_recipe({**base, "device": {"micro_batch": bad}})
