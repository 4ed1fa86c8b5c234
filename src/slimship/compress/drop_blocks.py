"""Fewer blocks in a CNN (e.g. EfficientNet-Lite0's 16 -> 10), then a recovery fine-tune distilled from the dense
model.

Channel pruning makes every layer thinner but leaves their number, and at batch 1 a small CNN's time goes mostly
to the number of layers, not their width: each one is a separate kernel call. Dropping whole blocks removes
those calls. A block can go when the stage it sits in still works without it: an entry of an ``nn.Sequential``
(a stage of timm's EfficientNet / MobileNet / ResNet families) whose output has its input's shape on a real
model input (a residual block that keeps its channels and resolution: removing it leaves the skip, an identity).
Found by tracing shapes, so no model-specific code is needed: EfficientNet-Lite0 has 9 such blocks of 16,
MobileNetV3 and ResNet-18 the repeats of their stages, a ViT its transformer blocks after the first.

Which blocks go: removed one at a time, each time the one whose absence moves the logits least from the dense
teacher's on (up to 256) validation images; ``blocks`` names them instead. BatchNorm statistics are then
re-estimated on training images (the following blocks see different inputs) and a distilled recovery
fine-tune follows. The blocks really go (fewer nodes in the ONNX graph, fewer bytes, less latency); the kept
entries are recorded as an arch edit, so the model rebuilds from the cache and packages without pickle.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from slimship.compress.base import IMAGE_MODEL, CompressContext, ModelState, register_method
from slimship.compress.recovery import Recovery, TeacherProbe, fixed_weights, recover, recovery_config, traced
from slimship.core.errors import SlimshipError

if TYPE_CHECKING:
    import torch
    from torch import nn


class DropBlocksConfig(BaseModel):
    """Drop ``drop`` of the model's droppable blocks (a count >= 1, or a fraction < 1 of them), then recovery."""

    model_config = ConfigDict(extra="forbid")
    method: Literal["drop_blocks"] = "drop_blocks"
    drop: float = Field(0.5, gt=0)
    blocks: list[str] | None = None  # the blocks that go, by module name (overrides drop)
    recovery: Recovery = Recovery(seconds=None, epochs=3)


def droppable_blocks(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Names of the blocks that can be removed, in model order: entries of an ``nn.Sequential`` that hold no
    stage of their own (no ``nn.Sequential`` / ``nn.ModuleList`` of more than one entry inside), compute with at
    least two convolution or linear layers (a block, not a lone normalisation or convolution), and give an output
    of their input's shape on ``example``. One entry of every stage always stays."""
    import torch
    from torch import nn

    def is_stage(m: nn.Module) -> bool:
        return type(m) in (nn.Sequential, nn.ModuleList) and len(m) > 1

    def is_block(m: nn.Module) -> bool:
        return (not any(is_stage(d) for d in m.modules())
                and sum(isinstance(d, (nn.Conv2d, nn.Linear)) for d in m.modules()) >= 2)

    candidates = {f"{n}.{i}" if n else str(i): child for n, m in model.named_modules() if type(m) is nn.Sequential
                  for i, child in enumerate(m) if is_block(child)}
    same: dict[str, bool] = {}

    def record(name: str):
        def hook(module, args, out) -> None:  # returns None: the output stays as it is
            same.setdefault(name, bool(args) and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor)
                            and tuple(args[0].shape) == tuple(out.shape))
        return hook

    traced(model, example, [m.register_forward_hook(record(n)) for n, m in candidates.items()])
    names = [n for n in candidates if same.get(n)]
    by_stage: dict[str, list[str]] = {}
    for n in names:
        by_stage.setdefault(n.rpartition(".")[0], []).append(n)
    for stage, members in by_stage.items():  # a stage whose every entry could go keeps its first
        if len(members) == len(model.get_submodule(stage)):
            names.remove(members[0])
    return names


