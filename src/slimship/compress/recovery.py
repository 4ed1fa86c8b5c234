"""Recovery fine-tuning, shared by every method that changes weights: a distilled fine-tune from the dense model
on the one training loop, leaving alone what earlier steps fixed.

Layers whose weight values a step fixed (k-means codebooks, weight-only grids) are listed in
``notes["fixed_layers"]``; every later recovery leaves those weights alone, so a later step never undoes an
earlier one (sharing and grids survive; their zeros survive anyway).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from pydantic import BaseModel, ConfigDict, Field

from slimship.compress.base import CompressContext, ModelState

if TYPE_CHECKING:
    import torch
    from torch import nn


class Recovery(BaseModel):
    """The distilled fine-tune after a compression step (a pruning method splits it over its rounds)."""

    model_config = ConfigDict(extra="forbid")
    seconds: float | None = Field(90.0, gt=0)
    epochs: float | None = Field(None, gt=0)
    lr: float = Field(5e-4, gt=0)
    kd_alpha: float = Field(0.7, ge=0, le=1)
    kd_temperature: float = Field(2.0, gt=0)


def fixed_weights(state: ModelState) -> frozenset[str]:
    """Parameter names earlier steps fixed (never trained again)."""
    return frozenset(f"{n}.weight" for n in state.notes.get("fixed_layers", []))


def with_fixed(notes: dict, layers) -> dict:
    """``notes`` with ``layers`` added to the fixed ones."""
    return {**notes, "fixed_layers": sorted(set(notes.get("fixed_layers", [])) | set(layers))}


def recovery_config(rec: Recovery, ctx: CompressContext, frozen: frozenset[str] = frozenset(), *,
                    share: int = 1, seed_offset: int = 0):
    """The trainer config of a recovery: ``1/share`` of its budget (a method that recovers in rounds)."""
    from slimship.transfer.trainer import TrainConfig

    # evals=1: the state kept is the final one, with the final masks/codebooks (an earlier "best" state would
    # predate the last pruning increment).
    return TrainConfig(seconds=rec.seconds / share if rec.seconds else None,
                       epochs=rec.epochs / share if rec.epochs else None, lr=rec.lr, kd_alpha=rec.kd_alpha,
                       kd_temperature=rec.kd_temperature, warmup=0.02, evals=1, seed=ctx.seed + seed_offset,
                       bn="frozen", frozen=frozen)


def recover(model: nn.Module, cfg, ctx: CompressContext, desc: str,
            after_step: Callable[[nn.Module, float], None] | None = None):
    """Distil the dense teacher into ``model`` (in place) with trainer config ``cfg``; returns the TrainResult."""
    from slimship.core.memory import release_memory
    from slimship.transfer.trainer import train

    r = train(model, ctx.train, ctx.val, ctx.pre, cfg, teacher=ctx.teacher, after_step=after_step,
              progress=ctx.progress, desc=desc, device=ctx.device)
    release_memory()  # the optimizer's state and the activations are gone: give their pages back
    # Budgets may be seconds: what actually ran is recorded (the chain runner files it in the step's notes).
    ctx.trainings.append({"desc": desc, "epochs": round(r.epochs, 3), "steps": r.steps, "seconds": round(r.seconds, 1)})
    ctx.log(f"{desc}: {r.epochs:.2f} epochs ({r.steps} steps, {r.seconds:.0f} s)")
    return r


def recover_keeping_zeros(model: nn.Module, keep_zero: dict, handled, rec: Recovery, ctx: CompressContext,
                          desc: str, frozen: frozenset[str] = frozenset()):
    """Distilled recovery of a model whose layers in ``handled`` keep their own structure (parametrized
    codebooks / grids); pruned zeros of the other layers are re-applied after every step."""
    from slimship.compress.sparsity import apply_masks_

    mods = dict(model.named_modules())
    rest = {n: m for n, m in keep_zero.items() if n not in handled}  # pruned, but left alone by this method
    return recover(model, recovery_config(rec, ctx, frozen), ctx, desc,
                   after_step=lambda m, p: apply_masks_(mods, rest))


class TeacherProbe:
    """How far a model's predictions are from the dense teacher's, on (up to) ``n`` validation examples drawn with
    the run's seed: the mean KL divergence of the model's softmax from the teacher's. No training; a few forward
    passes. What greedy structural methods (drop_layers, drop_blocks) minimise when choosing what to remove."""

    def __init__(self, ctx: CompressContext, n: int = 256) -> None:
        import torch

        self.ctx = ctx
        idx = torch.randperm(len(ctx.val), generator=torch.Generator().manual_seed(ctx.seed))[:n]
        self.x = ctx.pre.model_input(ctx.val.x[idx.sort().values])
        self.target = self._log_probs(ctx.teacher)

    def _log_probs(self, model: nn.Module) -> torch.Tensor:
        import torch

        x, bs, dev = self.x, self.ctx.device.eval_batch, self.ctx.device
        with torch.no_grad(), dev.holding(model):
            out = torch.cat([model(dev.put(x[i:i + bs])).float().cpu() for i in range(0, len(x), bs)])
        return torch.log_softmax(out, 1)

    def gap(self, model: nn.Module) -> float:
        """Mean KL divergence of ``model``'s softmax from the teacher's on the probe examples."""
        import torch

        return float(torch.nn.functional.kl_div(self._log_probs(model), self.target, log_target=True,
                                                reduction="batchmean"))


def traced(model: nn.Module, example: torch.Tensor, hooks: list) -> None:
    """One forward pass of ``example`` in eval mode without gradients, for the ``hooks`` (handles) registered on
    ``model`` to observe; they are removed afterwards and the model's mode is restored."""
    import torch

    try:
        with torch.no_grad():
            was = model.training
            model.eval()
            model(example)
            model.train(was)
    finally:
        for h in hooks:
            h.remove()
