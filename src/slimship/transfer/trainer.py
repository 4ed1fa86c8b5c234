"""The one training loop: fine-tune, partial fine-tune, gradual unfreezing, scratch, distilled recovery, QAT.

Every trainer in slimship is this loop with a different :class:`TrainConfig`. Where it runs and in which
precision, memory layout and with which other processes (torch.distributed) comes from one
:class:`~slimship.core.device.Device`, decided once per run; which parameters form the layer groups
(freezing, LR decay) comes from the model's adapter. On the device the stored uint8 examples stay resident when
they fit, and augmentation and normalisation run there; a batch grows with ``Device.batch_scale`` and the
learning rate with its square root. The budget is epochs or
wall-clock seconds; the learning-rate schedule follows *progress* (the larger of step and time fraction),
so a seconds budget gets a full warm-up/cosine schedule too. The best state on the validation split is kept.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from slimship.core.device import CPU, Device
from slimship.core.errors import RecipeError
from slimship.core.preprocessing import Preprocessing, rate_unit
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
    images_per_second: float  # all processes together
    history: list[dict] = field(default_factory=list)
    epochs: float = 0.0  # passes over the training split actually made (images seen / training images)
    device: dict = field(default_factory=dict)  # where it trained (Device.describe())


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, pre: Preprocessing, batch_size: int | None = None,
                   device: Device = CPU) -> torch.Tensor:
    """Logits (float32, on the CPU) of stored examples ``x``, in eval mode, computed on ``device`` (this process
    alone: see :func:`accuracy` for the sharded count)."""
    bs = batch_size or device.eval_batch
    was = model.training
    out = []
    with device.holding(model):
        model.eval()
        for i in range(0, len(x), bs):
            with device.autocast():
                out.append(model(device.layout(pre.model_input(device.put(x[i : i + bs])))).float().cpu())
    model.train(was)
    return torch.cat(out) if out else torch.zeros(0)


def accuracy(model: nn.Module, data: Examples, pre: Preprocessing, device: Device = CPU) -> float:
    """Top-1 accuracy on ``data``. Under torch.distributed every process counts its share of ``data`` and the
    counts are all-reduced, so all processes get the same figure (call it on all of them)."""
    return val_scores(model, data, pre, device)[0]


@torch.no_grad()
def val_scores(model: nn.Module, data: Examples, pre: Preprocessing, device: Device = CPU) -> tuple[float, float]:
    """(top-1 accuracy, mean cross-entropy) on ``data``, all-reduced like :func:`accuracy`. The loss tells apart
    states that a small validation split scores alike (on 424 texts, 99.76 % is one error)."""
    if len(data) == 0:
        return float("nan"), float("nan")
    part = device.world.shard(len(data))
    x, y = data.x[part], data.y[part]
    correct = torch.zeros((), dtype=torch.int64)
    loss = torch.zeros((), dtype=torch.float64)
    if len(y):
        bs = device.eval_batch
        was = model.training
        with device.holding(model):
            model.eval()
            for i in range(0, len(y), bs):
                with device.autocast():
                    logits = model(device.layout(pre.model_input(device.put(x[i : i + bs]))))
                yb = device.put(y[i : i + bs])
                correct = correct + (logits.argmax(1) == yb).sum().cpu()
                loss = loss + F.cross_entropy(logits.float(), yb, reduction="sum").double().cpu()
        model.train(was)
    counts = device.world.all_reduce_(torch.tensor([float(correct), float(loss), len(y)], dtype=torch.float64))
    return float(counts[0] / counts[2]), float(counts[1] / counts[2])


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


class EpochShards:
    """Which training examples each step takes, as ``torch.utils.data.DistributedSampler`` shards them: every
    epoch is a permutation drawn from ``seed + epoch`` (``set_epoch``), and process ``r`` of ``W`` takes every
    W-th example of it. A step's global batch is ``B`` consecutive examples of the permutation; process ``r``
    takes ``batch[r::W]``, which is exactly its sampler shard's next ``B / W`` examples. So the processes
    together see the batches a single process sees, and DDP's averaged gradient is the single-process one.
    """

    def __init__(self, n: int, world, seed: int):
        self.n, self.world, self.seed, self.perm = n, world, seed, None

    def set_epoch(self, epoch: int, device=None) -> None:
        """Draw epoch ``epoch``'s permutation (kept on ``device``: where the examples are)."""
        g = torch.Generator().manual_seed(self.seed + epoch)  # as DistributedSampler draws it
        self.perm = torch.randperm(self.n, generator=g).to(device or "cpu")

    def batch(self, k: int, size: int) -> torch.Tensor:
        """The ``k``-th global batch of the epoch (indices); :meth:`mine` picks this process's share of rows."""
        return self.perm[k * size : (k + 1) * size]

    def mine(self, rows):
        return rows[self.world.rank :: self.world.size] if self.world.distributed else rows


