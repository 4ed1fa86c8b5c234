"""Handlers for the built-in compression methods (registered in slimship.compress).

Each handler receives the current :class:`ModelState`, its config and a :class:`CompressContext` with the
data and the dense teacher; it returns a new state and never touches the test split.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from slimship.compress import ModelState, register_method
from slimship.compress.int8 import Int8Config, quantize_int8
from slimship.compress.prune_channels import PruneChannelsConfig, prune_channels_
from slimship.compress.lowrank import LowRankConfig
from slimship.compress.share import KMeansShareConfig
from slimship.compress.sparsity import UnstructuredConfig
from slimship.compress.weight_only import WeightOnlyConfig


@dataclass
class CompressContext:
    train_x: Any  # uint8 torch [N,C,H,W]
    train_y: Any
    val_x: Any
    val_y: Any
    pre: Any  # Preprocessing
    teacher: Any  # dense fine-tuned nn.Module (eval mode)
    fresh_model: Callable[[], Any]  # builds the untouched architecture (for arch_edits)
    log: Callable[[str], None]
    progress: Any = None
    seed: int = 0
    source: Any = None  # the pretrained model before transfer (its new head untrained), for sparse transfer


def _val_scorer(ctx: CompressContext) -> Callable[[bytes], float]:
    from slimship.data.transforms import to_model_input_np
    from slimship.evaluate.runtime import ort_logits, ort_session

    vx = to_model_input_np(ctx.val_x.numpy(), ctx.pre)
    vy = ctx.val_y.numpy()
    return lambda onnx: float((ort_logits(ort_session(onnx), vx).argmax(1) == vy).mean())


@register_method("int8", Int8Config, terminal=True,
                 help="static int8 (per-channel weights, calibrated activations) for ONNX Runtime; searched on validation")
def _int8(state: ModelState, cfg: Int8Config, ctx: CompressContext) -> ModelState:
    from slimship.data.transforms import to_model_input_np
    from slimship.models.export import export_onnx

    fp32 = export_onnx(state.model, ctx.pre.image_size)
    rng = np.random.default_rng(ctx.seed)
    idx = rng.permutation(len(ctx.train_x))[: cfg.calibration_images]
    calib = to_model_input_np(ctx.train_x[np.sort(idx)].numpy(), ctx.pre)
    score = _val_scorer(ctx)
    res = quantize_int8(fp32, calib, score, cfg, log=ctx.log)
    onnx, notes = res.onnx, {"choice": res.choice, "trials": res.trials}
    if cfg.qat is not None:
        onnx, notes["qat"] = _int8_qat(res.onnx, max(t["val_accuracy"] for t in res.trials), cfg.qat, score, ctx)
    return ModelState(model=state.model, onnx=onnx, arch_edits=state.arch_edits,
                      notes={**state.notes, "int8": notes})


def _int8_qat(qdq: bytes, ptq_val: float, rec, score, ctx: CompressContext) -> tuple[bytes, dict]:
    """Distilled quantization-aware fine-tune of the int8 graph itself; the better graph on validation wins."""
    from slimship.compress.qat import QDQGraphModule
    from slimship.transfer.finetune import train

    module = QDQGraphModule(qdq)
    train(module, ctx.train_x, ctx.train_y, ctx.val_x, ctx.val_y, ctx.pre, _recovery_config(rec, ctx),
          teacher=ctx.teacher, progress=ctx.progress, desc="int8 qat")
    tuned = module.to_onnx()
    val = score(tuned)  # measured on the graph written back, in ONNX Runtime
    kept = val > ptq_val
    ctx.log(f"int8 qat: val {val:.4f} vs {ptq_val:.4f} after post-training quantization; "
            f"{'kept' if kept else 'discarded'}")
    return (tuned if kept else qdq), {"val_accuracy": val, "ptq_val_accuracy": ptq_val, "kept": kept}


@register_method("prune_channels", PruneChannelsConfig,
                 help="structured channel pruning (Torch-Pruning) in rounds with BN re-estimation and distilled recovery")
def _prune_channels(state: ModelState, cfg: PruneChannelsConfig, ctx: CompressContext) -> ModelState:
    import torch

    from slimship.data.transforms import to_model_input
    from slimship.models.rebuild import arch_edits
    from slimship.transfer.finetune import TrainConfig, train

    model = copy.deepcopy(state.model)
    n = len(ctx.train_x)
    gen = torch.Generator().manual_seed(ctx.seed)
    idx = torch.randperm(n, generator=gen)[: min(n, 1024)]
    calib = [to_model_input(ctx.train_x[idx[i : i + 64]], ctx.pre) for i in range(0, len(idx), 64)]
    rec = cfg.recovery

    def recover(m, rnd: int) -> None:
        tc = TrainConfig(
            seconds=rec.seconds / cfg.steps if rec.seconds else None,
            epochs=rec.epochs / cfg.steps if rec.epochs else None,
            lr=rec.lr, kd_alpha=rec.kd_alpha, kd_temperature=rec.kd_temperature,
            warmup=0.02, evals=1, seed=ctx.seed + rnd, bn="frozen", frozen=_fixed_weights(state),
        )
        r = train(m, ctx.train_x, ctx.train_y, ctx.val_x, ctx.val_y, ctx.pre, tc, teacher=ctx.teacher,
                  progress=ctx.progress, desc=f"recover {rnd + 1}/{cfg.steps}")
        ctx.log(f"recovery round {rnd + 1}: val {r.best_val_accuracy:.4f} ({r.steps} steps, {r.images_per_second:.0f} img/s)")

    def loss_batches():
        j = idx[:128]
        return [(to_model_input(ctx.train_x[j], ctx.pre), ctx.train_y[j])]

    example = to_model_input(ctx.train_x[:1], ctx.pre)
    info = prune_channels_(model, cfg, example, calib, recover, loss_batches, log=ctx.log)
    edits = arch_edits(ctx.fresh_model(), model)
    return ModelState(model=model, arch_edits=edits, notes={**state.notes, "prune_channels": info})


# Layers whose weight values a step fixed (k-means codebooks, weight-only grids) are listed in
# ``notes["fixed_layers"]``; every later recovery fine-tune leaves those weights alone, so a later step never
# undoes an earlier one (sharing and grids survive; their zeros survive anyway).
def _fixed_weights(state: ModelState) -> frozenset[str]:
    return frozenset(f"{n}.weight" for n in state.notes.get("fixed_layers", []))


def _with_fixed(notes: dict, layers) -> dict:
    return {**notes, "fixed_layers": sorted(set(notes.get("fixed_layers", [])) | set(layers))}


def _recovery_config(rec, ctx: CompressContext, frozen: frozenset[str] = frozenset(), evals: int = 1):
    from slimship.transfer.finetune import TrainConfig

    # evals=1: the state kept is the final one, with the final masks/codebooks (an earlier "best" state would
    # predate the last pruning increment).
    return TrainConfig(seconds=rec.seconds, epochs=rec.epochs, lr=rec.lr, kd_alpha=rec.kd_alpha,
                       kd_temperature=rec.kd_temperature, warmup=0.02, evals=evals, seed=ctx.seed, bn="frozen",
                       frozen=frozen)


@register_method("unstructured", UnstructuredConfig,
                 help="magnitude pruning (layer-wise/global, N:M), depthwise/first/last spared, gradual cubic schedule, distilled")
def _unstructured(state: ModelState, cfg: UnstructuredConfig, ctx: CompressContext) -> ModelState:
    from slimship.compress.sparsity import apply_masks_, cubic_sparsity, magnitude_masks, prunable_layers, weight_masks
    from slimship.transfer.finetune import train

    before = cfg.order == "before_transfer"
    if before and ctx.source is None:
        raise ValueError("internal: order before_transfer needs CompressContext.source (the pretrained model)")
    model = copy.deepcopy(ctx.source if before else state.model)
    keep_zero = weight_masks(model)  # zeros from earlier steps stay zero
    layers = prunable_layers(model, cfg.spare)
    cur = {"s": -1.0, "masks": {}}
    per_layer, notes = None, {}
    if cfg.allocation == "sensitivity" and cfg.nm is None:
        per_layer, notes = _sensitivity_allocation(model, layers, cfg, ctx)

    def update(progress: float) -> None:
        oneshot = cfg.schedule == "oneshot" or cfg.nm or before  # sparse transfer: the source is pruned once
        s = cfg.sparsity if oneshot else cubic_sparsity(cfg.sparsity, progress)
        if s - cur["s"] >= 0.005 or (s == cfg.sparsity and cur["s"] != cfg.sparsity):
            cur["masks"] = magnitude_masks(layers, s, cfg, per_layer)
            cur["s"] = s
        apply_masks_(layers, cur["masks"])
        apply_masks_(dict(model.named_modules()), keep_zero)

    update(0.0)
    r = train(model, ctx.train_x, ctx.train_y, ctx.val_x, ctx.val_y, ctx.pre,
              _recovery_config(cfg.recovery, ctx, _fixed_weights(state)),
              teacher=ctx.teacher, after_step=lambda m, p: update(p), progress=ctx.progress,
              desc="sparse transfer" if before else "unstructured")
    update(1.0)
    nz = sum(int((m.weight != 0).sum()) for m in layers.values())
    tot = sum(m.weight.numel() for m in layers.values())
    ctx.log(f"unstructured{' (source pruned, then transferred)' if before else ''}: "
            f"{100 * (1 - nz / max(tot, 1)):.1f} % of {len(layers)} layers' weights are zero; val {r.best_val_accuracy:.4f}")
    return ModelState(model=model, arch_edits=state.arch_edits,
                      notes={**state.notes, "unstructured": {"layer_sparsity": round(1 - nz / max(tot, 1), 4),
                                                             "layers": len(layers), "order": cfg.order, **notes}})


def _sensitivity_allocation(model, layers, cfg: UnstructuredConfig, ctx: CompressContext) -> tuple[dict, dict]:
    """Measure per-layer pruning cost on (a subset of) validation data and allocate the target from it."""
    from slimship.compress.sensitivity import allocate_sparsity, prune_sensitivity
    from slimship.transfer.finetune import accuracy

    vx, vy = ctx.val_x[:500], ctx.val_y[:500]
    levels = [s for s in (0.3, 0.5, 0.7, 0.8, 0.9, 0.95) if s <= cfg.max_layer_sparsity]
    base, table = prune_sensitivity(layers, levels, lambda: accuracy(model, vx, vy, ctx.pre))
    sizes = {n: m.weight.numel() for n, m in layers.items()}
    alloc = allocate_sparsity(table, sizes, cfg.sparsity)
    ctx.log("sensitivity allocation: " + ", ".join(f"{n}={s:.2f}" for n, s in alloc.items()))
    drop = {n: {f"{lvl:g}": d for lvl, d in row.items()} for n, row in table.items()}  # JSON keys are strings
    return alloc, {"sensitivity": {"val_subset_accuracy": base, "drop": drop}, "allocation": alloc}


def _recover_keeping_zeros(model, keep_zero: dict, handled, rec, ctx: CompressContext, desc: str,
                           frozen: frozenset[str] = frozenset()):
    """Distilled recovery fine-tune of a model whose layers in ``handled`` keep their own structure
    (parametrized codebooks / grids); pruned zeros of the other layers are re-applied after every step."""
    from slimship.compress.sparsity import apply_masks_
    from slimship.transfer.finetune import train

    mods = dict(model.named_modules())
    rest = {n: m for n, m in keep_zero.items() if n not in handled}  # pruned, but left alone by this method
    return train(model, ctx.train_x, ctx.train_y, ctx.val_x, ctx.val_y, ctx.pre, _recovery_config(rec, ctx, frozen),
                 teacher=ctx.teacher, after_step=lambda m, p: apply_masks_(mods, rest), progress=ctx.progress,
                 desc=desc)


@register_method("kmeans", KMeansShareConfig,
                 help="k-means weight sharing per layer (zeros preserved) with codebook fine-tuning, distilled")
def _kmeans(state: ModelState, cfg: KMeansShareConfig, ctx: CompressContext) -> ModelState:
    from slimship.compress.share import bake_, share_weights_
    from slimship.compress.sparsity import weight_masks

    model = copy.deepcopy(state.model)
    keep_zero = weight_masks(model)
    info = share_weights_(model, cfg)
    r = _recover_keeping_zeros(model, keep_zero, info, cfg.recovery, ctx, "codebooks", _fixed_weights(state))
    bake_(model)
    ctx.log(f"kmeans: {len(info)} layers shared at {cfg.bits} bits; val {r.best_val_accuracy:.4f}")
    return ModelState(model=model, arch_edits=state.arch_edits,
                      notes=_with_fixed({**state.notes, "kmeans": {"bits": cfg.bits, "layers": len(info)}}, info))


@register_method("lowrank", LowRankConfig,
                 help="low-rank factorization of Linear and 1x1 convs, rank by an energy threshold, distilled recovery")
def _lowrank(state: ModelState, cfg: LowRankConfig, ctx: CompressContext) -> ModelState:
    from slimship.compress.lowrank import factor_lowrank_
    from slimship.models.rebuild import arch_edits
    from slimship.transfer.finetune import train

    model = copy.deepcopy(state.model)
    done = factor_lowrank_(model, cfg)
    if done:
        r = train(model, ctx.train_x, ctx.train_y, ctx.val_x, ctx.val_y, ctx.pre,
                  _recovery_config(cfg.recovery, ctx, _fixed_weights(state)),
                  teacher=ctx.teacher, progress=ctx.progress, desc="low-rank")
        ctx.log(f"lowrank: {len(done)} layers factored; val {r.best_val_accuracy:.4f}")
    else:
        ctx.log("lowrank: no layer met the energy/saving thresholds; model unchanged")
    edits = arch_edits(ctx.fresh_model(), model)
    return ModelState(model=model, arch_edits=edits, notes={**state.notes, "lowrank": {"layers": len(done)}})


@register_method("weight_only", WeightOnlyConfig,
                 help="weight-only int8/int4 (per channel or per group, MSE clipping) for Linear-heavy models; zeros kept")
def _weight_only(state: ModelState, cfg: WeightOnlyConfig, ctx: CompressContext) -> ModelState:
    from slimship.compress.share import bake_
    from slimship.compress.sparsity import weight_masks
    from slimship.compress.weight_only import quantize_weights_

    model = copy.deepcopy(state.model)
    keep_zero = weight_masks(model)
    info = quantize_weights_(model, cfg)
    if cfg.recovery is not None and info:
        r = _recover_keeping_zeros(model, keep_zero, info, cfg.recovery, ctx, "weight-only", _fixed_weights(state))
        ctx.log(f"weight_only recovery: val {r.best_val_accuracy:.4f}")
    bake_(model)  # plain float32 weights, exactly on the grid
    ctx.log(f"weight_only: {len(info)} layers at {cfg.bits} bits ({cfg.granularity})")
    return ModelState(model=model, arch_edits=state.arch_edits,
                      notes=_with_fixed({**state.notes, "weight_only": {
                          "bits": cfg.bits, "granularity": cfg.granularity, "group_size": cfg.group_size,
                          "layers": len(info)}}, info))
