"""The one training loop and the probe on a text model: partial fine-tuning, layer-wise LR decay, LP-FT's probe."""

from __future__ import annotations

import pytest
import torch

from slimship.transfer.probe import extract_features, fit_linear_head, set_head_
from slimship.transfer.trainer import TrainConfig, _param_groups, accuracy, train
from tests.text_helpers import one_torch_thread, text_task, tiny_bert  # noqa: F401  (fixtures)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_finetune_learns_and_partial_keeps_embeddings_and_first_layer(tiny_bert):
    adapter, model, pre, T, V = text_task(tiny_bert)
    groups = adapter.layer_groups(model)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if n in set(groups[0] + groups[1])}
    moving = {n: p.detach().clone() for n, p in model.named_parameters() if n in set(groups[2])}
    r = train(model, T, V, pre, TrainConfig(epochs=6, lr=3e-3, batch_size=8, freeze_stages=2, evals=2,
                                            hflip=False), groups=groups)
    assert r.best_val_accuracy >= 0.8
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
    assert any(not torch.equal(p, moving[n]) for n, p in model.named_parameters() if n in moving)


def test_layer_decay_lowers_the_lr_from_the_head_down(tiny_bert):
    adapter, model, *_ = text_task(tiny_bert)
    groups = adapter.layer_groups(model)
    pg = _param_groups(model, TrainConfig(epochs=1, layer_decay=0.5), groups)
    scale = {id(p): g["lr_scale"] for g in pg for p in g["params"]}
    named = dict(model.named_parameters())
    assert scale[id(named["head.weight"])] == 1.0
    assert scale[id(named[groups[2][0]])] == 0.5 and scale[id(named[groups[1][0]])] == 0.25
    assert scale[id(named["encoder.embeddings.word_embeddings.weight"])] == 0.125


def test_the_generic_probe_works_on_pooled_text_features(tiny_bert):
    adapter, model, pre, T, V = text_task(tiny_bert, n_train=40, n_val=20)
    f_tr, f_va = (extract_features(adapter, model, d.x, pre) for d in (T, V))
    assert f_tr.shape == (80, 32)
    w, b, info = fit_linear_head(f_tr, T.y, f_va, V.y, 2)
    set_head_(adapter.classifier(model), w, b)
    assert accuracy(model, V, pre) == info["val_accuracy"] >= 0.7  # random BERT features still separate the words
