"""The compress stage: run each candidate's chain of steps from the dense model, one step at a time.

Every step's result is cached under the hash of the dense model's key and the chain so far, so chains that
share a prefix (``prune → int8`` beside ``prune``) share its work, and a re-run resumes. :func:`compress_chain`
is the unit a search calls: compress this chain, return the final state.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from slimship.compress.base import CompressContext, ModelState, apply_step
from slimship.core.cache import StageCache, stage_key

__all__ = ["ChainRunner", "CompressedModel", "compress", "compress_chain"]


@dataclass
class CompressedModel:
    """A candidate's final state, as measured and packaged."""

    name: str
    state: ModelState
    seconds: float
    key: str
    kind: str = "compressed"
    compressed: bool = True
    base: Any = None  # never a delta

    @property
    def model(self):
        return self.state.model

    @property
    def onnx(self) -> bytes | None:
        return self.state.onnx

    @property
    def arch_edits(self) -> dict:
        return self.state.arch_edits

    @property
    def notes(self) -> dict:
        return self.state.notes


@dataclass
class ChainRunner:
    """Runs chains of steps against one dense model, with the stage cache and an in-memory memo of the steps
    already done in this process (a search calls :meth:`run` many times)."""

    ctx: CompressContext
    cache: StageCache
    dense_key: str
    memo: dict[str, ModelState] = field(default_factory=dict)

    def run(self, steps: list, name: str = "candidate") -> CompressedModel:
        """Compress the dense model through ``steps`` (step configs); returns the final state."""
        from slimship.core.memory import release_memory
        from slimship.models.rebuild import apply_arch_edits_

        state = ModelState(model=self.ctx.teacher)
        key = self.dense_key
        t0 = time.perf_counter()
        for i, step in enumerate(steps):
            key = stage_key(self.dense_key, [s.model_dump(mode="json") for s in steps[: i + 1]])
            if key in self.memo:
                state = self.memo[key]
                continue
            hit = self.cache.load(key)
            if hit is not None:
                self.ctx.log(f"{name}: step {i + 1} ({step.method}) restored from cache")
                edits = hit.info.get("arch_edits", {})
                model = apply_arch_edits_(self.ctx.fresh_model(), edits)
                model.load_state_dict(hit.state_dict())
                state = ModelState(model=model.eval(), onnx=hit.onnx, arch_edits=edits, notes=hit.info.get("notes", {}))
            else:
                self.ctx.log(f"{name}: step {i + 1}/{len(steps)} {step.method}")
                n0 = len(self.ctx.trainings)
                state = apply_step(state, step, self.ctx)
                release_memory()  # what the step's training and graphs freed goes back to the OS
                ran = [{"step": i + 1, "method": step.method, **t} for t in self.ctx.trainings[n0:]]
                state.notes = {**state.notes, "training": [*state.notes.get("training", []), *ran]}
                self.cache.save(key, {"arch_edits": state.arch_edits, "notes": state.notes}, state.model, state.onnx)
            self.memo[key] = state
        return CompressedModel(name, state, time.perf_counter() - t0, key)


def compress(candidates: list, ctx: CompressContext, cache: StageCache, dense_key: str) -> list[CompressedModel]:
    """Every candidate of a recipe's ``compress`` section (in order)."""
    runner = ChainRunner(ctx, cache, dense_key)
    return [runner.run(c.steps, c.name) for c in candidates]


def compress_chain(steps: list, ctx: CompressContext, cache: StageCache, dense_key: str,
                   name: str = "candidate") -> CompressedModel:
    """One chain, without a shared memo (see :class:`ChainRunner` to reuse work across calls)."""
    return ChainRunner(ctx, cache, dense_key).run(steps, name)
