"""Sparse-delta fine-tuning: make a task model that differs from its pretrained base in few weights.

A full fine-tune moves every weight a little, so storing the task as ``base + delta`` costs almost as much
as the task itself. :func:`sparsify_delta_` keeps, per weight tensor, only the ``density`` fraction of
entries that moved most (``|task - base|``) and resets the rest to the base. :func:`train_sparse_delta` does
it gradually during a recovery fine-tune distilled from the full fine-tune (the kept fraction falls from 1 to
``density`` on a cubic schedule, then the kept entries train with the others held at the base, projected
after every optimizer step). 1-D tensors (BatchNorm affine, biases) and tensors the base lacks (the new
head) stay dense: they are a few kilobytes.

The model that comes out is exactly ``base + sparse delta``, so :func:`slimship.package.delta.encode_delta`
with ``density=1`` (every changed entry) stores it at about ``density x (position + value bytes)`` per
weight, and the accuracy measured is that of the stored model, not of an estimate.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from slimship.core.device import CPU, Device


@dataclass
class DeltaMasks:
    """Which entries of each weight tensor may differ from the base; ``base`` holds the base values."""

    masks: dict[str, torch.Tensor]
    base: dict[str, torch.Tensor]

    @property
    def kept(self) -> int:
        return int(sum(int(m.sum()) for m in self.masks.values()))

    @property
    def total(self) -> int:
        return int(sum(m.numel() for m in self.masks.values()))

    @torch.no_grad()
    def project_(self, model: nn.Module) -> None:
        """Put every entry outside its mask back to the base value."""
        params = dict(model.named_parameters())
        for name, mask in self.masks.items():
            p = params[name]
            if mask.device != p.device:  # the model trains on a GPU: masks and base values follow it, once
                self.masks[name] = mask = mask.to(p.device)
                self.base[name] = self.base[name].to(p.device)
            p.copy_(torch.where(mask, p, self.base[name]))


def _delta_tensors(model: nn.Module, base_state: dict[str, torch.Tensor],
                   dense_depthwise: bool = False) -> dict[str, torch.Tensor]:
    """Base values of the weight tensors (2-D and up) that the base holds at the same shape; with
    ``dense_depthwise``, depthwise kernels (``[C, 1, k, k]``: few weights per channel) are left dense."""
    out = {}
    for name, p in model.named_parameters():
        b = base_state.get(name)
        if dense_depthwise and p.ndim == 4 and p.shape[1] == 1:
            continue
        if p.ndim >= 2 and b is not None and tuple(b.shape) == tuple(p.shape) and b.is_floating_point():
            out[name] = b.detach().to(p.dtype).clone()
    return out


@torch.no_grad()
def norm_allocation(model: nn.Module, base_state: dict[str, torch.Tensor], density: float,
                    dense_depthwise: bool = False) -> dict[str, float]:
    """Per-tensor densities with the same total as ``density`` everywhere, each tensor's share proportional to
    its relative change ``rms(task - base) / rms(base)`` (clipped to ``[density / 4, 1]``): tensors the
    fine-tune moved more keep more entries."""
    base = _delta_tensors(model, base_state, dense_depthwise)
    params = dict(model.named_parameters())
    rel = {n: float((params[n] - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt().clamp_min(1e-12)) for n, b in base.items()}
    size = {n: b.numel() for n, b in base.items()}
    total = density * sum(size.values())
    scale_lo, scale_hi = 0.0, 1e6
    for _ in range(60):  # bisect the common factor so that the kept entries add up to the total
        f = (scale_lo + scale_hi) / 2
        kept = sum(size[n] * min(1.0, max(density / 4, f * rel[n])) for n in base)
        scale_lo, scale_hi = (f, scale_hi) if kept < total else (scale_lo, f)
    return {n: min(1.0, max(density / 4, scale_hi * rel[n])) for n in base}


@torch.no_grad()
def sparsify_delta_(model: nn.Module, base_state: dict[str, torch.Tensor], density: float | dict[str, float],
                    masks: DeltaMasks | None = None, dense_depthwise: bool = False) -> DeltaMasks:
    """Keep the ``density`` fraction of largest changes per weight tensor; reset the rest to the base.

    ``base_state`` is the pretrained model's ``state_dict()`` (same parameter names). Tensors the base lacks
    or holds at another shape, and 1-D tensors, are left as they are (stored whole / densely). Passing the
    ``masks`` of an earlier call narrows them (entries already reset stay reset). ``dense_depthwise`` leaves
    depthwise kernels out (they change whole, like the 1-D tensors).
    """
    per = density if isinstance(density, dict) else None
    if per is None and not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    base = masks.base if masks is not None else _delta_tensors(model, base_state, dense_depthwise)
    params = dict(model.named_parameters())
    out = {}
    for name, b in base.items():
        base[name] = b = b.to(params[name].device)  # follows a model that trains on a GPU
        d = (params[name] - b).abs().flatten()
        if masks is not None:
            d = d * masks.masks[name].to(d.device).flatten()
        k = max(1, int(round((per[name] if per is not None else density) * d.numel())))
        if k >= d.numel():
            mask = torch.ones_like(d, dtype=torch.bool)
        else:
            mask = torch.zeros_like(d, dtype=torch.bool)
            mask[torch.topk(d, k, sorted=False).indices] = True
        out[name] = mask.view_as(params[name])
    dm = DeltaMasks(out, base)
    dm.project_(model)
    return dm


def density_at(progress: float, final: float, end: float) -> float:
    """Zhu & Gupta's cubic schedule applied to the delta: 1 at the start, ``final`` from ``end`` on."""
    if end <= 0 or progress >= end:
        return final
    return final + (1.0 - final) * (1.0 - progress / end) ** 3


