import torch

from slimship.data.transforms import Preprocessing, resize_uint8
from slimship.models import create_model
from slimship.transfer.finetune import TrainConfig, accuracy, train
from slimship.transfer.layers import parameter_groups
from slimship.transfer.probe import extract_features, fit_linear_head, set_head_
from tests.conftest import make_images


def _data(size=32):
    x, y = make_images(30, seed=0)
    vx, vy = make_images(10, seed=1)
    return resize_uint8(x, size), torch.from_numpy(y), resize_uint8(vx, size), torch.from_numpy(vy)


def _model():
    torch.manual_seed(0)
    b = create_model("test_efficientnet", 3, weights=None, image_size=32)
    return b.model, Preprocessing(32, 1, b.mean, b.std)


def test_training_learns_a_learnable_task():
    X, Y, VX, VY = _data()
    m, pre = _model()
    before = accuracy(m, VX, VY, pre)
    r = train(m, X, Y, VX, VY, pre, TrainConfig(epochs=4, lr=3e-3, batch_size=16, bn="train", evals=2))
    assert r.best_val_accuracy >= 0.8 > before
    assert accuracy(m, VX, VY, pre) == r.best_val_accuracy  # left at the best state


def test_partial_freeze_keeps_early_stages_fixed():
    X, Y, VX, VY = _data()
    m, pre = _model()
    groups = parameter_groups(m)
    assert groups[-1] == ["classifier.bias", "classifier.weight"]
    frozen = {n: p.detach().clone() for n, p in m.named_parameters() if n in set(groups[0] + groups[1])}
    train(m, X, Y, VX, VY, pre, TrainConfig(epochs=1, lr=3e-3, batch_size=16, freeze_stages=2, evals=1))
    for n, p in m.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
    assert all(p.requires_grad for p in m.parameters())  # restored afterwards


def test_gradual_unfreeze_and_layer_decay_run():
    X, Y, VX, VY = _data()
    m, pre = _model()
    r = train(m, X, Y, VX, VY, pre, TrainConfig(epochs=2, lr=3e-3, batch_size=16, gradual_unfreeze=True,
                                                 layer_decay=0.7, evals=1))
    assert r.steps > 0 and 0 <= r.best_val_accuracy <= 1


def test_probe_head_matches_the_fitted_classifier():
    X, Y, VX, VY = _data()
    m, pre = _model()
    ft, fv = extract_features(m, X, pre), extract_features(m, VX, pre)
    w, b, info = fit_linear_head(ft, Y, fv, VY, 3)
    set_head_(m, w, b)
    assert abs(accuracy(m, VX, VY, pre) - info["val_accuracy"]) < 1e-6


def test_distillation_uses_the_teacher():
    X, Y, VX, VY = _data()
    teacher, pre = _model()
    train(teacher, X, Y, VX, VY, pre, TrainConfig(epochs=3, lr=3e-3, batch_size=16, bn="train", evals=1))
    student, _ = _model()
    r = train(student, X, Y, VX, VY, pre, TrainConfig(epochs=3, lr=3e-3, batch_size=16, bn="train", evals=1,
                                                      kd_alpha=0.9), teacher=teacher)
    assert r.best_val_accuracy > 0.5
