"""Structural surgery on Hugging Face BERT-style encoders (BERT, RoBERTa, MiniLM, ELECTRA, XLM-R: the layer
layout ``attention.self.{query,key,value}``, ``attention.output.dense``, ``intermediate.dense``,
``output.dense``): the torch side of the hf-text adapter's :class:`~slimship.models.adapter.TransformerOps`.

Heads and neurons are removed by slicing the Linear layers (:func:`slimship.models.layers.keep_linear_`), so
weights, the ONNX graph, bytes and latency really shrink. The attention's forward in transformers 5 splits
heads with ``view(..., -1, head_size)``, so only the head count attributes change besides the shapes; they are
recorded (:func:`slimship.models.rebuild.set_int_attrs_`) so the model rebuilds from its edits.
"""

from __future__ import annotations

import torch
from torch import nn

from slimship.core.errors import ModelError
from slimship.models.adapter import TransformerBlock
from slimship.models.layers import keep_linear_
from slimship.models.rebuild import set_int_attrs_


def layers_name(model: nn.Module) -> str | None:
    """The name (in ``model.encoder``) of the encoder's largest ``nn.ModuleList``: its transformer layers."""
    lists = [(n, m) for n, m in model.encoder.named_modules() if isinstance(m, nn.ModuleList)]
    if not lists:
        return None
    return max(lists, key=lambda nm: sum(p.numel() for p in nm[1].parameters()))[0]


def layer_list(model: nn.Module) -> str:
    name = layers_name(model)
    if name is None:
        raise ModelError(f"{type(model.encoder).__name__} has no list of layers: layer dropping needs a "
                         f"transformer encoder")
    return f"encoder.{name}"


def _parts(layer: nn.Module) -> tuple[nn.Module, list[nn.Linear], nn.Linear, nn.Linear, nn.Linear]:
    """(self-attention, [query, key, value], attention output, FFN in, FFN out) of one BERT-style layer."""
    try:
        att = layer.attention.self
        return (att, [att.query, att.key, att.value], layer.attention.output.dense, layer.intermediate.dense,
                layer.output.dense)
    except AttributeError:
        raise ModelError(f"{type(layer).__name__} is not a BERT-style layer (attention.self.query ..., "
                         f"intermediate.dense, output.dense): head and neuron pruning support BERT, RoBERTa, "
                         f"MiniLM, ELECTRA and XLM-R encoders; use drop_layers or int8 for this model") from None


def _layers(model: nn.Module) -> nn.ModuleList:
    return model.get_submodule(layer_list(model))


def blocks(model: nn.Module) -> list[TransformerBlock]:
    out = []
    for layer in _layers(model):
        att, _, attn_out, _, ffn_out = _parts(layer)
        size = int(att.attention_head_size)
        out.append(TransformerBlock(attn_out, attn_out.in_features // size, size, ffn_out))
    return out


def keep_heads_(model: nn.Module, layer: int, heads: list[int]) -> None:
    att, qkv, attn_out, _, _ = _parts(_layers(model)[layer])
    size = int(att.attention_head_size)
    if not heads:
        raise ValueError("a layer keeps at least one attention head")
    index = torch.cat([torch.arange(h * size, (h + 1) * size) for h in sorted(heads)])
    for lin in qkv:
        keep_linear_(lin, index, 0)
    keep_linear_(attn_out, index, 1)
    values = {"num_attention_heads": len(heads), "all_head_size": len(heads) * size}
    set_int_attrs_(att, **{k: v for k, v in values.items() if hasattr(att, k)})


def keep_neurons_(model: nn.Module, layer: int, neurons: list[int]) -> None:
    _, _, _, ffn_in, ffn_out = _parts(_layers(model)[layer])
    if not neurons:
        raise ValueError("a layer keeps at least one feed-forward neuron")
    index = torch.as_tensor(sorted(neurons), dtype=torch.long)
    keep_linear_(ffn_in, index, 0)
    keep_linear_(ffn_out, index, 1)
