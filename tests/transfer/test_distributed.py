"""The training loop under torch.distributed (2 gloo processes on the CPU): the same batches as one process,
so the same model."""

import socket

import torch

from slimship.core.distributed import World
from slimship.transfer.trainer import EpochShards


def test_epoch_shards_are_the_distributed_sampler_shards():
    from torch.utils.data import DistributedSampler

    n, world_size, batch = 103, 2, 8
    for rank in range(world_size):
        sampler = DistributedSampler(range(n), num_replicas=world_size, rank=rank, shuffle=True, seed=5, drop_last=True)
        shards = EpochShards(n, World(rank, world_size, 0, "gloo"), seed=5)
        for epoch in (0, 3):
            sampler.set_epoch(epoch)
            shards.set_epoch(epoch)
            mine = torch.cat([shards.mine(shards.batch(k, batch)) for k in range(n // batch)])
            assert mine.tolist() == list(sampler)[: len(mine)]
    one = EpochShards(n, World(), seed=5)
    one.set_epoch(3)
    assert torch.equal(one.mine(one.batch(2, batch)), one.batch(2, batch))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_tiny(world: World, out: str, micro_batch: int | None = None) -> None:
    from slimship.core.device import Device
    from slimship.models.timm_image import parameter_groups
    from slimship.transfer.trainer import TrainConfig, train
    from tests.transfer.test_finetune import _data, _model

    torch.set_num_threads(1)
    T, V = _data()
    teacher, pre = _model()
    m, _ = _model()
    with torch.no_grad():
        m.get_classifier().weight.mul_(0.5)  # differ from the teacher
    cfg = TrainConfig(epochs=2, lr=3e-3, batch_size=16, evals=2, hflip=True, shift=2, gradual_unfreeze=True,
                      kd_alpha=0.5)
    r = train(m, T, V, pre, cfg, groups=parameter_groups(m), teacher=teacher,
              device=Device(world=world, micro_batch=micro_batch))
    if world.main:
        torch.save({"state": m.state_dict(), "history": r.history, "steps": r.steps,
                    "world_size": r.device["world_size"]}, out)


def _worker(rank: int, size: int, port: int, out: str, micro_batch: int | None = None) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=size)
    try:
        _train_tiny(World(rank, size, rank, "gloo"), out, micro_batch)
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_train_the_model_one_process_trains(tmp_path):
    """Augmentation (flips, shifts), gradual unfreezing (DDP rebuilt as groups unfreeze) and distillation: the
    two shards of every global batch together are the single-process batch, so only float rounding differs."""
    _train_tiny(World(), str(tmp_path / "one.pt"))
    torch.multiprocessing.spawn(_worker, args=(2, _free_port(), str(tmp_path / "two.pt")), nprocs=2)
    one, two = (torch.load(tmp_path / f, weights_only=True) for f in ("one.pt", "two.pt"))
    assert one["steps"] == two["steps"] == 10
    assert [h["val_accuracy"] for h in one["history"]] == [h["val_accuracy"] for h in two["history"]]
    diff = max(float((one["state"][k].float() - two["state"][k].float()).abs().max()) for k in one["state"])
    assert diff < 1e-4, diff
    assert (one["world_size"], two["world_size"]) == (1, 2)


def test_two_gloo_processes_in_micro_batches_train_the_model_one_process_trains(tmp_path):
    """Each process runs its 8 examples of a batch in passes of 3, 3 and 2 (gradients averaged across processes
    only after the last pass, DDP rebuilt as groups unfreeze): the model one process trains in whole batches."""
    _train_tiny(World(), str(tmp_path / "one.pt"))
    torch.multiprocessing.spawn(_worker, args=(2, _free_port(), str(tmp_path / "two.pt"), 3), nprocs=2)
    one, two = (torch.load(tmp_path / f, weights_only=True) for f in ("one.pt", "two.pt"))
    assert one["steps"] == two["steps"] == 10
    diff = max(float((one["state"][k].float() - two["state"][k].float()).abs().max()) for k in one["state"])
    assert diff < 1e-4, diff
