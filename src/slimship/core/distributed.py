"""torch.distributed for a run: which process this is, and the few collectives slimship needs.

A run started by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) joins one process group: NCCL when it
trains on GPUs, gloo on CPUs. A plain run is a world of one, and every helper here is then a no-op, so the
single-process path and the distributed one are the same code. What runs where:

- every process runs the whole pipeline on the same inputs with the same seeds; the training loop shards each
  global batch across them (DDP), and evaluations inside it shard the split and all-reduce the counts;
- only rank 0 reads and writes the stage cache and the run's outputs; the others receive what it read
  (:meth:`World.broadcast_bytes`), and everyone meets at a barrier after a write.

Collectives on bytes and JSON (cache entries, metrics) go through a gloo group even under NCCL, so nothing
travels through the GPU that does not need to, and nothing is ever unpickled: bytes travel as uint8 tensors.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from slimship.core.errors import SlimshipError

_CPU_GROUP: Any = None  # the gloo group for host-side collectives (the default group when it is gloo)


@dataclass(frozen=True)
class World:
    """This process's place in the run: ``rank`` of ``size`` processes (``local_rank`` on its machine)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None  # "nccl" | "gloo" | None (a single process)

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes outputs and the stage cache."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def describe(self) -> dict:
        return {"world_size": self.size, "backend": self.backend} if self.distributed else {"world_size": 1}

    # ---- collectives (no-ops in a world of one) ----------------------------------------------------------
    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier(group=_CPU_GROUP)

    def all_reduce_(self, tensor, op: str = "sum"):
        """Reduce ``tensor`` in place over every process (on the tensor's own device; "sum" or "max")."""
        if self.distributed:
            import torch.distributed as dist

            group = _CPU_GROUP if tensor.device.type == "cpu" else None
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM, group=group)
        return tensor

    def max(self, value: float) -> float:
        """The largest ``value`` any process holds (e.g. elapsed time, so all agree when a budget ends)."""
        if not self.distributed:
            return value
        import torch

        return float(self.all_reduce_(torch.tensor([value], dtype=torch.float64), "max")[0])

    def all_gather_rows(self, tensor):
        """Every process's ``tensor`` [n_r, ...] concatenated in rank order (row counts may differ)."""
        if not self.distributed:
            return tensor
        import torch

        return torch.cat(self._gather_parts(tensor))

    def _gather_parts(self, tensor) -> list:
        """Every process's ``tensor`` [n_r, ...], one per rank (padded to the longest for the exchange)."""
        import torch
        import torch.distributed as dist

        group = _CPU_GROUP if tensor.device.type == "cpu" else None
        count = torch.tensor([tensor.shape[0]], dtype=torch.int64, device=tensor.device)
        counts = [torch.zeros_like(count) for _ in range(self.size)]
        dist.all_gather(counts, count, group=group)
        sizes = [int(c) for c in counts]
        padded = torch.zeros((max(sizes), *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
        padded[: tensor.shape[0]] = tensor
        parts = [torch.empty_like(padded) for _ in range(self.size)]
        dist.all_gather(parts, padded, group=group)
        return [p[:n] for p, n in zip(parts, sizes)]

    def broadcast_bytes(self, data: bytes | None) -> bytes | None:
        """Rank 0's ``data`` (bytes or None) on every process; what other ranks pass is ignored."""
        if not self.distributed:
            return data
        import torch
        import torch.distributed as dist

        head = torch.tensor([-1 if data is None else len(data)] if self.main else [0], dtype=torch.int64)
        dist.broadcast(head, 0, group=_CPU_GROUP)
        n = int(head[0])
        if n < 0:
            return None
        buf = torch.frombuffer(bytearray(data), dtype=torch.uint8) if self.main and n else torch.empty(n, dtype=torch.uint8)
        if n:
            dist.broadcast(buf, 0, group=_CPU_GROUP)
        return data if self.main else buf.numpy().tobytes()

    def broadcast_json(self, obj: Any) -> Any:
        """Rank 0's JSON-able ``obj`` on every process."""
        raw = self.broadcast_bytes(json.dumps(obj, default=str).encode() if self.main else None)
        return json.loads(raw) if raw is not None else None

    def all_gather_json(self, obj: Any) -> list:
        """Every process's JSON-able ``obj``, in rank order."""
        if not self.distributed:
            return [obj]
        import torch

        raw = torch.frombuffer(bytearray(json.dumps(obj, default=str).encode()), dtype=torch.uint8)
        return [json.loads(p.numpy().tobytes()) for p in self._gather_parts(raw)]

    def shard(self, n: int) -> slice:
        """This process's contiguous share of ``n`` items (evaluation; the shares differ by at most one)."""
        lo, hi = self.rank * n // self.size, (self.rank + 1) * n // self.size
        return slice(lo, hi)


SINGLE = World()


def env_world_size() -> int:
    """The world size torchrun asked for (1 when not launched by it)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise SlimshipError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number: launch with torchrun") from None


def join_world(cuda: bool) -> World:
    """Join the process group torchrun set up (once per process; NCCL when ``cuda``, else gloo), or the world of one.

    The timeout covers rank 0 measuring and packaging alone while the others wait (``SLIMSHIP_DIST_TIMEOUT``
    minutes, default 60).
    """
    global _CPU_GROUP

    size = env_world_size()
    if size <= 1:
        return SINGLE
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if cuda else "gloo"
    if not dist.is_initialized():
        timeout = timedelta(minutes=float(os.environ.get("SLIMSHIP_DIST_TIMEOUT", "60")))
        if cuda:
            import torch

            if local >= torch.cuda.device_count():
                raise SlimshipError(f"local rank {local} has no GPU ({torch.cuda.device_count()} visible): use "
                                    "--nproc-per-node at most the number of GPUs")
            torch.cuda.set_device(local)
        dist.init_process_group(backend, timeout=timeout)
        _CPU_GROUP = dist.new_group(backend="gloo", timeout=timeout) if backend != "gloo" else None
    return World(rank, size, local, dist.get_backend())


def leave_world() -> None:
    """Leave the process group (end of a distributed run)."""
    global _CPU_GROUP

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _CPU_GROUP = None
