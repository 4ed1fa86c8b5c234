import copy

import torch

from slimship.data.task import Examples
from slimship.data.transforms import ImagePreprocessing
from slimship.models import create_model
from slimship.models.timm_image import TimmImageAdapter, parameter_groups
from slimship.transfer.probe import extract_features, fit_linear_head, set_head_
from slimship.transfer.trainer import TrainConfig, accuracy, train, val_scores
from tests.conftest import examples, make_images

ADAPTER = TimmImageAdapter("test_efficientnet", 32)


def _data():
    return examples(*make_images(30, seed=0)), examples(*make_images(10, seed=1))


def _model():
    torch.manual_seed(0)
    b = create_model("test_efficientnet", 3, weights=None, image_size=32)
    return b.model, ImagePreprocessing(32, 1, b.mean, b.std)


def test_training_learns_a_learnable_task():
    T, V = _data()
    m, pre = _model()
    before = accuracy(m, V, pre)
    r = train(m, T, V, pre, TrainConfig(epochs=4, lr=3e-3, batch_size=16, bn="train", evals=2))
    assert r.best_val_accuracy >= 0.8 > before
    assert accuracy(m, V, pre) == r.best_val_accuracy  # left at the best state


def test_partial_freeze_keeps_early_stages_fixed():
    T, V = _data()
    m, pre = _model()
    groups = parameter_groups(m)
    assert groups[-1] == ["classifier.bias", "classifier.weight"]
    frozen = {n: p.detach().clone() for n, p in m.named_parameters() if n in set(groups[0] + groups[1])}
    train(m, T, V, pre, TrainConfig(epochs=1, lr=3e-3, batch_size=16, freeze_stages=2, evals=1), groups=groups)
    for n, p in m.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
    assert all(p.requires_grad for p in m.parameters())  # restored afterwards


def test_gradual_unfreeze_starts_with_the_head_and_ends_with_everything():
    T, V = _data()
    m, pre = _model()
    groups = parameter_groups(m)
    trainable: list[tuple[float, set[str]]] = []

    def record(model, progress):
        trainable.append((progress, {n for n, p in model.named_parameters() if p.requires_grad}))

    train(m, T, V, pre, TrainConfig(epochs=3, lr=3e-3, batch_size=16, gradual_unfreeze=True, evals=1),
          groups=groups, after_step=record)
    first, last = trainable[0][1], [t for p, t in trainable if p >= 0.5][0]
    assert first == set(groups[-1])  # only the classifier at the start
    assert last == {n for n, _ in m.named_parameters()}  # every group by half the budget
    sizes = [len(t) for _, t in trainable]
    assert sizes == sorted(sizes) and len(set(sizes)) > 2  # unfrozen group by group, never re-frozen


def test_layer_decay_scales_each_groups_step():
    T, V = _data()
    m, pre = _model()
    groups = parameter_groups(m)
    before = copy.deepcopy(m.state_dict())
    # one AdamW step: every parameter with a gradient moves by about lr x its group's scale
    cfg = TrainConfig(epochs=1 / (len(T) // 16), lr=1e-3, batch_size=16, layer_decay=0.5, weight_decay=0.0,
                      warmup=0.0, bn="train", evals=1)
    r = train(m, T, V, pre, cfg, groups=groups)
    assert r.steps == 1
    after = m.state_dict()

    def mean_step(names):
        moved = [(after[n] - before[n]).abs() for n in names if n in after and (after[n] - before[n]).abs().max() > 0]
        return torch.cat([d.flatten() for d in moved]).mean().item()

    top, bottom = mean_step(groups[-1]), mean_step(groups[0])
    expected = 0.5 ** (len(groups) - 1)
    assert bottom / top < 4 * expected  # ignoring layer_decay would give a ratio near 1
    assert bottom / top > expected / 4


def test_probe_head_matches_the_fitted_classifier():
    T, V = _data()
    m, pre = _model()
    ft, fv = extract_features(ADAPTER, m, T.x, pre), extract_features(ADAPTER, m, V.x, pre)
    w, b, info = fit_linear_head(ft, T.y, fv, V.y, 3)
    set_head_(m.get_classifier(), w, b)
    assert abs(accuracy(m, V, pre) - info["val_accuracy"]) < 1e-6


def test_distillation_learns_what_the_teacher_says():
    """With kd_alpha=1 the labels carry no weight: a teacher trained on shifted labels (class k called k+1) makes a
    student that predicts the shifted classes, although the student's own labels are the true ones."""
    T, V = _data()
    shifted = Examples(T.x, (T.y + 1) % 3)
    teacher, pre = _model()
    train(teacher, shifted, Examples(V.x, (V.y + 1) % 3), pre,
          TrainConfig(epochs=4, lr=3e-3, batch_size=16, bn="train", evals=1))
    student, _ = _model()
    train(student, T, V, pre, TrainConfig(epochs=4, lr=3e-3, batch_size=16, bn="train", evals=1, kd_alpha=1.0),
          teacher=teacher)
    assert accuracy(student, Examples(V.x, (V.y + 1) % 3), pre) >= 0.8
    assert accuracy(student, V, pre) <= 0.2


def test_freezing_every_group_is_a_recipe_error_not_a_traceback():
    import pytest

    from slimship.core.errors import RecipeError

    T, V = _data()
    m, pre = _model()
    groups = parameter_groups(m)
    with pytest.raises(RecipeError, match=f"use at most {len(groups) - 1}"):
        train(m, T, V, pre, TrainConfig(epochs=1, freeze_stages=len(groups), evals=1), groups=groups)


def test_of_states_with_equal_validation_accuracy_the_lowest_loss_is_kept():
    # an easy task: validation accuracy saturates after the first passes while the loss keeps falling. Keeping the
    # first state that reached the top accuracy (the old rule) threw the rest of the training away.
    T, V = _data()
    m, pre = _model()
    r = train(m, T, V, pre, TrainConfig(epochs=8, lr=3e-3, batch_size=16, bn="train", evals=6))
    top = max(h["val_accuracy"] for h in r.history)
    tied = [h for h in r.history if h["val_accuracy"] == top]
    assert len(tied) >= 2 and len({h["val_loss"] for h in tied}) == len(tied)  # a real tie to break
    best = min(tied, key=lambda h: h["val_loss"])
    assert best is not tied[0]
    acc, loss = val_scores(m, V, pre)
    assert acc == r.best_val_accuracy == top
    assert abs(loss - best["val_loss"]) < 1e-4  # left at the lowest-loss state of the tie