def dropped_count(drop: float, n: int) -> int:
    """How many of ``n`` droppable blocks ``drop`` removes; a SlimshipError when that is none or all of them."""
    if drop >= 1 and drop != int(drop):
        raise SlimshipError(f"drop_blocks drop: {drop} is neither a whole number of blocks nor a fraction below 1: "
                            "write e.g. drop: 4 or drop: 0.5")
    k = int(drop) if drop >= 1 else round(drop * n)
    if not 1 <= k <= n:
        raise SlimshipError(f"drop_blocks drop: {drop} removes {k} of the {n} blocks that can go: ask for 1 to {n}")
    return k


def greedy_blocks(model: nn.Module, names: list[str], k: int, ctx: CompressContext) -> list[str]:
    """Remove ``k`` of ``names`` one at a time, each time the one whose absence moves validation logits least
    from the teacher's (KL divergence); returns those removed, in order."""
    from torch import nn

    probe = TeacherProbe(ctx)
    model.eval()
    owners = {n: model.get_submodule(n.rpartition(".")[0]) for n in names}
    originals = {n: owners[n][int(n.rpartition(".")[2])] for n in names}

    def place(n: str, module: nn.Module) -> None:
        owners[n][int(n.rpartition(".")[2])] = module

    gone: list[str] = []
    try:
        while len(gone) < k:
            gaps = {}
            for n in names:
                if n in gone:
                    continue
                place(n, nn.Identity())
                gaps[n] = probe.gap(model)
                place(n, originals[n])
            best = min(gaps, key=gaps.get)
            place(best, nn.Identity())
            gone.append(best)
            ctx.log(f"drop_blocks: {best} goes (KL to the teacher {gaps[best]:.4f})")
    finally:
        for n in names:
            place(n, originals[n])
    return gone


def remove_blocks_(model: nn.Module, names: list[str]) -> None:
    """Remove the named entries from their ``nn.Sequential`` stages, in place (recorded as kept lists)."""
    from slimship.models.rebuild import keep_modules_

    by_stage: dict[str, set[int]] = {}
    for n in names:
        stage, _, i = n.rpartition(".")
        by_stage.setdefault(stage, set()).add(int(i))
    for stage, gone in by_stage.items():
        keep_modules_(model, stage, [i for i in range(len(model.get_submodule(stage))) if i not in gone])


@register_method(DropBlocksConfig, requires=IMAGE_MODEL,
                 help="fewer CNN blocks (residual blocks chosen on validation), BN re-estimation, distilled recovery")
def _drop_blocks(state: ModelState, cfg: DropBlocksConfig, ctx: CompressContext) -> ModelState:
    from slimship.compress.prune_channels import recalibrate_bn_on_train_
    from slimship.models.rebuild import arch_edits

    model = copy.deepcopy(state.model).eval()
    names = droppable_blocks(model, ctx.pre.model_input(ctx.train.x[:1]))
    if not names:
        raise SlimshipError(f"drop_blocks: {ctx.adapter.architecture} has no block that can be dropped (a block of a "
                            "stage whose output has its input's shape); for transformers use drop_layers")
    if cfg.blocks is not None:
        unknown = [b for b in cfg.blocks if b not in names]
        if unknown or not cfg.blocks or len(set(cfg.blocks)) != len(cfg.blocks):
            raise SlimshipError(f"drop_blocks blocks {cfg.blocks}: name distinct blocks among those that can go: "
                                f"{', '.join(names)}")
        gone = list(cfg.blocks)
    else:
        gone = greedy_blocks(model, names, dropped_count(cfg.drop, len(names)), ctx)
    remove_blocks_(model, gone)
    ctx.log(f"drop_blocks: {len(gone)} of {len(names)} droppable blocks removed ({', '.join(gone)})")
    recalibrate_bn_on_train_(model, ctx)
    r = recover(model, recovery_config(cfg.recovery, ctx, fixed_weights(state)), ctx, "drop-blocks recovery")
    ctx.log(f"drop_blocks: val {r.best_val_accuracy:.4f} after recovery")
    edits = arch_edits(ctx.fresh_model(), model)
    return ModelState(model=model, arch_edits=edits,
                      notes={**state.notes, "drop_blocks": {"droppable": names, "dropped": gone}})
