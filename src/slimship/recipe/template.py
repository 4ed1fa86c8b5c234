"""The commented recipe written by ``slimship init`` (and the built-in demo's starting point)."""

from __future__ import annotations

TEMPLATE = """\
# slimship recipe (version {version}). Every value can be edited; `slimship run` validates it strictly
# (a misspelled key is an error, with the allowed names). Run:  slimship run THIS.yaml --out runs/NAME
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
  val_fraction: 0.1              # validation split (taken from train) for every decision
  test_fraction: 0.2             # used only when the source has no test split
  train_limit: {train_limit}     # stratified subsample of the training split (null = all)
  val_limit: 1000
  test_limit: null

transfer:
  strategy: finetune             # probe | finetune | partial
  head_init: random              # random | probe (LP-FT; use lr ~1e-4)
  budget: {{seconds: {seconds}}}      # or {{epochs: N}}
  lr: 0.001
  weight_decay: 0.05
  batch_size: 64
  label_smoothing: 0.1
  bn: frozen                     # frozen keeps BatchNorm statistics (safer on small budgets) | train
  freeze_stages: 0               # partial: stages from the input kept frozen
  gradual_unfreeze: false        # unfreeze from the top down over the first half of the budget
  layer_decay: null              # e.g. 0.7: lower LR for earlier stages
  augment: {{hflip: true, shift: 0}}
  evals: 4                       # validation passes; the best state is kept
  scratch_baseline: true         # train the same architecture from random init, same budget, beside it
  scratch_budget: null           # null = same as budget
  scratch_lr: 0.002

compress:
  accuracy_budget: 1.0           # points below the dense model (validation) a shipped model may lose
  candidates:                    # each is a chain of steps; the smallest package within budget ships
    - name: int8
      steps:
        - method: int8           # static int8, per-channel weights, calibrated on your data, for ONNX Runtime
          calibration: [minmax, percentile]
          keep_fp32: [none]             # or also first_last (stem and classifier in fp32)
          reduce_range: [true]
    - name: pruned30
      steps:
        - method: prune_channels # structured: the model really gets smaller
          ratio: 0.3
          importance: magnitude  # magnitude | bn_scale | taylor
          steps: 3
          recovery: {{seconds: {recovery}, lr: 0.0005, kd_alpha: 0.7}}
    - name: pruned30-int8
      steps:
        - method: prune_channels
          ratio: 0.3
          importance: magnitude
          steps: 3
          recovery: {{seconds: {recovery}, lr: 0.0005, kd_alpha: 0.7}}
        - method: int8
          calibration: [minmax, percentile]
          keep_fp32: [none]
          reduce_range: [true]
    - name: sparse50-kmeans4     # Deep Compression: prune, share weights, int8 depthwise; the smallest package
      steps:
        - {{method: unstructured, sparsity: 0.5, recovery: {{seconds: {recovery}, lr: 0.0005, kd_alpha: 0.7}}}}
        - {{method: kmeans, bits: 4, recovery: {{seconds: {recovery}, lr: 0.0001, kd_alpha: 0.7}}}}
        - {{method: weight_only, bits: 8, layers: depthwise}}
    # More methods (`slimship list`), e.g.
    # - name: int8-qat             # int8, then quantization-aware fine-tuning of the int8 graph's own weights
    #   steps:
    #     - {{method: int8, qat: {{seconds: {recovery}, lr: 0.00005, kd_alpha: 0.7}}}}
    # - name: lowrank
    #   steps:
    #     - {{method: lowrank, energy: 0.95, min_saving: 0.25, recovery: {{seconds: 60}}}}
    # - name: int4-linear          # weight-only int4 of Linear layers (ViT / MLP-Mixer / ResMLP), groups of 128
    #   steps:
    #     - {{method: weight_only, bits: 4, granularity: group, group_size: 128, layers: linear, clip: mse}}

evaluate:
  batch_sizes: [1, 64]
  latency_runs: 30
"""


def render_recipe(*, model: str, weights: str | None, data: str, test: str | None = None, image_size: int | None = None,
                  name: str | None = None, seconds: int = 150, recovery: int = 90, train_limit: int | None = 10000) -> str:
    """A complete recipe as commented YAML; values are validated by parsing it back."""
    import yaml

    from slimship.recipe import RECIPE_VERSION, parse_recipe

    def q(v):
        return "null" if v is None else yaml.safe_dump(v, default_style=None).strip().removesuffix("\n...").strip()

    text = TEMPLATE.format(
        version=RECIPE_VERSION, name=q(name or "run"), model=q(model), weights=q(weights or "none"), data=q(data),
        test=q(test), image_size=image_size or 64, seconds=seconds, recovery=recovery, train_limit=q(train_limit),
    )
    parse_recipe(yaml.safe_load(text), "generated recipe")  # fail here, not at run time, if a value is invalid
    return text
