"""Where a run trains, in which precision and memory layout, and with which other processes: decided once per
run (:func:`resolve_device`) and handed to the one training loop, the probe's feature extraction and every
compression step (recovery, distillation teacher, QAT, calibration batches).

Nothing else looks at ``torch.cuda``, chooses a dtype or asks about torch.distributed: code that trains or
evaluates calls the :class:`Device` it was given (``put``, ``stage``, ``autocast``, ``holding``), and the CPU is
the same code path with ``type="cpu"``.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from dataclasses import dataclass, field
from typing import Literal

from slimship.core.distributed import SINGLE, World
from slimship.core.errors import SlimshipError

# Keep the training data on the GPU when it takes at most this share of the free memory (uint8 images are
# small: W1's 60k images at 96 px are 0.55 GB).
_DATA_SHARE = 0.3


@dataclass(frozen=True)
class Device:
    """A run's device. ``batch_scale`` multiplies every training batch; learning rates then grow by its square
    root (the square-root rule for Adam-type optimizers), so the two always scale together."""

    type: Literal["cpu", "cuda"] = "cpu"
    precision: Literal["fp32", "bf16"] = "fp32"
    index: int | None = None  # the CUDA device (a process's local rank)
    # channels_last models and batches: the fast layout on GPUs, and on the CPU too (on this project's CPU, a
    # Xeon with AVX-512 and oneDNN, a training step of EfficientNet-Lite0 at 64 px took 0.52 instead of 0.85
    # CPU-seconds per batch of 64, inference 3.1 instead of 4.9 ms per image: docs/distributed.md)
    channels_last: bool = True
    batch_scale: int = 1
    compile: Literal["off", "default", "reduce-overhead"] = "off"  # torch.compile of the training forward
    world: World = field(default=SINGLE)
    # most examples one forward/backward pass takes (None: a process's whole share of the batch); a larger batch
    # accumulates its gradients over passes, so training memory stops growing with the batch size
    micro_batch: int | None = None

    @property
    def torch_device(self):
        import torch

        return torch.device(self.type if self.index is None else f"{self.type}:{self.index}")

    @property
    def eval_batch(self) -> int:
        """Batch size for inference passes (evaluation, features, teachers)."""
        return 1024 if self.type == "cuda" else 256

    def put(self, x):
        """``x`` (a tensor or module) on this device (a no-op where it already is)."""
        return x.to(self.torch_device, non_blocking=True)

    def stage(self, x):
        """A whole split for training or evaluation: on the device when it fits, else pinned host memory (the
        batches then move one at a time). On the CPU, ``x`` itself."""
        if self.type == "cpu":
            return x
        import torch

        free, _ = torch.cuda.mem_get_info(self.torch_device)
        if x.numel() * x.element_size() <= _DATA_SHARE * free:
            return x.to(self.torch_device)
        return x.pin_memory()

    def layout(self, x):
        """A model input batch in this device's memory layout (channels_last for image batches)."""
        if self.channels_last and x.ndim == 4:
            import torch

            return x.contiguous(memory_format=torch.channels_last)
        return x

    def autocast(self):
        """The mixed-precision context for forward passes (nothing at fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        import torch

        return torch.autocast(self.type, dtype=torch.bfloat16)

    @contextlib.contextmanager
    def holding(self, *modules):
        """Inside the block every module (None entries skipped) is on this device, in its memory layout;
        afterwards each is back where it came from, in the default layout. Nested blocks leave a module that
        an outer block holds as it is (the training loop evaluates the model it is training)."""
        import torch

        mods = [m for m in modules if m is not None and m not in _HELD]
        homes = [_home(m) for m in mods]
        for m in mods:
            _HELD.add(m)
            m.to(self.torch_device)
            if self.channels_last:
                m.to(memory_format=torch.channels_last)
        try:
            yield
        finally:
            for m, home in zip(mods, homes):
                _HELD.discard(m)
                m.to(home)
                if self.channels_last:
                    m.to(memory_format=torch.contiguous_format)

    def scaled_batch(self, batch_size: int, n: int) -> tuple[int, float]:
        """(global batch, learning-rate factor) for a recipe's ``batch_size`` on ``n`` training examples: the
        batch times ``batch_scale`` (at most ``n``, a multiple of the world size), the rate times the square root
        of the growth."""
        base = max(1, min(batch_size, n))
        bs = min(batch_size * self.batch_scale, n)
        bs -= bs % self.world.size
        if bs < self.world.size:
            raise SlimshipError(f"{n} training examples cannot be shared by {self.world.size} processes: "
                                f"use fewer processes or more data")
        return bs, math.sqrt(bs / base)

    def describe(self) -> dict:
        """What metrics.json records about where figures were trained."""
        d = {"device": self.type if self.index is None else f"{self.type}:{self.index}", "precision": self.precision,
             "channels_last": self.channels_last, **self.world.describe()}
        if self.batch_scale != 1:
            d["batch_scale"] = self.batch_scale
        if self.compile != "off":
            d["compile"] = self.compile
        if self.micro_batch:
            d["micro_batch"] = self.micro_batch
        return d

    def name(self) -> str:
        """The hardware in words (the GPU's model name, or the CPU's)."""
        if self.type == "cuda":
            import torch

            return torch.cuda.get_device_name(self.torch_device)
        return cpu_name()


def cpu_name() -> str:
    """The CPU's model name (Linux), else what ``platform`` knows."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


