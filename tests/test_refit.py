"""``refit: true``: after the decision, the shipped model trains again on training + validation, is measured on test
and ships as model.slim (tiny BERT, tiny texts; api/refit.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from slimship.api import run
from slimship.api.refit import kept_epochs, merged_data, same_examples
from slimship.recipe import parse_recipe
from tests.text_helpers import one_torch_thread, text_recipe, tiny_bert, write_text_folder  # noqa: F401


@pytest.fixture(scope="module")
def refit_run(tmp_path_factory, tiny_bert):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model trains far faster on one thread of a busy machine
    root = tmp_path_factory.mktemp("refit")
    data = write_text_folder(root / "texts", 30)
    r = text_recipe(tiny_bert, str(data), refit=True)
    r["transfer"]["scratch_baseline"] = False
    r["compress"]["candidates"] = [{"name": "sparse-int8", "steps": [  # a recovery, then int8
        {"method": "unstructured", "sparsity": 0.3, "recovery": {"epochs": 12, "seconds": None}},
        {"method": "int8", "mode": ["dynamic"], "calibration": ["minmax"], "calibration_images": 32}]}]
    try:
        metrics = run(parse_recipe(r), root / "out", quiet=True)
        again = run(parse_recipe(r), root / "out", quiet=True)  # every stage from the cache, the refit's too
    finally:
        torch.set_num_threads(before)
    return root / "out", metrics, again


def test_the_shipped_model_trains_again_on_training_and_validation_and_ships(refit_run):
    out, _, m = refit_run  # the second run's figures: its packages are the ones on disk
    sizes = m["dataset"]["sizes"]
    r = m["refit"]
    assert m["selected"] == "sparse-int8" and r["source"] == "sparse-int8"
    assert r["shipped"] == "sparse-int8-refit" and r["reference"] == "finetuned-refit"
    assert r["train_examples"] == sizes["train"] + sizes["val"]  # validation joined training; test did not
    by = {e["name"]: e for e in r["models"]}
    ref = by["finetuned-refit"]
    # the fine-tune's steps follow the merged split: the kept pass's epochs over train + validation
    assert ref["notes"]["steps"] == math.ceil(r["epochs"] * ((sizes["train"] + sizes["val"]) // 16))
    assert r["epochs"] == kept_epochs(next(e for e in m["models"] if e["name"] == "finetuned")["notes"])
    # the chain's recovery: as many examples as the first fit's (its epochs x train / (train + validation))
    assert r["recovery_scale"] == round(sizes["train"] / (sizes["train"] + sizes["val"]), 4) < 1
    (first,) = next(e for e in m["models"] if e["name"] == "sparse-int8")["notes"]["training"]
    (again,) = by["sparse-int8-refit"]["notes"]["training"]
    assert first["epochs"] == 12 and again["epochs"] == pytest.approx(12 * r["recovery_scale"], abs=0.5)
    for e in r["models"]:  # measured on test, with no validation figure (they trained on it)
        assert 0 <= e["accuracy"] <= 1 and e["val_accuracy"] is None
        assert e["latency_ms"]["batch1"] > 0
        assert e["size_bytes"] == (out / "packages" / f"{e['name']}.slim").stat().st_size
    assert by["sparse-int8-refit"]["size_bytes"] < ref["size_bytes"]
    # model.slim is the refit shipped model, byte for byte; the first fit's packages stay
    assert (out / "model.slim").read_bytes() == (out / "packages" / "sparse-int8-refit.slim").read_bytes()
    assert (out / "packages" / "sparse-int8.slim").read_bytes() != (out / "model.slim").read_bytes()
    with np.load(out / "predictions.npz", allow_pickle=False) as z:
        assert {"test/sparse-int8", "test/sparse-int8-refit", "test/finetuned-refit"} <= set(z.files)
        assert len(z["test/sparse-int8-refit"]) == len(z["test_labels"]) == sizes["test"]
    report = (out / "report.md").read_text()
    assert "## Refit on training + validation" in report and "| sparse-int8-refit * |" in report
    assert "Refit on training + validation" in (out / "report.html").read_text()
    assert json.loads((out / "metrics.json").read_text())["refit"]["shipped"] == "sparse-int8-refit"


def test_the_terminal_table_names_the_refit_model_as_shipped(refit_run, capsys):
    from slimship.cli.table import print_table

    out, _, m = refit_run
    print_table(m)
    text = capsys.readouterr().out
    assert f"{out / 'model.slim'} = sparse-int8-refit:" in text and "refit on training + validation" in text
    assert (out / "run.log").read_text().rstrip().endswith("(sparse-int8-refit)")


def test_a_rerun_takes_the_refit_from_the_stage_cache(refit_run):
    out, m, again = refit_run
    log = (out / "run.log").read_text().split("device:")[-1]  # the second run's lines
    assert log.count("finetune: restored from cache") == 2  # the first fit's and the refit's
    assert again["refit"]["models"][0]["accuracy"] == m["refit"]["models"][0]["accuracy"]


def test_kept_epochs_is_where_the_first_fit_kept_its_pass():
    hist = [{"progress": 0.5, "val_accuracy": 0.9, "val_loss": 0.3}, {"progress": 1.0, "val_accuracy": 0.9,
                                                                         "val_loss": 0.2}]
    assert kept_epochs({"epochs": 3.0, "history": hist}) == 3.0  # equal accuracy: the lower loss
    hist[0]["val_accuracy"] = 0.95
    assert kept_epochs({"epochs": 3.0, "history": hist}) == 1.5
    assert kept_epochs({"epochs": 2.0, "history": [{"progress": 1.0, "val_accuracy": float("nan"),
                                                    "val_loss": float("nan")}]}) == 2.0


def test_same_examples_scales_every_recovery_budget_in_epochs_and_nothing_else():
    r = text_recipe("m", "d")
    r["compress"]["candidates"] = [{"name": "c", "steps": [
        {"method": "unstructured", "sparsity": 0.5, "recovery": {"epochs": 2, "seconds": None, "lr": 0.001}},
        {"method": "kmeans", "bits": 4},  # its recovery is in seconds
        {"method": "int8", "mode": ["dynamic"], "qat": {"epochs": 1, "seconds": None}}]}]
    (c,) = parse_recipe(r).compress.candidates
    s = same_examples(c, 0.8)
    assert s.steps[0].recovery.epochs == 1.6 and s.steps[0].recovery.lr == 0.001
    assert s.steps[1].recovery == c.steps[1].recovery and s.steps[1].recovery.epochs is None
    assert s.steps[2].qat.epochs == 0.8 and s.steps[2].mode == ["dynamic"]
    assert c.steps[0].recovery.epochs == 2  # the recipe's candidate is left as it was


def test_merged_data_joins_validation_to_training_and_leaves_test_alone():
    import torch

    from slimship.data.task import Examples, TaskData

    ex = [Examples(torch.arange(n * 2).reshape(n, 2), torch.arange(n) % 2) for n in (6, 2, 3)]
    d = TaskData(*ex, class_names=["a", "b"], channels=0, fingerprint="f")
    m = merged_data(d)
    assert torch.equal(m.train.x, torch.cat([ex[0].x, ex[1].x])) and len(m.train) == 8
    assert m.test is d.test and m.val is d.val and m.fingerprint not in ("f", "")


def test_refit_is_skipped_with_its_reason_when_the_probe_is_the_reference(tmp_path, tiny_bert, one_torch_thread):
    data = write_text_folder(tmp_path / "texts", 20)
    r = text_recipe(tiny_bert, str(data), refit=True)
    r["transfer"].update(strategy="probe", scratch_baseline=False)
    r["compress"]["candidates"] = []
    m = run(parse_recipe(r), tmp_path / "out", quiet=True)
    assert m["refit"] == {"skipped": "the reference is the probe, not a fine-tune", "source": "probe"}
    assert "Refit: skipped (the reference is the probe" in (tmp_path / "out" / "report.md").read_text()
