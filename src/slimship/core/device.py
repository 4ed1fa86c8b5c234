"""Where a run trains, and in which precision: decided in one place and handed to the one training loop.

Every trainer (fine-tune, recovery, distillation, QAT) takes a :class:`Device`; nothing else looks at
``torch.cuda`` or chooses a dtype.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Literal

from slimship.core.errors import SlimshipError


@dataclass(frozen=True)
class Device:
    type: Literal["cpu", "cuda"] = "cpu"
    precision: Literal["fp32", "bf16"] = "fp32"

    def put(self, x):
        """``x`` (a tensor or module) on this device; a no-op on the CPU."""
        return x if self.type == "cpu" else x.to(self.type)

    def autocast(self):
        """The mixed-precision context for forward passes (nothing at fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        import torch

        return torch.autocast(self.type, dtype=torch.bfloat16)

    def describe(self) -> dict:
        return {"device": self.type, "precision": self.precision}


CPU = Device()


def resolve_device(requested: str | None = None, precision: str = "fp32") -> Device:
    """The device a run uses: ``requested`` ("cpu" or "cuda"), else the CPU. Raises SlimshipError for an
    unknown device or for "cuda" on a machine without one."""
    kind = (requested or "cpu").lower()
    if kind not in ("cpu", "cuda"):
        raise SlimshipError(f"unknown device {requested!r}: use cpu or cuda")
    if precision not in ("fp32", "bf16"):
        raise SlimshipError(f"unknown precision {precision!r}: use fp32 or bf16")
    if kind == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SlimshipError("device cuda was asked for, but torch sees no CUDA device: use --device cpu")
    return Device(kind, precision)  # type: ignore[arg-type]
