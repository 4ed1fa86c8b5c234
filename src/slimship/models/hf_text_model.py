"""Hugging Face text encoders as slimship classifiers (the torch side of :mod:`slimship.models.hf_text`): load a
model folder offline from safetensors, put a classification head on its pooled output, export it to ONNX with
dynamic batch and sequence length.

Nothing is fetched: ``HF_HUB_OFFLINE=1`` is set before transformers is imported, and weights load through
safetensors only (``use_safetensors=True``: a pickled ``.bin`` is never read). ``trust_remote_code`` stays off, so
no code from a model folder runs.
"""

from __future__ import annotations

import copy
import functools
import io
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from slimship.core.errors import ModelError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


class TextClassifier(nn.Module):
    """``encoder`` (a Hugging Face base model) → masked mean (or first-token) pooling → ``head``.

    The input is one int64 tensor of token ids ``[B, L]``; the attention mask is ``ids != pad_id``, built here,
    so the deploy graph takes token ids alone and any ``L``. With ``head`` an ``nn.Identity`` the model outputs
    the pooled features (the base of task deltas).
    """

    def __init__(self, encoder: nn.Module, num_classes: int, pad_id: int, pooling: str = "mean"):
        super().__init__()
        self.encoder = encoder
        self.pad_id = int(pad_id)
        self.pooling = pooling
        hidden = int(encoder.config.hidden_size)
        self.head: nn.Module = nn.Linear(hidden, num_classes) if num_classes else nn.Identity()

    def token_mask(self, ids: torch.Tensor) -> torch.Tensor:
        """Which positions of ``ids`` hold real tokens (not padding)."""
        return ids != self.pad_id

    def features(self, ids: torch.Tensor) -> torch.Tensor:
        mask = self.token_mask(ids)
        hidden = self.encoder(input_ids=ids, attention_mask=mask.to(torch.long)).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(ids))


# ---- reading a model folder ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def load_config(folder: Path):
    """The folder's config (cached: adapters ask for it often; never modified)."""
    from transformers import AutoConfig

    _quiet_transformers()
    try:
        return AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise ModelError(f"{folder}/config.json cannot be read as a Hugging Face config ({str(e)[:100]}): pass a "
                         f"Hugging Face model folder") from None


def tokenizer_json(folder: Path) -> str:
    """The folder's ``tokenizer.json``, or the one a fast tokenizer builds from its vocabulary files."""
    path = folder / "tokenizer.json"
    if path.is_file():
        return path.read_text(encoding="utf-8")
    from transformers import AutoTokenizer

    _quiet_transformers()
    try:
        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, use_fast=True)
        backend = tok.backend_tokenizer
    except (OSError, ValueError, AttributeError, ImportError) as e:
        raise ModelError(f"{folder} has no tokenizer.json and no vocabulary a fast tokenizer can read "
                         f"({str(e)[:80]}): add the model's tokenizer.json") from None
    # with no vocabulary file at all, transformers still builds a tokenizer from the config: one of only its
    # special tokens, which turns every word into [UNK] and trains on nothing
    if set(backend.get_vocab()) <= set(tok.all_special_tokens):
        raise ModelError(f"{folder} has no tokenizer.json and no vocabulary file (a tokenizer built from it knows only "
                         f"its {len(backend.get_vocab())} special tokens): add the model's tokenizer.json")
    return backend.to_str()


def check_weights(folder: Path) -> None:
    """ModelError unless ``folder`` holds safetensors weights (pickled ``.bin`` weights are never loaded)."""
    if not any(folder.glob("*.safetensors")):
        raise ModelError(f"{folder} has no .safetensors weights (pickled .bin weights are never loaded): convert them "
                         f"to safetensors, or set model.weights: none for random init")


