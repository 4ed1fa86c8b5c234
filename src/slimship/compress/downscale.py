"""A lower resolution inside a CNN: the layer that takes the image sees it average-pooled ``factor`` x ``factor``,
then a recovery fine-tune distilled from the dense model.

A CNN's compute grows with the square of its input's side, so halving it inside the model cuts every layer's
work about 4x, with every weight kept. The package still takes images of the recipe's ``image_size`` (the same
preprocessing, the same clients): the pooling is the first node of its deploy graph. It pays where the images
hold less detail than the size they are fed at: Fashion-MNIST's 28 px images upscaled to W0's 64 px lose
nothing at 32. On W0's compressed int8 graphs, pooling 2 x 2 made batch 1 ~1.45x and batch 64 ~2.2x faster
(ONNX Runtime, 2 threads; benchmarks/search_w0.py measures what ships). The recovery has to keep the accuracy:
features the pretrained and fine-tuned layers learnt at one scale move to another. On W0, 6 blocks dropped, then
32 px, then int8 was 2.2x faster at batch 1 and 5.5x at batch 64. It was 3.1 test points down after a 4-epoch
recovery, and 0.8 down after an 8-epoch one (docs/search.md).

The layer is found by tracing: the first convolution a real input reaches (timm's ``conv_stem``, torchvision's
``conv1``). A model that does not run at the lower resolution (a ViT's fixed patch grid) is refused with one line.
The edit is recorded (``input_pool`` in ``arch_edits``), so the model rebuilds from the cache and packages without
pickle.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from slimship.compress.base import IMAGE_MODEL, CompressContext, ModelState, register_method
from slimship.compress.recovery import Recovery, fixed_weights, recover, recovery_config, traced
from slimship.core.errors import SlimshipError

if TYPE_CHECKING:
    import torch
    from torch import nn


class DownscaleConfig(BaseModel):
    """Run the model at 1/``factor`` of its input resolution (average pooling first), then recovery."""

    model_config = ConfigDict(extra="forbid")
    method: Literal["downscale"] = "downscale"
    factor: int = Field(2, ge=2, le=8)
    recovery: Recovery = Recovery(seconds=None, epochs=3)


def input_layer(model: nn.Module, example: torch.Tensor) -> str:
    """The name of the first convolution that ``example`` reaches in ``model``'s forward ("" when none)."""
    from torch import nn

    order: list[str] = []
    traced(model, example, [m.register_forward_pre_hook(lambda mod, args, n=n: order.append(n))
                            for n, m in model.named_modules() if isinstance(m, nn.Conv2d)])
    return order[0] if order else ""


@register_method(DownscaleConfig, requires=IMAGE_MODEL,
                 help="a lower resolution inside a CNN (input average-pooled), BN re-estimation, distilled recovery")
def _downscale(state: ModelState, cfg: DownscaleConfig, ctx: CompressContext) -> ModelState:
    import torch

    from slimship.compress.prune_channels import recalibrate_bn_on_train_
    from slimship.models.rebuild import arch_edits, pool_input_

    size = ctx.adapter.image_size
    if size % cfg.factor or size // cfg.factor < 8:
        raise SlimshipError(f"downscale factor {cfg.factor}: the model's {size} px inputs must divide by it into at "
                            "least 8 px; pick a factor that divides model.image_size")
    model = copy.deepcopy(state.model).eval()
    example = ctx.adapter.example_input(2)  # [2, C, image_size, image_size]: what the deploy graph takes
    name = input_layer(model, example)
    if not name:
        raise SlimshipError(f"downscale: {ctx.adapter.architecture} has no convolution to run at a lower "
                            "resolution; leave downscale out for this model")
    try:
        pool_input_(model, name, cfg.factor, tuple(example.shape[1:]))
        with torch.no_grad():
            model(example)
    except (RuntimeError, ValueError, AssertionError) as e:
        raise SlimshipError(f"downscale: {ctx.adapter.architecture} does not run at {size // cfg.factor} px "
                            f"({str(e).splitlines()[0][:120]}); leave downscale out for this model") from None
    ctx.log(f"downscale: {name} sees the input pooled {cfg.factor}x{cfg.factor} "
            f"({size} -> {size // cfg.factor} px inside the model)")
    recalibrate_bn_on_train_(model, ctx)
    r = recover(model, recovery_config(cfg.recovery, ctx, fixed_weights(state)), ctx, "downscale recovery")
    ctx.log(f"downscale: val {r.best_val_accuracy:.4f} after recovery")
    return ModelState(model=model, arch_edits=arch_edits(ctx.fresh_model(), model),
                      notes={**state.notes, "downscale": {"factor": cfg.factor, "layer": name,
                                                         "inner_size": size // cfg.factor}})
