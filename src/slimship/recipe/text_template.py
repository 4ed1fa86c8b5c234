"""The commented recipe ``slimship init`` writes for a text task (a Hugging Face text model and a text data set),
beside the image template (:mod:`slimship.recipe.template`)."""

from __future__ import annotations

from pathlib import Path

from slimship.core.errors import DataError, ModelError, SlimshipError

VAL_TEXTS = 1000  # the template's val_limit: validation texts beyond it would be held out of training for nothing


def text_val_fraction(pool_texts: int | None) -> float:
    """The validation share for ``pool_texts`` texts available for training and validation: enough for up to
    :data:`VAL_TEXTS` validation texts, between 0.1 and 0.2 (rounded down, so none is held out beyond the limit).

    A text budget is 0.5 point: on 424 validation texts (0.1 of SpamAssassin's 4,232) that is two texts, and the
    3-layer pruned model stayed at P = 0.59; on 846 (0.2) it reached P = 0.89 and shipped (docs/text.md)."""
    if not pool_texts:
        return 0.1
    share = min(0.2, max(0.1, VAL_TEXTS / pool_texts))
    return max(0.1, int(share * 100) / 100)


SAMPLE_TEXTS = 1000  # texts init tokenizes to say how many the cut at max_length shortens


def text_pool(data: str, test: str | None = None, text_column: str | None = None,
              label_column: str | None = None) -> tuple[int, list[str]]:
    """Load ``data`` as ``slimship run`` will: the number of texts available for training and validation, and an
    evenly spread sample of up to :data:`SAMPLE_TEXTS` of them. Raises DataError (one line, saying what to do)
    when it does not load or split."""
    import numpy as np

    from slimship.data.sources import load_dataset

    text_column, label_column = _columns(data, text_column, label_column)
    try:
        splits = load_dataset(data, test=test, lazy=True,
                              options={"text_column": text_column, "label_column": label_column})
    except DataError as e:  # the loader's advice names the recipe's keys; here the user passes flags
        raise DataError(str(e).replace("set data.text_column / data.label_column",
                                       "pass --text-column / --label-column")) from None
    texts = splits.train.texts
    picked = np.linspace(0, len(texts) - 1, min(SAMPLE_TEXTS, len(texts))).round().astype(int)
    return len(splits.train) + len(splits.val), [str(texts[i]) for i in picked]


def _columns(data: str, text_column: str | None, label_column: str | None) -> tuple[str, str]:
    """The text and label columns: as given, else guessed from a table's header, else ``text`` / ``label``."""
    path = Path(data).expanduser()
    table = path.suffix.lower() in (".csv", ".tsv", ".jsonl", ".ndjson") and path.is_file()
    if table and (text_column is None or label_column is None):
        from slimship.data.text_table import guess_columns

        guessed = guess_columns(path)
        text_column, label_column = text_column or guessed[0], label_column or guessed[1]
    return text_column or "text", label_column or "label"


