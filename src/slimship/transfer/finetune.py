"""The one training loop: fine-tune, partial fine-tune, gradual unfreezing, scratch, distilled recovery.

Every trainer in slimship is this loop with a different :class:`TrainConfig`. The budget is epochs or
wall-clock seconds; the learning-rate schedule follows *progress* (the larger of step and time fraction),
so a seconds budget gets a full warm-up/cosine schedule too. The best state on the validation split is kept.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from slimship.data.transforms import Preprocessing, augment, to_model_input
from slimship.transfer.layers import bn_eval_, parameter_groups, set_trainable_


@dataclass
class TrainConfig:
    epochs: float | None = None
    seconds: float | None = None
    lr: float = 1e-3
    weight_decay: float = 0.05
    batch_size: int = 64
    label_smoothing: float = 0.1
    warmup: float = 0.05  # fraction of the budget
    bn: str = "frozen"  # "frozen" (statistics fixed) or "train"
    freeze_stages: int = 0  # groups (stem, stages...) kept frozen throughout
    gradual_unfreeze: bool = False  # unfreeze from the top down over the first half of the budget
    layer_decay: float | None = None  # lr multiplier per group below the top
    head_lr_mult: float = 1.0
    hflip: bool = True
    shift: int = 0
    evals: int = 5  # validation passes over the budget (best state kept)
    eval_from: float = 0.0  # validation passes spread over (eval_from, 1] of the budget (after a schedule ends)
    kd_alpha: float = 0.0  # weight of the distillation loss (needs a teacher)
    kd_temperature: float = 2.0
    seed: int = 0
    frozen: frozenset[str] = frozenset()  # parameter names never trained (weights an earlier step fixed)


@dataclass
class TrainResult:
    best_val_accuracy: float
    steps: int
    seconds: float
    images_per_second: float
    history: list[dict] = field(default_factory=list)


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, pre: Preprocessing, batch_size: int = 256) -> torch.Tensor:
    was = model.training
    model.eval()
    out = [model(to_model_input(images[i : i + batch_size], pre)) for i in range(0, len(images), batch_size)]
    model.train(was)
    return torch.cat(out) if out else torch.zeros(0)


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, pre: Preprocessing) -> float:
    if len(images) == 0:
        return float("nan")
    return (predict_logits(model, images, pre).argmax(1) == labels).float().mean().item()


def _param_groups(model: nn.Module, cfg: TrainConfig, groups: list[list[str]]) -> list[dict]:
    params = dict(model.named_parameters())
    out = []
    n = len(groups)
    for depth, names in enumerate(groups):
        scale = cfg.layer_decay ** (n - 1 - depth) if cfg.layer_decay else 1.0
        if depth == n - 1:
            scale *= cfg.head_lr_mult
        for decay in (True, False):
            ps = [params[k] for k in names if (params[k].ndim > 1) == decay]
            if ps:
                out.append({"params": ps, "lr_scale": scale, "weight_decay": cfg.weight_decay if decay else 0.0})
    return out


def _lr_at(progress: float, cfg: TrainConfig) -> float:
    if progress < cfg.warmup:
        return cfg.lr * max(progress / cfg.warmup, 0.01)
    t = (progress - cfg.warmup) / max(1e-8, 1 - cfg.warmup)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def train(
    model: nn.Module,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    pre: Preprocessing,
    cfg: TrainConfig,
    *,
    teacher: nn.Module | None = None,
    after_step: Callable[[nn.Module, float], None] | None = None,
    progress=None,
    desc: str = "train",
) -> TrainResult:
    """Train ``model`` in place and leave it at its best validation state.

    Args:
        train_x/val_x: uint8 [N,C,H,W] at ``pre.image_size``; train_y/val_y: int64 [N].
        teacher: distil from it when ``cfg.kd_alpha > 0`` (soft targets at ``cfg.kd_temperature``).
        after_step: called as ``after_step(model, progress)`` after each optimizer step (pruning schedules,
            masks); must keep the model trainable.
        progress: a slimship progress reporter (``.task(desc, total)`` → ``.advance(n)``), or None.
    """
    if cfg.epochs is None and cfg.seconds is None:
        raise ValueError("TrainConfig needs epochs or seconds")
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    groups = parameter_groups(model)

    def set_trainable(first: int) -> None:
        set_trainable_(model, groups, first)
        for name, p in model.named_parameters():
            if name in cfg.frozen:
                p.requires_grad_(False)

    set_trainable(cfg.freeze_stages)
    opt = torch.optim.AdamW(_param_groups(model, cfg, groups), lr=cfg.lr)
    n = len(train_x)
    bs = min(cfg.batch_size, n)
    steps_per_epoch = max(1, n // bs)
    total_steps = math.ceil(cfg.epochs * steps_per_epoch) if cfg.epochs else None
    eval_points = sorted({cfg.eval_from + (1 - cfg.eval_from) * (i + 1) / cfg.evals for i in range(cfg.evals)})
    best_acc, best_state = -1.0, None
    history: list[dict] = []
    if teacher is not None:
        teacher.eval()
    task = progress.task(desc, total=100) if progress else None
    start = time.perf_counter()
    step = seen = 0
    pct_reported = 0
    next_eval = 0
    while True:
        elapsed = time.perf_counter() - start
        p_steps = step / total_steps if total_steps else 0.0
        p_time = elapsed / cfg.seconds if cfg.seconds else 0.0
        prog = min(1.0, max(p_steps, p_time))
        if next_eval < len(eval_points) and prog >= eval_points[next_eval] - 1e-9:
            acc = accuracy(model, val_x, val_y, pre)
            history.append({"step": step, "progress": round(prog, 3), "val_accuracy": acc, "seconds": round(elapsed, 1)})
            if acc > best_acc:
                best_acc, best_state = acc, copy.deepcopy(model.state_dict())
            while next_eval < len(eval_points) and prog >= eval_points[next_eval] - 1e-9:
                next_eval += 1
        if prog >= 1.0:
            break
        if cfg.gradual_unfreeze:
            # top group first; one more group every (0.5 / groups) of the budget
            k = len(groups) - 1 - int(prog / 0.5 * (len(groups) - 1))
            set_trainable(max(cfg.freeze_stages, k))
        model.train()
        if cfg.bn == "frozen":
            bn_eval_(model)
        if step % steps_per_epoch == 0:
            perm = torch.randperm(n, generator=gen)
        idx = perm[(step % steps_per_epoch) * bs : (step % steps_per_epoch + 1) * bs]
        xb = to_model_input(augment(train_x[idx], gen, cfg.hflip, cfg.shift), pre)
        yb = train_y[idx]
        lr = _lr_at(prog, cfg)
        for g in opt.param_groups:
            g["lr"] = lr * g["lr_scale"]
        logits = model(xb)
        loss = F.cross_entropy(logits, yb, label_smoothing=cfg.label_smoothing)
        if teacher is not None and cfg.kd_alpha > 0:
            with torch.no_grad():
                t_logits = teacher(xb)
            T = cfg.kd_temperature
            kd = F.kl_div(F.log_softmax(logits / T, 1), F.log_softmax(t_logits / T, 1), log_target=True, reduction="batchmean")
            loss = (1 - cfg.kd_alpha) * loss + cfg.kd_alpha * kd * T * T
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if after_step is not None:
            after_step(model, prog)
        step += 1
        seen += len(idx)
        if task is not None:
            pct = int(prog * 100)
            if pct > pct_reported:
                task.advance(pct - pct_reported, rate=f"{seen / max(time.perf_counter() - start, 1e-9):.0f} img/s")
                pct_reported = pct
    if best_state is not None:
        model.load_state_dict(best_state)
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    secs = time.perf_counter() - start
    if task is not None:
        task.done()
    return TrainResult(best_acc, step, secs, seen / max(secs, 1e-9), history)