def train_sparse_delta(model: nn.Module, base_state: dict[str, torch.Tensor], density: float, data, pre, cfg,
                       *, ramp: float = 0.5, updates: int = 25, allocation: str = "uniform",
                       dense_depthwise: bool = False, progress=None, device: Device = CPU) -> tuple[DeltaMasks, object]:
    """Shrink ``model``'s delta to ``density`` gradually while fine-tuning it, distilled from itself (in place).

    ``model`` is the full fine-tune (it is also the teacher, copied first); ``data`` is
    ``(train, val)`` :class:`~slimship.data.task.Examples`; ``cfg`` a :class:`~slimship.transfer.trainer.TrainConfig` (set
    ``kd_alpha`` > 0 to distil). The kept fraction follows :func:`density_at` from 1 down to ``density`` over
    the first ``ramp`` of the budget, narrowing the masks ``updates`` times; then the masks stay fixed and the
    kept entries are trained. ``allocation="norm"`` shares the kept entries out by :func:`norm_allocation`
    (measured on the full fine-tune) instead of the same fraction of every tensor. Only states at the final density count as the best one. Returns the masks and
    the :class:`~slimship.transfer.trainer.TrainResult`.
    """
    from slimship.transfer.trainer import train

    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    if allocation not in ("uniform", "norm"):
        raise ValueError(f"allocation must be 'uniform' or 'norm', got {allocation!r}")
    share = norm_allocation(model, base_state, density, dense_depthwise) if allocation == "norm" else None

    def target(prog: float):
        kept = density_at(prog, density, ramp)  # overall kept fraction at this point of the schedule
        if share is None:
            return kept
        f = (kept - density) / (1 - density) if density < 1 else 1.0  # 0 at the end, 1 at the start
        return {n: d + (1 - d) * f for n, d in share.items()}

    state = {"masks": sparsify_delta_(model, base_state, target(0.0), dense_depthwise=dense_depthwise), "level": 0}

    def step(m: nn.Module, prog: float) -> None:
        level = min(updates, int(prog / ramp * updates)) if ramp > 0 else updates
        if level > state["level"]:
            state["level"] = level
            state["masks"] = sparsify_delta_(m, base_state, target(level / updates * ramp), state["masks"])
        else:
            state["masks"].project_(m)

    train_data, val_data = data
    if ramp > 0:
        # validation passes (and so the best state) only once the delta is at its final density
        evals = max(1, cfg.evals)
        cfg = copy.copy(cfg)
        cfg.eval_from = ramp
        cfg.evals = evals
    r = train(model, train_data, val_data, pre, cfg, teacher=teacher, after_step=step, progress=progress,
              desc=f"delta {density:g}", device=device)
    masks = sparsify_delta_(model, base_state, target(1.0), state["masks"])  # already there; makes it explicit
    return masks, r