TEXT_TEMPLATE = """\
# slimship recipe for a text classifier (version {version}). Every value can be edited; `slimship run` validates it
# strictly (a misspelled key is an error, with the allowed names). Run:  slimship run THIS.yaml --out runs/NAME
version: {version}
name: {name}
seed: 0

model:
  kind: hf-text                  # a Hugging Face text encoder + a linear head (`slimship list`)
  architecture: {model}          # model folder (config.json, *.safetensors, tokenizer.json) or installed package
  weights: null                  # null = the folder's safetensors; none = random init
  max_length: {max_length}       # tokens per text (longer texts are cut); batches of short texts run shorter{cut_note}
  tail_tokens: {tail_tokens}          # a longer text keeps its last N tokens, the rest from its start (0: start only)
  pooling: mean                  # mean of the token states | cls (the first token's)

data:
  source: {data}
  test: {test}                   # null = the source's own test split, else a stratified split
  val_fraction: {val_fraction}              # validation split (taken from train) for every decision{val_note}
  test_fraction: 0.2             # used only when the source has no test split
  train_limit: {train_limit}     # stratified subsample of the training split (null = all)
  val_limit: {val_limit}
  test_limit: null
  text_column: {text_column}     # tables (.csv/.tsv/.jsonl): the column holding the text
  label_column: {label_column}   # ... and the one holding the class

transfer:
  strategy: finetune             # probe | finetune | partial (freeze_stages: 1 = embeddings, 2 = + first layer...)
  head_init: probe               # LP-FT: start from the logistic-regression probe's head (computed anyway)
  budget: {{epochs: {epochs}}}        # or {{seconds: N}}
  lr: 0.0001
  weight_decay: 0.01
  batch_size: 16
  label_smoothing: 0.0
  freeze_stages: 0
  gradual_unfreeze: false
  layer_decay: 0.9               # LR x0.9 per layer below the head (null: one LR)
  augment: {{hflip: false, shift: 0}}  # texts are not augmented
  evals: 4                       # validation passes; the best is kept (equal accuracies: the lowest loss)
  scratch_baseline: true         # the same architecture from random init, beside it
  scratch_budget: {{epochs: 1}}
  scratch_lr: 0.0005

compress:
  accuracy_budget: 0.5           # points below the dense model (validation) a shipped model may lose
  candidates:                    # each is a chain of steps; the smallest package within budget ships
    - name: int8
      steps:
        - method: int8           # int8 for ONNX Runtime, per-channel weights; dynamic and static tried on validation
          mode: [dynamic, static]
          static_ops: [linear]   # static: only the layers with weights (attention scores, softmax stay float)
          calibration: [minmax]
          keep_fp32: [none]
          reduce_range: [false]  # true: 7-bit weights, for CPUs without VNNI
          calibration_images: 32  # static only; ORT keeps every calibrated tensor in memory (~50 MB a text)
    - name: half-layers-int8     # half the transformer layers, distilled from the fine-tuned model, then int8
      steps:
        - method: drop_layers
          keep: 0.5              # a count of layers (3) or a fraction of them
          select: even           # even: evenly spaced, first and last kept | greedy: chosen on validation
          # distilled from the fine-tuned model: its logits, and each layer's output (hidden_kd; 0: logits only)
          recovery: {{epochs: 2, seconds: null, lr: 0.0001, hidden_kd: 1.0}}
        - {{method: int8, mode: [dynamic], calibration: [minmax], reduce_range: [false], calibration_images: 32}}
    - name: half-layers-pruned-int8  # the same half (cached), then a quarter of its heads and half its FFN neurons
      steps:                     # (SpamAssassin, docs/text.md: 7.6x smaller, 4.0x / 4.8x faster, -0.11 point)
        - method: drop_layers
          keep: 0.5
          select: even
          recovery: {{epochs: 2, seconds: null, lr: 0.0001, hidden_kd: 1.0}}
        - {{method: prune_transformer, heads: 0.25, ffn: 0.5, steps: 2, recovery: {{epochs: 2, seconds: null, lr: 0.0001}}}}
        - {{method: int8, mode: [dynamic], calibration: [minmax], reduce_range: [false], calibration_images: 32}}
    - name: pruned-int8          # a quarter of the attention heads and half the FFN neurons removed, then int8
      steps:
        - method: prune_transformer
          heads: 0.25            # of all heads (they compete across layers; every layer keeps one)
          ffn: 0.5               # of each layer's feed-forward neurons
          importance: taylor     # taylor (gradient x weight) | magnitude
          steps: 2               # prune-recover rounds; the recovery budget is split over them
          recovery: {{epochs: 2, seconds: null, lr: 0.0001}}
        - {{method: int8, mode: [dynamic], calibration: [minmax], reduce_range: [false], calibration_images: 32}}
    # More methods (`slimship list`); these make the package smaller but run at fp32 speed, e.g.
    # - name: int4-linear          # weight-only int4 of every Linear layer, groups of 64
    #   steps:
    #     - {{method: weight_only, bits: 4, granularity: group, group_size: 64, spare: [], min_weights: 4096}}
    # - name: sparse50-kmeans4     # half the Linear weights pruned, the rest shared in 16 values per layer
    #   steps:
    #     - {{method: unstructured, sparsity: 0.5, spare: [last], recovery: {{epochs: 0.5, seconds: null, lr: 0.00005}}}}
    #     - {{method: kmeans, bits: 4, spare: [], recovery: {{epochs: 0.5, seconds: null, lr: 0.00002}}}}

evaluate:
  batch_sizes: [1, 32]           # latency at max_length tokens
  latency_runs: 10

# refit: true     # after the decision, train the shipped model again on training + validation and ship
#                 # that (more labels for it, about one more fine-tune of time; docs/decision.md)
"""


