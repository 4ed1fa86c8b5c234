"""The commented recipe written by ``slimship init`` (and the built-in demo's starting point).

Its defaults are what was measured best (docs/compression.md, docs/decision.md): int8 with quantization-aware
fine-tuning; channels removed by global Taylor importance in multiples of 16, then int8 (the fast model); 50 %
unstructured sparsity, 4-bit k-means and int8 depthwise kernels (the small package). Every budget is in epochs,
so the result does not depend on how busy the machine is; the epochs are sized to the training set so that each
stage sees about the same number of images whatever its size (a small set gets more epochs, not fewer steps).
"""

from __future__ import annotations

from dataclasses import dataclass

# Images each stage sees (epochs × training images), on the 2-core reference machine at 64 px roughly: transfer
# 150 s, recovery 100 s, QAT 60 s. Sized from W0 (docs/compression.md), scaled down to keep the default recipe
# near 15 minutes there.
TRANSFER_IMAGES = 15_000
RECOVERY_IMAGES = 8_000
CHANNEL_RECOVERY_IMAGES = 16_000  # two prune-recover rounds
QAT_IMAGES = 5_000
MAX_EPOCHS = 40

SMALL_DATA = 3_000  # below this many images for training and validation, the validation split is larger (docs/decision.md)


@dataclass(frozen=True)
class Plan:
    """The data-dependent values of a recipe: validation fraction and epochs per stage."""

    val_fraction: float
    transfer: float
    recovery: float
    channel_recovery: float
    qat: float
    train_images: int | None  # what the epochs were sized for (None: unknown, defaults used)


def _epochs(images: int, n: int) -> float:
    return float(min(MAX_EPOCHS, max(1.0, round(images / n, 1))))


def plan_for(pool_images: int | None, train_limit: int | None = 10_000) -> Plan:
    """Validation fraction and epochs for a training pool of ``pool_images`` (train + validation; None: unknown).

    Small pools give validation a larger share (0.2 instead of 0.1): the decision compares models on those
    images, and on ~100 images a 1-point budget is one image (docs/decision.md)."""
    if not pool_images:
        return Plan(0.1, 3.0, 1.0, 2.0, 1.0, None)
    val_fraction = 0.2 if pool_images < SMALL_DATA else 0.1
    n = max(1, round(pool_images * (1 - val_fraction)))
    if train_limit:
        n = min(n, train_limit)
    return Plan(val_fraction, _epochs(TRANSFER_IMAGES, n), _epochs(RECOVERY_IMAGES, n),
                _epochs(CHANNEL_RECOVERY_IMAGES, n), _epochs(QAT_IMAGES, n), n)


