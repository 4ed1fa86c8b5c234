"""The ``lora`` transfer strategy: low-rank adapters (LoRA) through PEFT, the classifier head trained in full.

PEFT puts a rank-``r`` update ``(alpha / r) B A`` beside each target layer (every ``nn.Linear`` outside the head by
default: attention query/key/value/output and the feed-forward layers of a BERT-like encoder; any names PEFT
matches, Conv2d included, when the recipe lists them). Only the adapters and the head train, on the one training
loop (:mod:`slimship.transfer.trainer`: the frozen group is everything else). Afterwards the adapters are merged
into the weights (``merge_and_unload``): the model that comes out is the adapter's plain classifier, so
compression, export and packaging need nothing new, and its change from the pretrained model is exactly of rank
<= r per layer. The run packages it as a delta against ``packages/base.slim`` in the ``lowrank`` mode of
:mod:`slimship.package.delta` (a truncated SVD per changed tensor, exact for such a change).

Nothing here is text-only: a timm ViT's attention and MLP layers are ``nn.Linear`` too. A model without a Linear
layer outside its head (a pure CNN) is refused with one line asking for ``target_modules``.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from slimship.core.cache import stage_key
from slimship.core.errors import RecipeError
from slimship.transfer.stage import TrainedModel, _best_val, _cached, _notes, _ran, _train_config
from slimship.transfer.strategies import STRATEGIES
from slimship.transfer.trainer import train

if TYPE_CHECKING:
    from torch import nn

    from slimship.transfer.stage import TransferInputs

DEFAULTS = {"rank": 8, "alpha": 16.0, "dropout": 0.0, "target_modules": None, "lr": None}


def lora_targets(model: nn.Module, head: nn.Module, targets: list[str] | None) -> list[str]:
    """Full names of the modules to adapt: those ``targets`` name (a full module name or its last dotted parts, as
    PEFT matches them), or every ``nn.Linear`` when ``targets`` is None; never a module of ``head`` (it trains in
    full). Raises RecipeError when a target names no module, or nothing outside the head is left to adapt."""
    from torch import nn

    inside_head = {id(m) for m in head.modules()}
    names = [(n, m) for n, m in model.named_modules() if n]
    if targets is None:
        found = [n for n, m in names if isinstance(m, nn.Linear) and id(m) not in inside_head]
        if not found:
            raise RecipeError("this model has no Linear layer outside its classifier for a LoRA adapter: list the "
                              "layers to adapt in transfer.lora.target_modules (PEFT adapts Linear, Conv2d and "
                              "Embedding layers), or use strategy finetune")
        return found
    linear = [n for n, m in names if isinstance(m, nn.Linear) and id(m) not in inside_head]
    for t in targets:
        if not any(n == t or n.endswith("." + t) for n, _ in names):
            hint = ", ".join(sorted({n.rsplit(".", 1)[-1] for n in linear})[:8]) or "none"
            raise RecipeError(f"transfer.lora.target_modules: {t!r} names no layer of the model: use a module name "
                              f"or its last part (Linear layers here end in: {hint})")
    found = [n for n, m in names if id(m) not in inside_head and any(n == t or n.endswith("." + t) for t in targets)]
    if not found:
        raise RecipeError("transfer.lora.target_modules name only the classifier, which trains in full anyway: "
                          "name layers of the backbone")
    return found


def add_adapters(model: nn.Module, head: nn.Module, section) -> tuple[nn.Module, list[list[str]]]:
    """Wrap ``model`` in a PEFT model with LoRA adapters (injected into ``model`` in place; ``section``: the recipe's
    LoraSection, or None for its defaults). Returns ``(peft model, groups)``: groups[0] the frozen parameter names,
    groups[1] the adapters' and the head's (the trainer's layer groups, with ``freeze_stages=1``)."""
    from peft import LoraConfig, get_peft_model

    cfg = section.model_dump() if section is not None else DEFAULTS
    targets = lora_targets(model, head, cfg["target_modules"])
    head_params = {id(p) for p in head.parameters()}
    try:
        wrapped = get_peft_model(model, LoraConfig(r=cfg["rank"], lora_alpha=cfg["alpha"],
                                                   lora_dropout=cfg["dropout"], target_modules=targets, bias="none"))
    except (ValueError, TypeError, NotImplementedError) as e:
        detail = " ".join(str(e).split())[:160]
        raise RecipeError(f"PEFT cannot add LoRA adapters to transfer.lora.target_modules ({detail}): name Linear "
                          f"or Conv2d layers") from None
    frozen, trainable = [], []
    for n, p in wrapped.named_parameters():
        (trainable if "lora_" in n or id(p) in head_params else frozen).append(n)
    return wrapped, [frozen, trainable]


@STRATEGIES.register("lora", help="LoRA adapters through PEFT + the head; merged after training, shipped as a "
                                  "low-rank delta on the base")
def lora_finetune(inp: TransferInputs, probe: TrainedModel, tdict: dict) -> TrainedModel:
    """Train LoRA adapters and the head (cached), merge them; the result carries ``base`` = the pretrained model."""
    t = inp.section
    cfg_dict = t.lora.model_dump(mode="json") if t.lora is not None else DEFAULTS
    key = stage_key(inp.base_key, tdict, "lora", cfg_dict)
    model = copy.deepcopy(probe.model if t.head_init == "probe" else inp.pretrained)
    cfg = _train_config(t, budget=t.budget, lr=cfg_dict["lr"] or t.lr, bn=t.bn, seed=inp.seed, freeze_stages=1)
    counts: dict = {}

    def run() -> tuple[dict, float]:
        wrapped, groups = add_adapters(model, inp.adapter.classifier(model), t.lora)
        params = dict(wrapped.named_parameters())
        counts.update(trainable=sum(params[n].numel() for n in groups[1]),
                      parameters=sum(p.numel() for n, p in params.items() if "lora_" not in n),
                      layers=sum(1 for n in groups[1] if n.endswith("lora_A.default.weight")))
        r = train(wrapped, inp.data.train, inp.data.val, inp.pre, cfg, groups=groups, progress=inp.reporter,
                  desc="lora", device=inp.device)
        if wrapped.merge_and_unload() is not model:  # PEFT merges in place into the module it wrapped
            raise RuntimeError("internal: PEFT's merge_and_unload returned another module than the one wrapped")
        notes, secs = _notes(r)
        return {**notes, "lora": {**cfg_dict, **counts}}, secs

    notes, secs = _cached(inp.cache, key, model, run, "lora", inp.reporter.log)
    lo = notes["lora"]
    inp.reporter.log(f"lora: val {_best_val(notes):.4f} (rank {lo['rank']} on {lo['layers']} layers, "
                     f"{lo['trainable']:,} of {lo['parameters']:,} parameters trained; {_ran(notes)}, {secs:.0f} s)")
    notes = {**notes, "val_accuracy": _best_val(notes), "delta_encoding": {"mode": "lowrank"}}
    return TrainedModel("finetuned", "lora", model.eval(), key, secs, notes, base=inp.pretrained)