def check_text_model(model: str, max_length: int | None):
    """The model folder is complete (config, tokenizer, safetensors weights) and reads ``max_length`` tokens:
    returns its preprocessing (:class:`~slimship.data.text_preprocessing.TextPreprocessing`), or raises ModelError
    naming the ``init`` option to change."""
    from slimship.models.hf_text import HfTextAdapter

    try:
        return HfTextAdapter(model, max_length).check_ready()
    except ModelError as e:
        raise ModelError(str(e).replace("set model.max_length to", "pass --max-length")) from None


def _cut_note(cut_share: float | None, max_length: int, positions: int | None) -> str:
    """A comment under ``max_length`` when the cut shortens many of the texts (5 % or more of the sample)."""
    if cut_share is None or cut_share < 0.05:
        return ""
    more = (f"a larger max_length (this model reads up to {positions}) sees more, at a higher cost per text"
            if positions and positions > max_length else "this model reads no more positions")
    return (f"\n  # {100 * cut_share:.0f} % of these texts are longer than {max_length} tokens and lose their middle:"
            f"\n  # {more} (docs/text.md)")


def default_tail(max_length: int) -> int:
    """Tokens a long text keeps from its end by default: half of ``max_length`` (SpamAssassin at 256 tokens: the
    fine-tune makes 21 test errors instead of 25 with the start only, docs/text.md)."""
    return max_length // 2


def text_task(model: str, data: str) -> bool:
    """Whether ``model`` and ``data`` make a text task; a text model with image data (or the reverse) is a
    SlimshipError that says what to pass. Data that cannot be resolved is left to the image path's checks."""
    from slimship.data.inputs import source_examples
    from slimship.models.hf_text import is_hf_text_model

    text_model = is_hf_text_model(model)
    try:
        examples = source_examples(data)
    except DataError:
        if text_model:
            raise
        return False
    if text_model and examples != "texts":
        raise SlimshipError(f"{model} is a text model but {data} holds {examples}: pass a text data set (a folder of "
                            f".txt/.eml per class, a .csv/.jsonl, spam-assassin)")
    if examples == "texts" and not text_model:
        raise SlimshipError(f"{data} holds texts but {model} is not a Hugging Face text model: pass a model folder "
                            f"(config.json, model.safetensors, tokenizer.json) or an installed package holding one")
    return text_model


def render_text_recipe(*, model: str, data: str, test: str | None = None, max_length: int | None = None,
                       text_column: str | None = None, label_column: str | None = None, name: str | None = None,
                       epochs: float = 2, train_limit: int | None = 5000, pool_texts: int | None = None,
                       cut_share: float | None = None) -> str:
    """A complete text recipe as commented YAML (validated by parsing it back). The columns of a table are
    guessed from its header when not given (:func:`slimship.data.text_table.guess_columns`); ``pool_texts`` (the
    texts available for training and validation, :func:`text_pool`) sizes the validation split
    (:func:`text_val_fraction`); ``cut_share`` (the share of them longer than ``max_length`` tokens) is noted
    beside ``max_length`` when it is large."""
    import yaml

    from slimship.recipe import RECIPE_VERSION, parse_recipe

    def q(v):
        return "null" if v is None else yaml.safe_dump(v, default_style=None).strip().removesuffix("\n...").strip()

    text_column, label_column = _columns(data, text_column, label_column)
    val_fraction = text_val_fraction(pool_texts)
    val_note = f" (sized to {pool_texts:,} texts; docs/text.md)" if val_fraction != 0.1 else ""
    max_length = max_length or _default_max_length(model)
    text = TEXT_TEMPLATE.format(
        version=RECIPE_VERSION, name=q(name or "run"), model=q(model), data=q(data), test=q(test),
        max_length=max_length, cut_note=_cut_note(cut_share, max_length, _positions(model)),
        tail_tokens=default_tail(max_length),
        train_limit=q(train_limit), epochs=q(epochs),
        text_column=q(text_column), label_column=q(label_column), val_fraction=val_fraction, val_note=val_note,
        val_limit=VAL_TEXTS)
    parse_recipe(yaml.safe_load(text), "generated recipe")  # fail here, not at run time, if a value is invalid
    return text


def _positions(model: str) -> int | None:
    """How many tokens the model reads at most (its position embeddings), when its config says."""
    from slimship.models.hf_text import HfTextAdapter

    return HfTextAdapter(model).positions()


def _default_max_length(model: str) -> int:
    """256 tokens, or fewer when the model reads fewer positions."""
    from slimship.models.hf_text import HfTextAdapter

    return HfTextAdapter(model).sequence_length()
