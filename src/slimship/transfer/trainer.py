"""The one training loop: fine-tune, partial fine-tune, gradual unfreezing, scratch, distilled recovery, QAT.

Every trainer in slimship is this loop with a different :class:`TrainConfig`. Where it runs and in which
precision comes from one :class:`~slimship.core.device.Device`, decided once per run; which parameters form
the layer groups (freezing, LR decay) comes from the model's adapter. The budget is epochs or
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

from slimship.core.device import CPU, Device
from slimship.core.preprocessing import Preprocessing
from slimship.data.task import Examples


def set_trainable_(model: nn.Module, groups: list[list[str]], first_trainable: int) -> None:
    """Freeze groups [0, first_trainable); train the rest (classifier included)."""
    trainable = {n for g in groups[first_trainable:] for n in g}
    for n, p in model.named_parameters():
        p.requires_grad_(n in trainable)


def bn_eval_(model: nn.Module) -> None:
    """Keep BatchNorm running statistics fixed (affine parameters still train).

    With small CPU budgets, BatchNorm in train mode re-estimates ImageNet statistics from a few hundred
    batches of a very different domain and loses up to 20 points (REFERENCE.md W0); frozen statistics do not.
    """
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


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
    epochs: float = 0.0  # passes over the training split actually made (images seen / training images)


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, pre: Preprocessing, batch_size: int = 256,
                   device: Device = CPU) -> torch.Tensor:
    """Logits (float32, on the CPU) of stored examples ``x``, in eval mode."""
    was = model.training
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        with device.autocast():
            out.append(model(device.put(pre.model_input(x[i : i + batch_size]))).float().cpu())
    model.train(was)
    return torch.cat(out) if out else torch.zeros(0)


def accuracy(model: nn.Module, data: Examples, pre: Preprocessing, device: Device = CPU) -> float:
    if len(data) == 0:
        return float("nan")
    return (predict_logits(model, data.x, pre, device=device).argmax(1) == data.y).float().mean().item()


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
    train_data: Examples,
    val_data: Examples,
    pre: Preprocessing,
    cfg: TrainConfig,
    *,
    groups: list[list[str]] | None = None,
    teacher: nn.Module | None = None,
    after_step: Callable[[nn.Module, float], None] | None = None,
    progress=None,
    desc: str = "train",
    device: Device = CPU,
) -> TrainResult:
    """Train ``model`` in place and leave it at its best validation state (on the CPU).

    Args:
        train_data/val_data: stored examples (``pre`` turns a batch into model input).
        groups: parameter names from input to output, the classifier last (the adapter's ``layer_groups``);
            needed for ``freeze_stages``, ``gradual_unfreeze`` and ``layer_decay``. None: one group.
        teacher: distil from it when ``cfg.kd_alpha > 0`` (soft targets at ``cfg.kd_temperature``).
        after_step: called as ``after_step(model, progress)`` after each optimizer step (pruning schedules,
            masks); must keep the model trainable.
        progress: a slimship progress reporter (``.task(desc, total)`` → ``.advance(n)``), or None.
        device: where to train and in which precision (the run's one :class:`Device`).
    """
    if cfg.epochs is None and cfg.seconds is None:
        raise ValueError("TrainConfig needs epochs or seconds")
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    if groups is None:
        if cfg.freeze_stages or cfg.gradual_unfreeze or cfg.layer_decay:
            raise ValueError("freeze_stages, gradual_unfreeze and layer_decay need the model's layer groups")
        groups = [[n for n, _ in model.named_parameters()]]
    train_x, train_y = train_data.x, train_data.y
    model = device.put(model)
    if teacher is not None:
        teacher = device.put(teacher)

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
            acc = accuracy(model, val_data, pre, device)
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
        xb = device.put(pre.model_input(pre.augment(train_x[idx], gen, cfg.hflip, cfg.shift)))
        yb = device.put(train_y[idx])
        lr = _lr_at(prog, cfg)
        for g in opt.param_groups:
            g["lr"] = lr * g["lr_scale"]
        with device.autocast():
            logits = model(xb).float()
            loss = F.cross_entropy(logits, yb, label_smoothing=cfg.label_smoothing)
            if teacher is not None and cfg.kd_alpha > 0:
                with torch.no_grad():
                    t_logits = teacher(xb).float()
                T = cfg.kd_temperature
                kd = F.kl_div(F.log_softmax(logits / T, 1), F.log_softmax(t_logits / T, 1), log_target=True,
                              reduction="batchmean")
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
    return TrainResult(best_acc, step, secs, seen / max(secs, 1e-9), history, epochs=seen / max(n, 1))
