"""The transfer-strategy seam: what ``transfer.strategy`` names after the probe (``finetune``, ``partial``, ``lora``).

A strategy is a function ``(inputs, probe, tdict) -> TrainedModel`` that trains the task model from the pretrained
one (``inputs``: :class:`~slimship.transfer.stage.TransferInputs`; ``probe``: the probe's TrainedModel, for LP-FT
heads; ``tdict``: the transfer section as its cache key holds it). It returns the model named ``finetuned``;
setting ``base`` on it packages the task as a delta against the pretrained backbone (docs/delta.md), and
``notes["delta_encoding"]`` says how (a :class:`~slimship.package.delta.DeltaConfig`'s fields).

Strategies register here from their own module (imported by ``slimship.transfer``), so adding one needs no new
branch in :mod:`slimship.transfer.stage`.
"""

from __future__ import annotations

from typing import Callable

from slimship.core.registry import Registry

STRATEGIES: Registry[Callable] = Registry("transfer strategy")
