"""The recipe: one versioned YAML file that says what to transfer, how to compress, what to measure.

Validation is strict (unknown keys are errors, with a suggestion) so that a typo never silently falls back
to a default. Every error is reported as one line naming the field, what was wrong and what is allowed.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from slimship.compress import METHODS
from slimship.core.errors import RecipeError
from slimship.recipe.limits import MAX_MESSAGE, cut, load_yaml, non_finite_number, read_recipe_text, short_repr

RECIPE_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Budget(_Strict):
    """Training budget: epochs over the training split, or wall-clock seconds (one of them)."""

    epochs: float | None = Field(None, ge=0.001, le=10_000)
    seconds: float | None = Field(None, ge=1, le=7 * 24 * 3600)

    @model_validator(mode="after")
    def _one(self):
        if (self.epochs is None) == (self.seconds is None):
            raise ValueError("give exactly one of epochs or seconds")
        return self


class ModelSection(_Strict):
    kind: str = Field("timm-image", description="the model kind (slimship list): how to build, train and export it")
    architecture: str = Field(description="timm-image: a timm architecture; hf-text: a Hugging Face model folder "
                                          "or an installed package holding one")
    weights: str | None = Field(None, description="weight package name, .safetensors/.pth path, or none")
    trust_pickle: bool = False
    image_size: int = Field(64, ge=8, le=1024)
    mean: list[float] | None = None
    std: list[float] | None = None
    # text kinds (hf-text)
    max_length: int | None = Field(None, ge=8, le=8192, description="tokens per text (null: 256, capped by the model)")
    tail_tokens: int = Field(0, ge=0, le=8191, description="tokens a longer text keeps from its end (the rest from "
                                                           "its start; 0: its start only)")
    pooling: Literal["mean", "cls"] = "mean"


class DataSection(_Strict):
    source: str
    test: str | None = None
    val_fraction: float = Field(0.1, gt=0, lt=0.9)
    test_fraction: float = Field(0.2, gt=0, lt=0.9)
    train_limit: int | None = Field(None, ge=2)
    val_limit: int | None = Field(None, ge=2)
    test_limit: int | None = Field(None, ge=2)
    # text tables (.csv / .tsv / .jsonl)
    text_column: str = "text"
    label_column: str = "label"


class Augment(_Strict):
    hflip: bool = True
    shift: int = Field(0, ge=0, le=32)


class DeltaTraining(_Strict):
    """Make the task model a sparse delta on its pretrained base (cheap to store beside other tasks).

    After the fine-tune, a second fine-tune distilled from the first shrinks each weight tensor's change to its
    ``density`` fraction of largest entries (gradually, over the first half of ``budget``) and trains those
    entries with the rest held at the base. The run then also
    writes ``packages/base.slim`` (the pretrained backbone) and ``packages/finetuned-delta.delta.slim``.
    """

    density: float = Field(0.05, gt=0, le=1, description="fraction of each weight tensor that may differ from the base")
    budget: Budget = Budget(epochs=2)
    lr: float = Field(1e-3, gt=0)
    kd_alpha: float = Field(0.7, ge=0, le=1, description="weight of distillation from the full fine-tune")
    # uniform: the same fraction of every tensor; norm: shares by each tensor's relative change in the fine-tune
    allocation: Literal["uniform", "norm"] = "uniform"
    dense_depthwise: bool = Field(False, description="depthwise kernels change whole (few weights per channel)")
    value_bits: Literal[8, 16, 32] = Field(8, description="bits per stored delta value (8: one scale per tensor; "
                                                          "32 = lossless); accuracy is measured on the stored values")


class LoraSection(_Strict):
    """LoRA adapters (``strategy: lora``, through PEFT): low-rank updates of the ``target_modules`` plus the head,
    trained in full; merged into the weights afterwards, so everything downstream sees a plain classifier and the
    task is packaged as a low-rank delta against ``packages/base.slim`` (docs/delta.md)."""

    rank: int = Field(8, ge=1, le=1024, description="rank r of each adapter")
    alpha: float = Field(16.0, gt=0, description="scaling: the update is (alpha / rank) B A")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapters' input while training")
    target_modules: list[str] | None = Field(None, min_length=1, description="layers to adapt: full names or their "
                                             "last part (query, value); null: every Linear layer outside the head")
    lr: float | None = Field(None, gt=0, description="learning rate of adapters and head (null: transfer.lr)")


class TransferSection(_Strict):
    strategy: Literal["probe", "finetune", "partial", "lora"] = "finetune"
    head_init: Literal["probe", "random"] = "random"  # "probe" = LP-FT; needs a lower lr (~1e-4)
    budget: Budget = Budget(epochs=3)  # epochs: the result does not depend on how busy the machine is
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    batch_size: int = Field(64, ge=1)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    bn: Literal["frozen", "train"] = "frozen"
    freeze_stages: int = Field(0, ge=0)
    gradual_unfreeze: bool = False
    layer_decay: float | None = Field(None, gt=0, le=1)
    augment: Augment = Augment()
    evals: int = Field(5, ge=1, le=100)
    scratch_baseline: bool = True
    scratch_budget: Budget | None = None  # default: the same budget as the transfer
    scratch_lr: float = Field(2e-3, gt=0)
    delta: DeltaTraining | None = None  # also store the task as a sparse delta on the pretrained base
    lora: LoraSection | None = None  # strategy lora's adapters (null: the defaults)

    @model_validator(mode="after")
    def _partial(self):
        if self.strategy == "partial" and self.freeze_stages == 0:
            raise ValueError("strategy partial needs freeze_stages >= 1 (how many stages from the input stay frozen)")
        if self.delta is not None and self.strategy == "probe":
            raise ValueError("delta needs a fine-tune (strategy finetune or partial): a probe changes only the head")
        if self.lora is not None and self.strategy != "lora":
            raise ValueError("transfer.lora configures strategy lora: set strategy: lora, or drop the lora section")
        if self.strategy == "lora" and self.delta is not None:
            raise ValueError("strategy lora already stores the task as a low-rank delta on the base: drop transfer.delta")
        return self


class Candidate(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
    # Each step is one registered method's config; the union is built from the registry when a recipe is parsed
    # (see _schema), so a method registered after import is usable in recipes too.
    steps: list[Any] = Field(min_length=1)

    @model_validator(mode="after")
    def _order(self):
        for s in self.steps[:-1]:
            if METHODS.get(s.method).terminal:
                raise ValueError(f"{s.method} produces the deploy graph and must be the last step of a candidate")
        for s in self.steps[1:]:
            if getattr(s, "starts_from_source", False):
                raise ValueError(f"a {s.method} step that starts from the pretrained model must be the first step of "
                                 "a candidate")
        return self


class CompressSection(_Strict):
    accuracy_budget: float = Field(1.0, ge=0, description="points below the dense model, on validation")
    confidence: float = Field(0.7, gt=0, lt=1, description="probability a candidate must reach of being within the "
                                                           "budget to ship (docs/decision.md)")
    candidates: list[Candidate] = []

    @model_validator(mode="after")
    def _unique(self):
        names = [c.name for c in self.candidates]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"candidate names must be unique: {sorted(dup)}")
        return self


class EvaluateSection(_Strict):
    batch_sizes: list[Annotated[int, Field(ge=1, le=4096)]] = Field([1, 64], min_length=1, max_length=8)
    latency_runs: int = Field(30, ge=3, le=10_000)
    runtimes: list[str] | None = Field(None, min_length=1, max_length=8, description="runtimes every model is "
                                       "measured in (slimship list); null = every one installed")

    @model_validator(mode="after")
    def _check(self):
        from slimship.core.runtime import RUNTIMES

        if len(set(self.batch_sizes)) != len(self.batch_sizes):
            raise ValueError(f"batch_sizes repeats a size ({self.batch_sizes}): list each batch size once")
        unknown = [r for r in self.runtimes or [] if r not in RUNTIMES]
        if unknown:
            raise ValueError(f"unknown runtime(s) {unknown}; known: {', '.join(RUNTIMES.names())}")
        return self


class DeviceSection(_Strict):
    """Where training runs (``slimship run --device`` overrides ``type``); docs/distributed.md."""

    type: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when torch sees a GPU, else the CPU")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 autocast on a GPU; on the CPU fp32, or bf16 for text models when the CPU has "
                            "AMX (measured faster there)")
    batch_scale: int = Field(1, ge=1, le=64, description="every training batch times this, learning rates times its "
                                                         "square root")
    compile: Literal["off", "default", "reduce-overhead"] = Field(
        "off", description="torch.compile the training forward (reduce-overhead: CUDA graphs); off unless measured faster")
    micro_batch: Literal["auto"] | Annotated[int, Field(ge=1)] | None = Field(
        "auto", description="most examples per forward/backward pass, gradients accumulated over a batch (memory "
                            "follows it); auto: 32 on the CPU, the whole batch on a GPU; null: the whole batch")


class Recipe(_Strict):
    version: int = Field(RECIPE_VERSION, ge=1)
    name: str = "run"
    seed: int = Field(0, ge=0, le=2**32 - 1)
    model: ModelSection
    data: DataSection
    transfer: TransferSection = TransferSection()
    compress: CompressSection = CompressSection()
    evaluate: EvaluateSection = EvaluateSection()
    device: DeviceSection = DeviceSection()
    refit: bool = Field(False, description="after the decision, train the shipped model again on training + "
                                           "validation, measure it on test and ship it (docs/decision.md)")

    @model_validator(mode="after")
    def _version(self):
        if self.version > RECIPE_VERSION:
            raise ValueError(f"recipe version {self.version} is newer than this slimship reads ({RECIPE_VERSION}): upgrade slimship")
        return self


# ---- loading and error reporting -------------------------------------------------------------------------


def _allowed_fields(model_cls: type[BaseModel], loc: tuple) -> list[str]:
    """Field names allowed at ``loc`` (walks nested models, lists and the step union)."""
    cls: Any = model_cls
    for part in loc:
        if isinstance(part, int) or cls is None:
            continue
        if part in METHODS:  # a discriminated-union member
            cls = METHODS.get(part).config
            continue
        field = getattr(cls, "model_fields", {}).get(part)
        if field is None:
            return []
        cls = _model_in(field.annotation)
    return list(getattr(cls, "model_fields", {}))


def _model_in(tp: Any):
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    for a in getattr(tp, "__args__", ()) or ():
        found = _model_in(a)
        if found is not None:
            return found
    return None


_SHOWN_ERRORS = 5  # errors listed in one message; the rest are counted


def format_validation_error(e: ValidationError, where: str = "recipe") -> str:
    """One line naming the first few fields in error, what was wrong and what is allowed (at most MAX_MESSAGE
    characters)."""
    msgs = []
    for err in e.errors()[:_SHOWN_ERRORS]:
        loc = tuple(err["loc"])
        path = cut(".".join(str(p) for p in loc) or "(top level)", 120)
        if err["type"] == "extra_forbidden":
            allowed = _allowed_fields(_schema(), loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            msgs.append(f"unknown field {path!r}{hint}; allowed here: {', '.join(allowed)}")
        elif err["type"] == "missing":
            msgs.append(f"missing field {path!r}")
        elif err["type"] in ("literal_error", "union_tag_invalid"):
            msgs.append(f"{path}: {err['msg']}".replace("Input should be", "must be"))
        else:
            msgs.append(f"{path}: {err['msg']} (got {short_repr(err.get('input'))})")
    more = f"; and {e.error_count() - len(msgs):,} more errors" if e.error_count() > len(msgs) else ""
    return cut(f"{where}: " + "; ".join(msgs), MAX_MESSAGE - len(more)) + more


_SCHEMAS: dict[tuple[str, ...], type[Recipe]] = {}


def _schema() -> type[Recipe]:
    """The Recipe class whose compress steps are the union of the methods registered now (cached per set)."""
    names = tuple(METHODS.names())
    if names not in _SCHEMAS:
        configs = tuple(METHODS.get(n).config for n in names)
        step = Annotated[Union[configs], Field(discriminator="method")] if len(configs) > 1 else configs[0]
        candidate = create_model("Candidate", __base__=Candidate, steps=(list[step], Field(min_length=1)))
        section = create_model("CompressSection", __base__=CompressSection, candidates=(list[candidate], []))
        _SCHEMAS[names] = create_model("Recipe", __base__=Recipe, compress=(section, section()))
    return _SCHEMAS[names]


def parse_recipe(data: Any, where: str = "recipe") -> Recipe:
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: expected a mapping of sections (model, data, transfer, compress), got {type(data).__name__}")
    bad = non_finite_number(data)
    if bad is not None:
        raise RecipeError(cut(f"{where}: {bad} is not a finite number (.inf or .nan): give a number such as 3"))
    try:
        return _schema().model_validate(data)
    except ValidationError as e:
        raise RecipeError(format_validation_error(e, where)) from None


def load_recipe(path: str | Path) -> Recipe:
    p = Path(path)
    try:
        found = p.is_file()
    except (OSError, ValueError) as e:  # a name too long for the file system, a NUL byte, ...
        raise RecipeError(cut(f"recipe {p} cannot be used ({getattr(e, 'strerror', None) or e}): check the path")) from None
    if not found:
        raise RecipeError(f"recipe {p} not found: create one with `slimship init --model NAME --data PATH > {p}`")
    data = load_yaml(read_recipe_text(p), f"recipe {p}")  # bounded: file size, aliases, lists, nesting
    return parse_recipe(data, str(p))


def recipe_to_dict(r: Recipe) -> dict:
    return r.model_dump(mode="json")
