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
            p.copy_(torch.where(mask, p, self.base[name]))


def _delta_tensors(model: nn.Module, base_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Names of the weight tensors (2-D and up) that the base holds at the same shape."""
    out = {}
    for name, p in model.named_parameters():
        b = base_state.get(name)
        if p.ndim >= 2 and b is not None and tuple(b.shape) == tuple(p.shape) and b.is_floating_point():
            out[name] = b.detach().to(p.dtype).clone()
    return out


@torch.no_grad()
def sparsify_delta_(model: nn.Module, base_state: dict[str, torch.Tensor], density: float,
                    masks: DeltaMasks | None = None) -> DeltaMasks:
    """Keep the ``density`` fraction of largest changes per weight tensor; reset the rest to the base.

    ``base_state`` is the pretrained model's ``state_dict()`` (same parameter names). Tensors the base lacks
    or holds at another shape, and 1-D tensors, are left as they are (stored whole / densely). Passing the
    ``masks`` of an earlier call narrows them (entries already reset stay reset).
    """
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    base = masks.base if masks is not None else _delta_tensors(model, base_state)
    params = dict(model.named_parameters())
    out = {}
    for name, b in base.items():
        d = (params[name] - b).abs().flatten()
        if masks is not None:
            d = d * masks.masks[name].flatten()
        k = max(1, int(round(density * d.numel())))
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
                       *, ramp: float = 0.5, updates: int = 25, progress=None) -> tuple[DeltaMasks, object]:
    """Shrink ``model``'s delta to ``density`` gradually while fine-tuning it, distilled from itself (in place).

    ``model`` is the full fine-tune (it is also the teacher, copied first); ``data`` is
    ``(train_x, train_y, val_x, val_y)``; ``cfg`` a :class:`~slimship.transfer.finetune.TrainConfig` (set
    ``kd_alpha`` > 0 to distil). The kept fraction follows :func:`density_at` from 1 down to ``density`` over
    the first ``ramp`` of the budget, narrowing the masks ``updates`` times; then the masks stay fixed and the
    kept entries are trained. Only states at the final density count as the best one. Returns the masks and
    the :class:`~slimship.transfer.finetune.TrainResult`.
    """
    from slimship.transfer.finetune import train

    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    state = {"masks": sparsify_delta_(model, base_state, density_at(0.0, density, ramp)), "level": 0}

    def step(m: nn.Module, prog: float) -> None:
        level = min(updates, int(prog / ramp * updates)) if ramp > 0 else updates
        if level > state["level"]:
            state["level"] = level
            state["masks"] = sparsify_delta_(m, base_state, density_at(level / updates * ramp, density, ramp),
                                             state["masks"])
        else:
            state["masks"].project_(m)

    X, Y, VX, VY = data
    if ramp > 0:
        # validation passes (and so the best state) only once the delta is at its final density
        evals = max(1, cfg.evals)
        cfg = copy.copy(cfg)
        cfg.eval_from = ramp
        cfg.evals = evals
    r = train(model, X, Y, VX, VY, pre, cfg, teacher=teacher, after_step=step, progress=progress,
              desc=f"delta {density:g}")
    masks = sparsify_delta_(model, base_state, density, state["masks"])  # already there; makes it explicit
    return masks, r
