"""Post-training int8 quantization of the whole network (convolutions included) for ONNX Runtime, optionally
followed by quantization-aware fine-tuning of the int8 graph itself (:mod:`.qat`). Static (calibrated) and dynamic
(run-time activation ranges: transformers) settings are searched side by side (:class:`.config.Int8Config`).

Why not the obvious calls: ``quantize_dynamic`` only quantizes weights of convolutions through ConvInteger,
which is 10-17x *slower* and loses ~47 points on EfficientNet-Lite0; per-tensor static quantization loses ~50
points because depthwise kernels (after BatchNorm folding) have per-channel ranges that differ by orders of
magnitude (REFERENCE.md). What works: a static graph (no run-time padding arithmetic), BatchNorm folded first,
per-channel symmetric int8 weights, uint8 activations calibrated on the *target* data, and a small search over
calibration method / range / kept-fp32 layers scored on the validation split, never on test.
"""

from __future__ import annotations

from typing import Callable

from slimship.compress.base import CompressContext, ModelState, register_method
from slimship.compress.int8.config import Int8Config
from slimship.compress.recovery import recover, recovery_config


def _val_scorer(ctx: CompressContext) -> Callable[[bytes], float]:
    from slimship.core.runtime import ort_logits, ort_session

    vx = ctx.pre.model_input_np(ctx.val.x.numpy())
    vy = ctx.val.y.numpy()
    return lambda onnx: float((ort_logits(ort_session(onnx), vx).argmax(1) == vy).mean())


@register_method(Int8Config, terminal=True,
                 help="int8 for ONNX Runtime: static (calibrated activations) and/or dynamic, per-channel weights; "
                      "settings searched on validation")
def _int8(state: ModelState, cfg: Int8Config, ctx: CompressContext) -> ModelState:
    import numpy as np

    from slimship.compress.int8.quantize import quantize_int8

    fp32 = ctx.adapter.export_onnx(state.model)
    rng = np.random.default_rng(ctx.seed)
    idx = rng.permutation(len(ctx.train))[: cfg.calibration_images]
    calib = ctx.pre.model_input_np(ctx.train.x[np.sort(idx)].numpy())
    score = _val_scorer(ctx)
    res = quantize_int8(fp32, calib, score, cfg, log=ctx.log)
    onnx, notes = res.onnx, {"choice": res.choice, "trials": res.trials}
    if cfg.qat is not None:
        onnx, notes["qat"] = _int8_qat(res.onnx, max(t["val_accuracy"] for t in res.trials), cfg.qat, score, ctx)
    return ModelState(model=state.model, onnx=onnx, arch_edits=state.arch_edits,
                      notes={**state.notes, "int8": notes})


def _int8_qat(qdq: bytes, ptq_val: float, rec, score, ctx: CompressContext) -> tuple[bytes, dict]:
    """Distilled quantization-aware fine-tune of the int8 graph itself; the better graph on validation wins."""
    from slimship.compress.int8.qat import QDQGraphModule

    module = QDQGraphModule(qdq)
    recover(module, recovery_config(rec, ctx), ctx, "int8 qat")
    tuned = module.to_onnx()
    val = score(tuned)  # measured on the graph written back, in ONNX Runtime
    kept = val > ptq_val
    ctx.log(f"int8 qat: val {val:.4f} vs {ptq_val:.4f} after post-training quantization; "
            f"{'kept' if kept else 'discarded'}")
    return (tuned if kept else qdq), {"val_accuracy": val, "ptq_val_accuracy": ptq_val, "kept": kept}
