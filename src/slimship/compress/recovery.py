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


class TransformerRecovery(Recovery):
    """The recovery of a method that changes a transformer's layers (``drop_layers``, ``prune_transformer``): it
    also pulls every layer's output toward the teacher's (:class:`HiddenMatch`), weighted ``hidden_kd`` (0: logit
    distillation alone). On SpamAssassin (benchmarks/text_spam.py, MiniLM 6 -> 3 layers, 2 recovery epochs) it
    took the 3-layer model from 98.70 to 99.05 % on validation (the fine-tune: 99.29 %)."""

    hidden_kd: float = Field(1.0, ge=0)


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
            after_step: Callable[[nn.Module, float], None] | None = None,
            extra_loss: Callable[[torch.Tensor], torch.Tensor] | None = None):
    """Distil the dense teacher into ``model`` (in place) with trainer config ``cfg``; returns the TrainResult.
    ``extra_loss`` (e.g. a :class:`HiddenMatch`) is added to every batch's loss (the trainer's argument)."""
    from slimship.core.memory import release_memory
    from slimship.transfer.trainer import train

    r = train(model, ctx.train, ctx.val, ctx.pre, cfg, teacher=ctx.teacher, after_step=after_step,
              progress=ctx.progress, desc=desc, device=ctx.device, extra_loss=extra_loss)
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


def teacher_layers(state: ModelState, n: int) -> list[int]:
    """For each of the ``n`` transformer layers of ``state``'s model, the teacher layer it was copied from (recorded
    by ``drop_layers``; the identity when no layer went)."""
    return list(state.notes.get("teacher_layers", range(n)))


def span_targets(origin: list[int], n_teacher: int) -> list[int]:
    """The teacher layer whose output each student layer should reproduce: the one just before the teacher layer
    the next student layer came from (the input that layer was trained to read), the teacher's last for the last.
    Kept [0, 2, 5] of 6: [1, 4, 5]; nothing dropped: the identity."""
    return [nxt - 1 for nxt in origin[1:]] + [n_teacher - 1]


class HiddenMatch:
    """Hidden-state distillation (TinyBERT-style, Jiao et al. 2020): each student transformer layer's output is
    pulled toward a teacher layer's (``targets``), by their mean squared difference over real tokens (padding left
    out) relative to the teacher output's mean square, averaged over layers and weighted ``weight``. Hidden sizes
    must agree (``drop_layers`` and ``prune_transformer`` keep them). Forward hooks collect the outputs while the
    trainer runs both models; call it with the batch's input after both passes. A context manager: the hooks go on
    exit."""

    def __init__(self, student: nn.Module, teacher: nn.Module, ops, targets: list[int], weight: float) -> None:
        s_layers = student.get_submodule(ops.layer_list(student))
        t_layers = teacher.get_submodule(ops.layer_list(teacher))
        if len(targets) != len(s_layers) or not all(0 <= t < len(t_layers) for t in targets):
            raise ValueError(f"hidden-state targets {targets} do not fit {len(s_layers)} student and "
                             f"{len(t_layers)} teacher layers")
        self.ops, self.student, self.weight = ops, student, weight
        self.pairs = list(enumerate(targets))
        self.s_out: dict[int, torch.Tensor] = {}
        self.t_out: dict[int, torch.Tensor] = {}
        self.hooks = [layer.register_forward_hook(self._keep(self.s_out, i)) for i, layer in enumerate(s_layers)]
        self.hooks += [t_layers[t].register_forward_hook(self._keep(self.t_out, t)) for t in set(targets)]

    @staticmethod
    def _keep(store: dict, i: int):
        def hook(module, args, out):
            store[i] = out[0] if isinstance(out, tuple) else out
        return hook

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.ops.token_mask(self.student, x).unsqueeze(-1).float()
        tokens = mask.sum().clamp_min(1.0)
        total = 0.0
        for s, t in self.pairs:
            ts = self.t_out[t].float().detach()
            scale = ((ts * ts) * mask).sum() / tokens
            total = total + (((self.s_out[s].float() - ts) ** 2) * mask).sum() / tokens / scale.clamp_min(1e-6)
        self.s_out.clear()
        self.t_out.clear()
        return self.weight * total / len(self.pairs)

    def __enter__(self) -> "HiddenMatch":
        return self

    def __exit__(self, *exc) -> None:
        for h in self.hooks:
            h.remove()


def recover_transformer(model: nn.Module, rec: TransformerRecovery, ctx: CompressContext, desc: str, ops,
                        origin: list[int], frozen: frozenset[str] = frozenset(), *, share: int = 1,
                        seed_offset: int = 0):
    """:func:`recover` for a transformer whose layers a method changed, with hidden-state distillation when
    ``rec.hidden_kd`` > 0; ``origin`` names the teacher layer each of ``model``'s layers came from
    (:func:`teacher_layers`), which :func:`span_targets` turns into the outputs to match."""
    cfg = recovery_config(rec, ctx, frozen, share=share, seed_offset=seed_offset)
    if not rec.hidden_kd:
        return recover(model, cfg, ctx, desc)
    n_teacher = len(ctx.teacher.get_submodule(ops.layer_list(ctx.teacher)))
    with HiddenMatch(model, ctx.teacher, ops, span_targets(origin, n_teacher), rec.hidden_kd) as match:
        return recover(model, cfg, ctx, desc, extra_loss=match)


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