def build_encoder(folder: Path, config, pretrained: bool) -> tuple[nn.Module, dict]:
    """The base model (no task head, no pooler), with the folder's safetensors weights when ``pretrained``."""
    from transformers import AutoModel

    _quiet_transformers()
    kwargs = {"attn_implementation": "sdpa"}
    if not pretrained:
        try:
            return AutoModel.from_config(config, add_pooling_layer=False, **kwargs), {"source": "random init"}
        except TypeError:  # encoders without a pooler take no add_pooling_layer
            return AutoModel.from_config(config, **kwargs), {"source": "random init"}
    check_weights(folder)
    load = functools.partial(AutoModel.from_pretrained, str(folder), local_files_only=True, use_safetensors=True,
                             output_loading_info=True, **kwargs)
    try:
        try:
            encoder, info = load(add_pooling_layer=False)
        except TypeError:
            encoder, info = load()
    except (OSError, ValueError, RuntimeError) as e:
        raise ModelError(f"weights in {folder} cannot be loaded ({str(e).splitlines()[0][:120]}): check the folder "
                         f"holds one model's config.json and safetensors") from None
    missing = [k for k in info.get("missing_keys", []) if not k.endswith("position_ids")]
    mismatched = info.get("mismatched_keys", [])
    if missing or mismatched:
        bad = [*missing, *(str(m[0]) if isinstance(m, (tuple, list)) else str(m) for m in mismatched)]
        raise ModelError(f"weights in {folder} leave {len(bad)} tensor(s) of the encoder unloaded (e.g. {bad[0]}): "
                         f"the safetensors file does not fit config.json")
    loaded = sum(1 for _ in encoder.state_dict())
    return encoder, {"source": str(folder), "layout": "hugging face", "loaded": loaded}


def _quiet_transformers() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


# ---- the adapter's model-side operations ---------------------------------------------------------------------


def without_head(model: TextClassifier) -> TextClassifier:
    backbone = copy.deepcopy(model).eval()
    backbone.head = nn.Identity()
    return backbone


def layer_groups(model: TextClassifier) -> list[list[str]]:
    """Parameter names from input to output: embeddings, each transformer layer, anything else (final norms),
    the head. The layers are the encoder's largest ``nn.ModuleList`` (``encoder.layer`` in BERT)."""
    layers_name = max(((n, m) for n, m in model.encoder.named_modules() if isinstance(m, nn.ModuleList)),
                      key=lambda nm: sum(p.numel() for p in nm[1].parameters()), default=(None, None))[0]
    prefix = f"encoder.{layers_name}." if layers_name else None
    n_layers = len(model.encoder.get_submodule(layers_name)) if layers_name else 0
    embeddings: list[str] = []
    per_layer: list[list[str]] = [[] for _ in range(n_layers)]
    rest: list[str] = []
    head: list[str] = []
    for name, _ in model.named_parameters():
        if name.startswith("head."):
            head.append(name)
        elif prefix and name.startswith(prefix):
            per_layer[int(name[len(prefix):].split(".")[0])].append(name)
        elif "embed" in name:
            embeddings.append(name)
        else:
            rest.append(name)
    return [g for g in (embeddings, *per_layer, rest) if g] + [head]


def export_onnx(model: TextClassifier, opset: int = 17) -> bytes:
    """ONNX graph of ``model`` in eval mode: int64 token ids ``input`` [batch, sequence] → ``logits``.

    Exported with eager attention (the same numbers as SDPA, and a plain MatMul/Softmax graph that ONNX Runtime
    fuses and its quantizer understands; SDPA exports NaN guards that cost ~20 % of the run time), with the
    TorchScript-based exporter like the image models.
    """
    import onnx

    export = copy.deepcopy(model).eval()
    export.encoder.set_attn_implementation("eager")
    vocab = int(export.encoder.config.vocab_size)
    ids = (torch.arange(2 * 16).reshape(2, 16) % (vocab - 1)) + 1
    ids = torch.where(ids == export.pad_id, ids + 1, ids)
    ids[1, 10:] = export.pad_id  # a padded row, so the mask path is traced as it runs
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(export, (ids,), buf, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch", 1: "sequence"}, "logits": {0: "batch"}},
                          opset_version=opset, do_constant_folding=True, dynamo=False)
    data = buf.getvalue()
    onnx.checker.check_model(onnx.load_from_string(data))
    return data