class _Net:
    """The module the training step calls: the model itself, under DDP when the run has several processes, and
    compiled when the device asks. Rebuilt when the set of trainable parameters changes (DDP registers its
    gradient hooks for the parameters that train when it is built)."""

    def __init__(self, model: nn.Module, device: Device, bn: str):
        self.model, self.device, self.bn = model, device, bn
        self.trainable: tuple | None = None
        self.net: nn.Module = model
        self.ddp: nn.Module | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self._refresh()
        return self.net(x)

    def _refresh(self) -> None:
        now = tuple(p.requires_grad for p in self.model.parameters())
        if now != self.trainable:
            self.trainable, self.net = now, self._build()

    def accumulating(self, more: bool):
        """Context for one pass of a batch; with ``more`` passes to come, DDP keeps the gradients local (they are
        averaged once, after the batch's last pass)."""
        self._refresh()
        return self.ddp.no_sync() if more and self.ddp is not None else contextlib.nullcontext()

    def _build(self) -> nn.Module:
        net: nn.Module = self.model
        d = self.device
        self.ddp = None
        if d.world.distributed:
            import inspect

            from torch.nn.parallel import DistributedDataParallel as DDP

            # frozen BatchNorm statistics never change: no need to send rank 0's buffers before every forward
            sync = self.bn == "train"
            newer = "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters  # torch >= 2.14
            net = self.ddp = DDP(net, device_ids=[d.index] if d.type == "cuda" else None,
                                 **({"forward_sync_buffers": sync} if newer else {"broadcast_buffers": sync}))
        if d.compile != "off":
            net = torch.compile(net, mode=None if d.compile == "default" else d.compile)
        return net


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
    extra_loss: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> TrainResult:
    """Train ``model`` in place and leave it at its best validation state, where it was (the CPU).

    Args:
        train_data/val_data: stored examples (``pre`` turns a batch into model input, on the device).
        groups: parameter names from input to output, the classifier last (the adapter's ``layer_groups``);
            needed for ``freeze_stages``, ``gradual_unfreeze`` and ``layer_decay``. None: one group.
        teacher: distil from it when ``cfg.kd_alpha > 0`` (soft targets at ``cfg.kd_temperature``), or when
            ``extra_loss`` is set (the teacher runs on every batch, for the hooks such a loss reads).
        extra_loss: called as ``extra_loss(x)`` with each pass's input after the model's (and the teacher's)
            forward pass; its value is added to that pass's loss (hidden-state distillation, whose forward hooks
            collected what it compares).
        after_step: called as ``after_step(model, progress)`` after each optimizer step (pruning schedules,
            masks), with the model on the device; must keep the model trainable.
        progress: a slimship progress reporter (``.task(desc, total)`` → ``.advance(n)``), or None.
        device: where to train, in which precision and layout, with which other processes (the run's one
            :class:`Device`). Under torch.distributed every process calls this with the same arguments; each
            takes its shard of every global batch (:class:`EpochShards`), gradients are averaged by DDP,
            validation counts are all-reduced and a seconds budget ends for all at once.
    """
    if cfg.epochs is None and cfg.seconds is None:
        raise ValueError("TrainConfig needs epochs or seconds")
    if groups is None:
        if cfg.freeze_stages or cfg.gradual_unfreeze or cfg.layer_decay:
            raise ValueError("freeze_stages, gradual_unfreeze and layer_decay need the model's layer groups")
        groups = [[n for n, _ in model.named_parameters()]]
    if cfg.freeze_stages >= len(groups):
        raise RecipeError(f"transfer.freeze_stages {cfg.freeze_stages} would freeze the whole model, classifier "
                          f"included (it has {len(groups)} layer groups): use at most {len(groups) - 1}")
    with device.holding(model, teacher):
        return _train(model, train_data, val_data, pre, cfg, groups, teacher, after_step, progress, desc, device,
                      extra_loss)


def _loss(net, teacher, xb, yb, cfg, device, extra_loss=None) -> torch.Tensor:
    """The mean training loss of one pass: cross-entropy, mixed with distillation from ``teacher`` when set, plus
    ``extra_loss(xb)`` when given."""
    with device.autocast():
        logits = net(xb).float()
        loss = F.cross_entropy(logits, yb, label_smoothing=cfg.label_smoothing)
        if teacher is not None and (cfg.kd_alpha > 0 or extra_loss is not None):
            with torch.no_grad():
                t_logits = teacher(xb).float()
            if cfg.kd_alpha > 0:
                T = cfg.kd_temperature
                kd = F.kl_div(F.log_softmax(logits / T, 1), F.log_softmax(t_logits / T, 1), log_target=True,
                              reduction="batchmean")
                loss = (1 - cfg.kd_alpha) * loss + cfg.kd_alpha * kd * T * T
        if extra_loss is not None:
            loss = loss + extra_loss(xb)
    return loss


