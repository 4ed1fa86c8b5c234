"""Linear probe: features from the frozen backbone, computed once, and a logistic-regression head.

The probe is a strategy of its own and, by default, the head initialisation of the full fine-tune
(LP-FT): starting from a fitted head keeps the first fine-tuning steps from wrecking pretrained features
with gradients from a random classifier.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from slimship.core.device import CPU, Device
from slimship.core.preprocessing import Preprocessing


@torch.no_grad()
def extract_features(adapter, model: nn.Module, x: torch.Tensor, pre: Preprocessing, batch_size: int | None = None,
                     task=None, device: Device = CPU) -> torch.Tensor:
    """Pooled pre-logit features [N, D] (float32, CPU) of stored examples ``x`` (model in eval mode), as the
    model's adapter defines them, computed on ``device``. Under torch.distributed each process computes its
    share and every process gets all of them (call it on all processes)."""
    bs = batch_size or device.eval_batch
    part = x[device.world.shard(len(x))]
    rows = part if len(part) else x[:1]  # an empty share still needs the feature width for the exchange
    out = []
    with device.holding(model):
        model.eval()
        for i in range(0, len(rows), bs):
            with device.autocast():
                out.append(adapter.features(model, device.layout(pre.model_input(device.put(rows[i : i + bs])))).float())
            if task is not None:
                task.advance(len(out[-1]) * device.world.size)
        mine = torch.cat(out)[: len(part)]
        return device.world.all_gather_rows(mine).cpu()


def fit_linear_head(
    train_f: torch.Tensor, train_y: torch.Tensor, val_f: torch.Tensor, val_y: torch.Tensor, num_classes: int,
    l2_grid: tuple[float, ...] = (1e-4, 1e-3, 1e-2), device: Device = CPU,
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Multinomial logistic regression (L-BFGS, float32 on ``device``) on standardised features; L2 picked on
    validation. Every process of a distributed run fits the same head from the same features.

    Returns (weight [K,D], bias [K], info) on the CPU, already mapped back to the raw feature scale, ready to
    copy into the model's classifier.
    """
    train_f, train_y, val_f, val_y = (device.put(t) for t in (train_f, train_y, val_f, val_y))
    mu = train_f.mean(0)
    # Floor the scale: near-constant features (dead ReLU6 channels) would otherwise get weights of 1/1e-6
    # once mapped back to raw scale, and the first fine-tuning step that moves them blows the logits up.
    sd = train_f.std(0)
    sd = sd.clamp_min(0.1 * float(sd.mean()) + 1e-8)
    xt, xv = (train_f - mu) / sd, (val_f - mu) / sd
    best = None
    trials = []
    for l2 in l2_grid:
        w = torch.zeros(num_classes, xt.shape[1], device=xt.device, requires_grad=True)
        b = torch.zeros(num_classes, device=xt.device, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=200, history_size=20, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(xt @ w.T + b, train_y) + l2 * (w * w).sum()
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            # right / total in float64, as the trainer counts: a tie with the fine-tune must stay a tie
            right = ((xv @ w.T + b).argmax(1) == val_y).sum().item()
            acc = right / len(val_y) if len(val_y) else float("nan")
        trials.append({"l2": l2, "val_accuracy": acc})
        if best is None or acc > best[0]:
            best = (acc, w.detach().clone(), b.detach().clone(), l2)
    acc, w, b, l2 = best
    weight = (w / sd).cpu()
    bias = (b - (w * (mu / sd)).sum(1)).cpu()
    return weight, bias, {"l2": l2, "val_accuracy": acc, "trials": trials}


def set_head_(head: nn.Linear, weight: torch.Tensor, bias: torch.Tensor) -> None:
    """Copy a fitted linear head into the model's classifier ``head``."""
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)