TEMPLATE = """\
# slimship recipe (version {version}). Every value can be edited; `slimship run` validates it strictly
# (a misspelled key is an error, with the allowed names). Run:  slimship run THIS.yaml --out runs/NAME
# Budgets are epochs{sized}: a busy machine changes the time taken, not the result.
version: {version}
name: {name}
seed: 0

model:
  architecture: {model}          # any timm architecture (`slimship list`)
  weights: {weights}             # weight package, .safetensors/.pth file, or none (random init)
  trust_pickle: false            # true only for a legacy pickled checkpoint you trust (converted once)
  image_size: {image_size}       # input resolution; CPU cost grows with its square
  mean: null                     # null = the pretrained config's normalisation
  std: null

data:
  source: {data}
  test: {test}                   # null = the source's own test split, else a stratified split
  val_fraction: {val_fraction}              # validation split (taken from train) for every decision{val_note}
  test_fraction: 0.2             # used only when the source has no test split
  train_limit: {train_limit}     # stratified subsample of the training split (null = all)
  val_limit: 1000
  test_limit: null

transfer:
  strategy: finetune             # probe | finetune | partial (the best on validation, probe included, is the reference)
  head_init: random              # random | probe (LP-FT; use lr ~1e-4)
  budget: {{epochs: {transfer}}}        # or {{seconds: N}} (depends on the machine's load)
  lr: 0.001
  weight_decay: 0.05
  batch_size: 64
  label_smoothing: 0.1
  bn: frozen                     # frozen keeps BatchNorm statistics (safer on small budgets) | train
  freeze_stages: 0               # partial: stages from the input kept frozen
  gradual_unfreeze: false        # unfreeze from the top down over the first half of the budget
  layer_decay: null              # e.g. 0.7: lower LR for earlier stages
  augment: {{hflip: true, shift: 0}}
  evals: 1                       # validation passes (the best state is kept); 1 = the final state, judged like
                                 # every compressed candidate (more passes flatter the reference on small data)
  scratch_baseline: true         # train the same architecture from random init, same budget, beside it
  scratch_budget: null           # null = same as budget
  scratch_lr: 0.002

compress:
  accuracy_budget: 1.0           # points below the reference (on validation) a shipped model may lose
  confidence: 0.7                # P(within budget) a candidate needs to ship, from a paired test (docs/decision.md)
  candidates:                    # each is a chain of steps; the smallest package within budget ships
    - name: int8-qat             # int8, then quantization-aware fine-tuning of the int8 graph (kept if better)
      steps:
        - method: int8           # static int8, per-channel weights, calibrated on your data, for ONNX Runtime
          calibration: [minmax, percentile]
          keep_fp32: [none]             # or also first_last (stem and classifier in fp32)
          reduce_range: [true]
          qat: {{epochs: {qat}, seconds: null, lr: 0.00005, kd_alpha: 0.7}}
    - name: channels14-int8      # the fast model: 1.4x fewer MACs, then int8 (W0: 2.3-3.0x faster, within 1 point)
      steps:
        - method: prune_channels # structured: the model really gets smaller
          macs_reduction: 1.4
          importance: taylor     # taylor + global kept far more than magnitude + layer (W0: 60.6 % vs 25 % before recovery)
          scope: global          # channels compete across layers
          round_to: 16           # ONNX Runtime's int8 depthwise kernels need multiples of 16 to be fast
          steps: 2
          recovery: {{epochs: {channel_recovery}, seconds: null, lr: 0.0005, kd_alpha: 0.7}}
        - {{method: int8, calibration: [minmax, percentile], keep_fp32: [none], reduce_range: [true],
           qat: {{epochs: {qat}, seconds: null, lr: 0.00005, kd_alpha: 0.7}}}}
    - name: sparse50-kmeans4     # the small package: prune, share weights (4 bits), int8 depthwise (W0: 9.4x smaller)
      steps:
        - {{method: unstructured, sparsity: 0.5, recovery: {{epochs: {recovery}, seconds: null, lr: 0.0005, kd_alpha: 0.7}}}}
        - {{method: kmeans, bits: 4, recovery: {{epochs: {qat}, seconds: null, lr: 0.0001, kd_alpha: 0.7}}}}
        - {{method: weight_only, bits: 8, layers: depthwise}}
    # More methods (`slimship list`), e.g.
    # - name: sparse60s-kmeans4    # 11.7x smaller on W0: sparsity spread by measured layer sensitivity (needs a
    #   steps:                     # validation set of a few hundred images to measure it)
    #     - {{method: unstructured, sparsity: 0.6, allocation: sensitivity, recovery: {{epochs: {recovery}, seconds: null}}}}
    #     - {{method: kmeans, bits: 4, recovery: {{epochs: {qat}, seconds: null, lr: 0.0001}}}}
    #     - {{method: weight_only, bits: 8, layers: depthwise}}
    # - name: lowrank
    #   steps:
    #     - {{method: lowrank, energy: 0.95, min_saving: 0.25, recovery: {{epochs: {recovery}, seconds: null}}}}
    # - name: int4-linear          # weight-only int4 of Linear layers (ViT / MLP-Mixer / ResMLP), groups of 128
    #   steps:
    #     - {{method: weight_only, bits: 4, granularity: group, group_size: 128, layers: linear, clip: mse}}
    # - name: fewer-blocks         # whole residual blocks go (faster at batch 1), then int8. W0: all 9 of
    #   steps:                     # EfficientNet-Lite0's droppable blocks gone (drop: 9), 6 epochs: 2.9x faster at
    #                              # batch 1 at -0.2 test points; `slimship search` finds how many your task allows
    #     - {{method: drop_blocks, drop: 0.5, recovery: {{epochs: {recovery}, seconds: null}}}}
    #     - {{method: int8}}
    # - name: half-resolution      # the CNN runs at half its input size inside (images holding less detail than
    #   steps:                     # image_size, e.g. upscaled small images), then int8; costs accuracy on W0
    #     - {{method: downscale, factor: 2, recovery: {{epochs: {recovery}, seconds: null}}}}
    #     - {{method: int8}}
    # Transformers only (model.kind hf-text; the text recipe uses them): method: drop_layers, method: prune_transformer

evaluate:
  batch_sizes: [1, 64]
  latency_runs: 30

# refit: true     # after the decision, train the shipped model again on training + validation and ship
#                 # that (more labels for it, about one more fine-tune of time; docs/decision.md)
"""


