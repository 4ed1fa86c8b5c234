"""The reference is the best transferred model on validation; a stage that ends below an earlier one says so."""

from __future__ import annotations

from slimship.transfer.stage import TrainedModel, choose_reference


def _m(name: str, val: float) -> TrainedModel:
    return TrainedModel(name, name, model=None, key=name, seconds=0.0, notes={"val_accuracy": val})


def test_a_fine_tune_below_the_probe_is_reported_and_the_probe_is_used():
    logged = []
    ref, choice = choose_reference([_m("probe", 0.91), _m("finetuned", 0.43)], logged.append)
    assert ref.name == "probe" and choice["reference"] == "probe"
    assert choice["val_accuracy"] == {"probe": 0.91, "finetuned": 0.43}
    assert len(choice["warnings"]) == 1 and "finetuned ended below probe" in choice["warnings"][0]
    assert any(line.startswith("warning: finetuned ended below probe") for line in logged)


def test_the_better_fine_tune_is_the_reference_and_a_tie_goes_to_the_later_stage():
    ref, choice = choose_reference([_m("probe", 0.80), _m("finetuned", 0.90)], lambda s: None)
    assert ref.name == "finetuned" and choice["warnings"] == []
    ref, _ = choose_reference([_m("probe", 0.90), _m("finetuned", 0.90)], lambda s: None)
    assert ref.name == "finetuned"
    ref, _ = choose_reference([_m("probe", 0.7)], lambda s: None)  # strategy probe
    assert ref.name == "probe"


def test_the_probe_scores_validation_exactly_as_the_trainer_does_so_a_tie_stays_a_tie():
    """8 of 10 right is 0.8 in both: the probe once counted in float32 (0.80000001), so a fine-tune with the same
    8 of 10 'ended below the probe' and the probe became the reference."""
    import torch

    from slimship.transfer.probe import fit_linear_head

    g = torch.Generator().manual_seed(0)
    train_x, val_x = torch.randn(40, 6, generator=g), torch.randn(10, 6, generator=g)
    train_y = (train_x[:, 0] > 0).long()
    val_y = (val_x[:, 0] > 0).long()
    val_y[:2] = 1 - val_y[:2]  # two labels the features contradict: at most 8 of 10 right
    _, _, info = fit_linear_head(train_x, train_y, val_x, val_y, 2)
    right = round(info["val_accuracy"] * 10)
    assert right <= 8 and info["val_accuracy"] == right / 10  # exactly, as the trainer's count / total
    ref, choice = choose_reference([_m("probe", info["val_accuracy"]), _m("finetuned", right / 10)], lambda s: None)
    assert ref.name == "finetuned" and choice["warnings"] == []
