"""``refit: true``: once the decision is made, train the shipped model again on training + validation.

A run holds validation apart so that its choices (the transfer's pass, the reference, the shipped candidate) are
made on examples no model trained on. Those examples are then lost to training: on 4,232 mails with 846 held
apart, a fifth of the labels. Refitting (what scikit-learn's ``refit=True`` and AutoGluon's ``refit_full`` do)
gets them back for the model that ships, after every choice is made:

1. the reference's strategy (``finetune``, ``partial``, ``lora``) trains again from the same start (the probe's
   head for LP-FT) on training + validation, for the epochs of the pass the first fit kept, with no validation
   pass to choose from (its last state is kept);
2. the shipped candidate's chain of steps runs again on the refit reference, its recoveries distilling on
   training + validation for as many examples as the first fit's (their epochs scaled by train / (train + val),
   :func:`same_examples`: the recovery budget was judged on validation at that length, and a longer one is not
   judged at all); a step that chooses among options on validation, such as int8's modes, chooses on examples it
   trained on: a fixed option is exact;
3. both are measured on the test split, their latency interleaved against the refit reference's fp32 graph, and
   ``model.slim`` becomes the refit shipped model. The first fit's models, the decision and its figures stay in
   the report; the refit models have no validation figures (they trained on it).

The test split is never seen by either fit. Every refit stage is cached like the others, so a killed run resumes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

SUFFIX = "-refit"


@dataclasses.dataclass
class Refit:
    """What :func:`refit` trained: the refit reference and the refit shipped model (the same model when the
    reference itself ships), or ``skipped`` saying why nothing was refit."""

    models: list = dataclasses.field(default_factory=list)  # [reference, shipped] (or [reference])
    shipped: str = ""  # the refit shipped model's name
    source: str = ""  # the first fit's shipped model it refits
    epochs: float = 0.0  # the reference's refit budget
    train_examples: int = 0
    recovery_scale: float = 1.0  # the shipped chain's recovery epochs times this (:func:`same_examples`)
    skipped: str = ""

    @property
    def reference(self):
        return self.models[0]


def kept_epochs(notes: dict) -> float:
    """Epochs the first fit had run when it reached the pass it kept (its best validation pass)."""
    import math

    hist = [h for h in notes.get("history", []) if not math.isnan(h["val_accuracy"])]
    if not hist:
        return float(notes["epochs"])
    best = max(hist, key=lambda h: (h["val_accuracy"], -h["val_loss"]))  # the trainer's rule; the first wins a tie
    last = max(h["progress"] for h in notes["history"])
    return round(float(notes["epochs"]) * best["progress"] / max(last, 1e-9), 3)


def same_examples(candidate, scale: float):
    """``candidate`` with every recovery budget in epochs (a step's ``recovery``, int8's ``qat``: any
    :class:`~slimship.compress.recovery.Recovery` field) times ``scale``, so that on the merged data it trains on as
    many examples as the first fit's did. Budgets in seconds stay as they are (on more data, that time is already
    fewer epochs)."""
    from slimship.compress.recovery import Recovery

    def scaled(step):
        update = {k: v.model_copy(update={"epochs": round(v.epochs * scale, 4)}) for k, v in step
                  if isinstance(v, Recovery) and v.epochs}
        return step.model_copy(update=update) if update else step

    return candidate.model_copy(update={"steps": [scaled(s) for s in candidate.steps]})


def merged_data(data):
    """``data`` with the validation examples joined to the training ones (validation stays for steps that look
    at examples without labels; test is untouched)."""
    import torch

    from slimship.data.task import Examples, fingerprint

    train = Examples(torch.cat([data.train.x, data.val.x]), torch.cat([data.train.y, data.val.y]))
    return dataclasses.replace(data, train=train, fingerprint=fingerprint(train, data.val, salt=b"refit"))


def refit(st, shipped: str, key_of: Callable[[str], str]) -> Refit:
    """Train the refit reference and shipped model (on every process under torchrun); see the module docstring.
    ``st``: the run's :class:`~slimship.api.run.Stages`; ``shipped``: the decision's model; ``key_of``: the stage
    key transfer starts from, given the data's fingerprint (:func:`slimship.api.run.data_key`)."""
    from slimship.compress.pipeline import compress
    from slimship.transfer import TransferInputs
    from slimship.transfer.stage import transfer_section_key
    from slimship.transfer.strategies import STRATEGIES

    recipe, rep, ref = st.recipe, st.rep, st.reference
    candidates = {c.name: c for c in recipe.compress.candidates}
    skipped = _why_not(recipe, ref, shipped, candidates)
    if skipped:
        rep.log(f"refit: skipped ({skipped})")
        return Refit(source=shipped, skipped=skipped)
    data = merged_data(st.data)
    epochs = kept_epochs(ref.notes)
    scale = round(len(st.data.train) / len(data.train), 4)
    section = recipe.transfer.model_copy(update={"budget": recipe.transfer.budget.model_copy(
        update={"epochs": epochs, "seconds": None}), "evals": 1})
    rep.log(f"refit: {recipe.transfer.strategy} again on {len(data.train)} training + validation examples for "
            f"{epochs:g} epochs (the pass the first fit kept), then {shipped}"
            + (f", its recoveries on as many examples as the first fit's (epochs x {scale:g})" if shipped != ref.name
               else ""))
    inp = TransferInputs(section=section, seed=recipe.seed, adapter=st.adapter, pretrained=st.ctx.source,
                         data=data, pre=st.pre, cache=st.cache, base_key=key_of(data.fingerprint),
                         reporter=rep, device=st.device)
    model = STRATEGIES.get(section.strategy)(inp, st.transferred["probe"], transfer_section_key(section))
    model.name += SUFFIX
    models = [model]
    if shipped != ref.name:
        ctx = dataclasses.replace(st.ctx, train=data.train, teacher=model.model, trainings=[])
        (made,) = compress([same_examples(candidates[shipped], scale)], ctx, st.cache, model.key)
        made.name += SUFFIX
        models.append(made)
    return Refit(models, models[-1].name, shipped, epochs, len(data.train), scale)


def _why_not(recipe, ref, shipped: str, candidates: dict[str, Any]) -> str:
    """Why the shipped model cannot be refit ("" when it can)."""
    if ref.name != "finetuned":
        return f"the reference is the {ref.name}, not a fine-tune"
    if shipped != ref.name and shipped not in candidates:
        return f"{shipped} is a transfer baseline, not the reference or one of its compressed candidates"
    return ""