def _train(model, train_data, val_data, pre, cfg, groups, teacher, after_step, progress, desc, device,
           extra_loss) -> TrainResult:
    world = device.world
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)  # augmentation draws: the same on every process
    train_x, train_y = device.stage(train_data.x), device.stage(train_data.y)
    val_data = Examples(device.stage(val_data.x), device.stage(val_data.y))

    def set_trainable(first: int) -> None:
        set_trainable_(model, groups, first)
        for name, p in model.named_parameters():
            if name in cfg.frozen:
                p.requires_grad_(False)

    set_trainable(cfg.freeze_stages)
    n = len(train_y)
    bs, lr_scale = device.scaled_batch(cfg.batch_size, n)
    opt = torch.optim.AdamW(_param_groups(model, cfg, groups), lr=cfg.lr * lr_scale, fused=device.type == "cuda")
    net = _Net(model, device, cfg.bn)
    shards = EpochShards(n, world, cfg.seed)
    steps_per_epoch = max(1, n // bs)
    total_steps = math.ceil(cfg.epochs * steps_per_epoch) if cfg.epochs else None
    eval_points = sorted({cfg.eval_from + (1 - cfg.eval_from) * (i + 1) / cfg.evals for i in range(cfg.evals)})
    best_acc, best_loss, best_state = -1.0, math.inf, None
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
        if cfg.seconds and world.distributed:
            elapsed = world.max(elapsed)  # every process must see the budget end at the same step
        p_steps = step / total_steps if total_steps else 0.0
        p_time = elapsed / cfg.seconds if cfg.seconds else 0.0
        prog = min(1.0, max(p_steps, p_time))
        if next_eval < len(eval_points) and prog >= eval_points[next_eval] - 1e-9:
            acc, loss = val_scores(model, val_data, pre, device)
            history.append({"step": step, "progress": round(prog, 3), "val_accuracy": acc, "val_loss": round(loss, 5),
                            "seconds": round(elapsed, 1)})
            # the best state: the highest accuracy, and of equal ones the lowest loss (a small split often scores
            # several states alike: the loss then decides, not which came first)
            if not math.isnan(acc) and (acc, -loss) > (best_acc, -best_loss):
                best_acc, best_loss, best_state = acc, loss, copy.deepcopy(model.state_dict())
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
            shards.set_epoch(step // steps_per_epoch, train_x.device)
        idx = shards.batch(step % steps_per_epoch, bs)
        # uint8 rows move (when the data is not on the device already); augmentation and normalisation run
        # there. Every process augments the whole global batch (cheap next to the network) with the same draws
        # and keeps its share, so a distributed run sees exactly the images a single process would.
        xb = device.layout(pre.model_input(shards.mine(pre.augment(device.put(train_x[idx]), gen, cfg.hflip,
                                                                   cfg.shift))))
        yb = device.put(shards.mine(train_y[idx]))
        lr = _lr_at(prog, cfg) * lr_scale
        for g in opt.param_groups:
            g["lr"] = lr * g["lr_scale"]
        opt.zero_grad(set_to_none=True)
        # the batch in passes of at most device.micro_batch examples, each loss weighted by its share: the
        # accumulated gradient is the whole batch's (BatchNorm in train mode normalises per pass, as DDP does)
        mb = device.micro_batch or len(yb)
        for i in range(0, len(yb), mb):
            share = min(mb, len(yb) - i) / len(yb)
            with net.accumulating(more=i + mb < len(yb)):
                (_loss(net, teacher, xb[i : i + mb], yb[i : i + mb], cfg, device, extra_loss) * share).backward()
        opt.step()
        if after_step is not None:
            after_step(model, prog)
        step += 1
        seen += bs
        if task is not None:
            pct = int(prog * 100)
            if pct > pct_reported:
                rate = seen / max(time.perf_counter() - start, 1e-9)
                task.advance(pct - pct_reported, rate=f"{rate:.0f} {rate_unit(pre)}")
                pct_reported = pct
    if best_state is not None:
        model.load_state_dict(best_state)
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    secs = time.perf_counter() - start
    if task is not None:
        task.done()
    return TrainResult(best_acc, step, secs, seen / max(secs, 1e-9), history, epochs=seen / max(n, 1),
                       device=device.describe())