def render_recipe(*, model: str, weights: str | None, data: str, test: str | None = None, image_size: int | None = None,
                  name: str | None = None, pool_images: int | None = None, train_limit: int | None = 10000) -> str:
    """A complete recipe as commented YAML; values are validated by parsing it back. ``pool_images`` (the
    images available for training and validation) sizes the validation split and the epochs (:func:`plan_for`)."""
    import yaml

    from slimship.recipe import RECIPE_VERSION, parse_recipe

    def q(v):
        return "null" if v is None else yaml.safe_dump(v, default_style=None).strip().removesuffix("\n...").strip()

    plan = plan_for(pool_images, train_limit)
    sized = (f", sized to ~{plan.train_images:,} training images\n# (each stage sees about as many images whatever "
             f"the set's size)" if plan.train_images else "")
    val_note = (f" (0.2: a small set; docs/decision.md)" if plan.val_fraction != 0.1 else "")
    text = TEMPLATE.format(
        version=RECIPE_VERSION, name=q(name or "run"), model=q(model), weights=q(weights or "none"), data=q(data),
        test=q(test), image_size=image_size or 64, train_limit=q(train_limit), sized=sized,
        val_fraction=plan.val_fraction, val_note=val_note, transfer=plan.transfer, recovery=plan.recovery,
        channel_recovery=plan.channel_recovery, qat=plan.qat,
    )
    parse_recipe(yaml.safe_load(text), "generated recipe")  # fail here, not at run time, if a value is invalid
    return text


def check_init_inputs(*, model: str, weights: str | None, data: str, test: str | None = None) -> int:
    """Check what ``slimship init`` was given, at once: the architecture exists, the weights resolve, the data
    load and split. Returns the images available for training and validation (they size the recipe). Raises
    ModelError / DataError with a one-line message that says what to do."""
    import difflib

    import timm

    from slimship.core.errors import ModelError
    from slimship.data.sources import load_dataset

    if not timm.is_model(model):
        close = difflib.get_close_matches(model, timm.list_models(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ModelError(f"unknown model {model!r}{hint}: pass a timm architecture name "
                         f"(`python -c 'import timm; print(timm.list_models())'` lists them)")
    if weights and weights.lower() != "none":
        from slimship.models.weights import resolve_weights

        resolve_weights(weights)
    # lazy: an image folder is counted, not decoded (1,000 phone photos would need ~36 GB as arrays)
    sizes = load_dataset(data, test=test, seed=0, lazy=True).info["sizes"]
    return int(sizes["train"] + sizes["val"])
