"""Hidden-state distillation in the recovery of transformer surgery (``recovery.hidden_kd``): which teacher layer
each student layer is matched to, what the loss counts (real tokens, not padding), and that a recovery with it
really pulls the student's layer outputs toward the teacher's."""

from __future__ import annotations

import copy

import pytest
import torch

from slimship.compress import CompressContext
from slimship.compress.base import ModelState, apply_step
from slimship.compress.drop_layers import DropLayersConfig
from slimship.compress.methods import load_builtin_methods
from slimship.compress.prune_transformer import PruneTransformerConfig
from slimship.compress.recovery import HiddenMatch, span_targets, teacher_layers
from slimship.models.rebuild import keep_modules_
from tests.text_helpers import make_tiny_bert, one_torch_thread, text_task  # noqa: F401  (fixtures)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
load_builtin_methods()
LAYERS = "encoder.encoder.layer"


@pytest.fixture(scope="module")
def deep_bert(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("bert4") / "bert", layers=4, hidden=32, heads=4)


def _task(bert, n_train=24):
    adapter, model, pre, T, V = text_task(bert, n_train=n_train, n_val=12)
    with torch.no_grad():
        model.head.weight.mul_(30)
    ctx = CompressContext(adapter, T, V, pre, teacher=model.eval(), num_classes=2, log=lambda s: None, seed=0)
    return ctx, model, pre.model_input(V.x)


def _gap(ctx, student, x) -> float:
    """The hidden-state loss (weight 1) of ``student`` against the teacher on ``x``, its layers as recorded."""
    origin = list(range(len(student.get_submodule(LAYERS))))
    return _gap_with(ctx, student, x, origin)


def _gap_with(ctx, student, x, origin) -> float:
    with HiddenMatch(student, ctx.teacher, ctx.adapter, span_targets(origin, 4), 1.0) as match, torch.no_grad():
        student.eval()(x)
        ctx.teacher(x)
        return float(match(x))


def test_each_student_layer_is_matched_to_the_output_its_successor_was_trained_to_read():
    assert span_targets([0, 2, 5], 6) == [1, 4, 5]
    assert span_targets([0, 1, 2, 3], 4) == [0, 1, 2, 3]  # nothing dropped: each layer to itself
    assert span_targets([3], 4) == [3]
    # a second drop_layers composes: its kept indices are of the first one's layers
    state = ModelState(model=None, notes={"teacher_layers": [0, 2, 5]})
    assert [teacher_layers(state, 3)[i] for i in (0, 2)] == [0, 5]
    assert teacher_layers(ModelState(model=None), 3) == [0, 1, 2]


def test_the_loss_is_zero_for_the_teacher_itself_and_leaves_padding_out(deep_bert):
    ctx, model, x = _task(deep_bert)
    assert _gap(ctx, copy.deepcopy(model), x) == pytest.approx(0.0, abs=1e-10)
    student = copy.deepcopy(model)
    with torch.no_grad():
        w = student.encoder.encoder.layer[1].output.dense.weight
        w.add_(torch.randn_like(w))
    gap = _gap(ctx, student, x)
    assert gap > 1e-3
    # what a layer outputs at padded positions does not count (they are not read by the pooling)
    pad = x == model.pad_id
    assert pad.any() and (~pad).any()

    def scramble_padding(module, args, out):
        hidden = out[0] if isinstance(out, tuple) else out
        hidden = torch.where(pad.unsqueeze(-1), torch.randn_like(hidden) * 100, hidden)
        return (hidden, *out[1:]) if isinstance(out, tuple) else hidden

    hooks = [layer.register_forward_hook(scramble_padding) for layer in student.get_submodule(LAYERS)]
    try:
        assert _gap(ctx, student, x) == pytest.approx(gap, rel=1e-5)
    finally:
        for h in hooks:
            h.remove()


def test_the_hooks_go_when_the_match_ends(deep_bert):
    ctx, model, x = _task(deep_bert)
    student = copy.deepcopy(model)
    with HiddenMatch(student, ctx.teacher, ctx.adapter, [0, 1, 2, 3], 1.0):
        assert any(layer._forward_hooks for layer in student.get_submodule(LAYERS))
    assert not any(layer._forward_hooks for layer in student.get_submodule(LAYERS))
    assert not any(layer._forward_hooks for layer in ctx.teacher.get_submodule(LAYERS))


def test_a_mismatched_layer_map_is_refused(deep_bert):
    ctx, model, x = _task(deep_bert)
    with pytest.raises(ValueError, match="do not fit"):
        HiddenMatch(copy.deepcopy(model), ctx.teacher, ctx.adapter, [0, 1], 1.0)


@pytest.mark.parametrize("keep", [[0, 3], [1, 2]])
def test_recovery_with_hidden_kd_brings_the_layer_outputs_closer_to_the_teacher(deep_bert, keep):
    ctx, model, x = _task(deep_bert, n_train=64)
    gaps = {}
    for weight in (0.0, 1.0):
        cfg = DropLayersConfig(indices=keep, recovery={"epochs": 60, "seconds": None, "lr": 3e-3,
                                                       "hidden_kd": weight})
        state = apply_step(ModelState(model=copy.deepcopy(model)), cfg, ctx)
        assert state.notes["teacher_layers"] == keep
        gaps[weight] = _gap_with(ctx, state.model, x, keep)
    assert gaps[1.0] < 0.3 * gaps[0.0], gaps


def test_pruning_after_dropping_matches_through_the_recorded_layers(deep_bert, monkeypatch):
    import slimship.compress.recovery as recovery

    ctx, model, x = _task(deep_bert)
    seen = []
    real = recovery.HiddenMatch

    class Spy(real):
        def __init__(self, student, teacher, ops, targets, weight):
            seen.append(list(targets))
            super().__init__(student, teacher, ops, targets, weight)

    monkeypatch.setattr(recovery, "HiddenMatch", Spy)
    rec = {"epochs": 1, "seconds": None, "hidden_kd": 1.0}
    state = apply_step(ModelState(model=model), DropLayersConfig(indices=[0, 2], recovery=rec), ctx)
    apply_step(state, PruneTransformerConfig(heads=0.25, ffn=0.25, steps=1, recovery=rec), ctx)
    assert seen == [[1, 3], [1, 3]]  # layers 0 and 2 of 4 stand for teacher layers 0-1 and 2-3
    # on by default (measured: docs/text.md)
    assert DropLayersConfig().recovery.hidden_kd == PruneTransformerConfig().recovery.hidden_kd == 1.0
    rec0 = {"epochs": 1, "seconds": None, "hidden_kd": 0.0}
    apply_step(ModelState(model=model), DropLayersConfig(indices=[0, 2], recovery=rec0), ctx)
    assert len(seen) == 2  # weight 0: no hooks, logits only


def test_the_weight_scales_the_loss(deep_bert):
    ctx, model, x = _task(deep_bert)
    student = copy.deepcopy(model)
    keep_modules_(student, LAYERS, [0, 2])
    with HiddenMatch(student, ctx.teacher, ctx.adapter, [1, 3], 0.5) as match, torch.no_grad():
        student(x)
        ctx.teacher(x)
        half = float(match(x))
    assert half > 0  # layers 0 and 2 cannot reproduce teacher outputs 1 and 3 untrained
    with HiddenMatch(student, ctx.teacher, ctx.adapter, [1, 3], 1.0) as match, torch.no_grad():
        student(x)
        ctx.teacher(x)
        assert float(match(x)) == pytest.approx(2 * half)  # the weight scales the loss