_HELD: "weakref.WeakSet" = weakref.WeakSet()  # modules a `holding` block has placed on a device


def _home(module):
    p = next(module.parameters(), None)
    if p is None:
        p = next(module.buffers(), None)
    import torch

    return p.device if p is not None else torch.device("cpu")


CPU = Device()


# micro_batch "auto": on the CPU, passes of at most this many examples. A training step of EfficientNet-Lite0 at
# 64 px and batch 64 (with a distillation teacher) peaked at +640 MiB of activations in one pass, +370 MiB in two
# passes of 32, and took 2 % longer (0.518 vs 0.509 s): the photo-memory target (issue 11) is met with it.
CPU_MICRO_BATCH = 32


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles (bf16 matrix units: Sapphire Rapids and later), as torch sees it."""
    import torch

    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private in torch 2.x: absent means unknown
    try:
        return bool(probe()) if probe is not None else False
    except Exception:  # noqa: BLE001 - a failed probe is a CPU without AMX, never a failed run
        return False


def resolve_device(requested: str | None = None, precision: str | None = None, *, batch_scale: int = 1,
                   compile: str = "off", micro_batch: int | str | None = "auto", cpu_auto: str = "fp32") -> Device:
    """The device a run uses, decided once.

    Args:
        requested: "cpu", "cuda", or None/"auto" (CUDA when torch sees a GPU, else the CPU).
        precision: "fp32", "bf16", or None/"auto" (bf16 autocast on a GPU that supports it; on the CPU,
            ``cpu_auto`` when the CPU has AMX, else fp32).
        batch_scale: every training batch times this, learning rates times its square root.
        compile: torch.compile of the training forward ("off", "default", "reduce-overhead": CUDA graphs).
        micro_batch: most examples per forward/backward pass (gradients accumulate over passes); "auto":
            :data:`CPU_MICRO_BATCH` on the CPU, the whole batch on a GPU; None: the whole batch.
        cpu_auto: what "auto" means on a CPU with AMX: the model kind's faster precision there
            (``ModelAdapter.cpu_precision``).

    Under torchrun (WORLD_SIZE > 1) this joins the process group: NCCL with CUDA (one GPU per local rank),
    gloo on the CPU. Raises SlimshipError for an unknown value or for "cuda" without a GPU.
    """
    if not (micro_batch is None or micro_batch == "auto" or (isinstance(micro_batch, int) and micro_batch >= 1)):
        raise SlimshipError(f"micro_batch {micro_batch!r}: use a positive number of examples, auto or null")
    kind = (requested or "auto").lower()
    if kind not in ("auto", "cpu", "cuda"):
        raise SlimshipError(f"unknown device {requested!r}: use cpu, cuda or auto")
    prec = (precision or "auto").lower()
    if prec not in ("auto", "fp32", "bf16"):
        raise SlimshipError(f"unknown precision {precision!r}: use fp32, bf16 or auto")
    if compile not in ("off", "default", "reduce-overhead"):
        raise SlimshipError(f"unknown compile mode {compile!r}: use off, default or reduce-overhead")
    import torch

    has_cuda = torch.cuda.is_available()
    if kind == "cuda" and not has_cuda:
        raise SlimshipError("device cuda was asked for, but torch sees no CUDA device: use --device cpu")
    kind = "cuda" if kind == "cuda" or (kind == "auto" and has_cuda) else "cpu"
    if prec == "auto" and kind == "cuda":
        prec = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    elif prec == "auto":
        prec = "bf16" if cpu_auto == "bf16" and cpu_has_amx() else "fp32"
    from slimship.core.distributed import join_world

    world = join_world(cuda=kind == "cuda")
    if micro_batch == "auto":
        micro_batch = CPU_MICRO_BATCH if kind == "cpu" else None
    if kind == "cuda":
        if world.local_rank >= torch.cuda.device_count():
            raise SlimshipError(f"local rank {world.local_rank} has no GPU ({torch.cuda.device_count()} visible): "
                                "use --nproc-per-node at most the number of GPUs")
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels once
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return Device("cuda", prec, world.local_rank, batch_scale=batch_scale, compile=compile,  # type: ignore[arg-type]
                      world=world, micro_batch=micro_batch)  # type: ignore[arg-type]
    return Device("cpu", prec, None, batch_scale=batch_scale, compile=compile, world=world,  # type: ignore[arg-type]
                  micro_batch=micro_batch)  # type: ignore[arg-type]
