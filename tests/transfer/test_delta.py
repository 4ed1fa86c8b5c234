"""Sparse-delta fine-tuning: the task model differs from its base in at most ``density`` of each weight
tensor, and the run stores it as a delta package that rebuilds the measured model."""

import copy
import json

import numpy as np
import pytest
import torch

from slimship.data.transforms import ImagePreprocessing, resize_uint8
from slimship.models import create_model
from slimship.transfer.delta import sparsify_delta_, train_sparse_delta
from slimship.data.task import Examples
from slimship.transfer.trainer import TrainConfig, accuracy, train
from tests.conftest import make_images, tiny_recipe


def _setup():
    x, y = make_images(30, seed=0)
    vx, vy = make_images(10, seed=1)
    X, Y, VX, VY = resize_uint8(x, 32), torch.from_numpy(y), resize_uint8(vx, 32), torch.from_numpy(vy)
    torch.manual_seed(0)
    b = create_model("test_efficientnet", 3, weights=None, image_size=32)
    pre = ImagePreprocessing(32, 1, b.mean, b.std)
    base = copy.deepcopy(b.model)
    base.reset_classifier(0)
    return b.model, base.state_dict(), pre, (X, Y, VX, VY)


def _changed(model, base_state):
    out = {}
    for n, p in model.named_parameters():
        b = base_state.get(n)
        if p.ndim >= 2 and b is not None and b.shape == p.shape:
            out[n] = (int((p.detach() != b).sum()), p.numel())
    return out


def test_sparsify_keeps_the_largest_changes_and_resets_the_rest():
    model, base, _pre, _data = _setup()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    masks = sparsify_delta_(model, base, 0.1)
    params = dict(model.named_parameters())
    assert masks.masks and "classifier.weight" not in masks.masks  # the head has no base counterpart
    for name, mask in masks.masks.items():
        k = max(1, round(0.1 * mask.numel()))
        assert int(mask.sum()) == k
        d = (before[name] - base[name]).abs()
        assert (~mask).any()
        assert d[mask].min() >= d[~mask].max()  # the largest changes are the kept ones
        assert torch.equal(params[name][~mask], base[name][~mask])
        assert torch.equal(params[name][mask], before[name][mask])
    assert torch.equal(params["classifier.weight"], before["classifier.weight"])
    # 1-D tensors (BN affine, biases) stay dense
    assert torch.equal(params["bn1.weight"], before["bn1.weight"])


def test_sparse_delta_training_stays_within_the_density_and_keeps_accuracy():
    model, base, pre, (X, Y, VX, VY) = _setup()
    T, V = Examples(X, Y), Examples(VX, VY)
    train(model, T, V, pre, TrainConfig(epochs=4, lr=3e-3, batch_size=16, bn="train", evals=2))
    full = accuracy(model, V, pre)
    cfg = TrainConfig(epochs=2, lr=1e-3, batch_size=16, bn="frozen", evals=2, kd_alpha=0.5)
    masks, r = train_sparse_delta(model, base, 0.2, (T, V), pre, cfg)
    for name, (changed, numel) in _changed(model, base).items():
        assert changed <= round(0.2 * numel), name
        assert changed == int(((dict(model.named_parameters())[name] != base[name]) & masks.masks[name]).sum())
    assert r.best_val_accuracy >= full - 0.15


def test_run_with_delta_writes_base_and_a_delta_that_rebuilds_the_measured_model(tiny_npz, tmp_path):
    from slimship.api import run
    from slimship.package.delta import load_task_onnx
    from slimship.package.format import read_package
    from slimship.package.pack import load_package
    from slimship.recipe import parse_recipe

    r = tiny_recipe(str(tiny_npz))
    r["transfer"]["delta"] = {"density": 0.1, "budget": {"epochs": 1}, "value_bits": 32}
    r["transfer"]["scratch_baseline"] = False
    r["compress"]["candidates"] = []
    out = tmp_path / "run"
    metrics = run(parse_recipe(r), out, quiet=True)
    entry = next(e for e in metrics["models"] if e["name"] == "finetuned-delta")
    dp = entry["delta_package"]
    pkgs = out / "packages"
    assert (pkgs / "base.slim").exists() and (pkgs / "finetuned-delta.delta.slim").exists()
    assert dp["bytes"] == (pkgs / "finetuned-delta.delta.slim").stat().st_size
    assert dp["bytes"] < 0.5 * dp["full_bytes"]
    assert 0 < dp["changed_fraction"] < 0.2
    # only the tensors the base graph holds are restricted: the new head trains freely
    _model, base, _pre, _data = _setup()
    assert entry["notes"]["of"] == sum(v.numel() for k, v in base.items() if v.ndim >= 2 and v.is_floating_point())
    assert not any(k.startswith("classifier") for k in base)
    # lossless values: the delta rebuilds the measured deploy graph byte for byte
    rebuilt = load_task_onnx(pkgs / "finetuned-delta.delta.slim", pkgs / "base.slim")
    assert rebuilt == load_package(pkgs / "finetuned-delta.slim").onnx
    assert read_package(pkgs / "base.slim").manifest["model"]["num_classes"] == 0
    assert "as a delta on the pretrained base" in (out / "report.md").read_text()
    assert json.loads((out / "metrics.json").read_text())["selected"] != "finetuned-delta"
    # The fine-tune's cache key ignores the delta section: changing the density retrains only the delta.
    r["transfer"]["delta"]["density"] = 0.05
    run(parse_recipe(r), out, quiet=True)
    m2 = json.loads((out / "metrics.json").read_text())
    e2 = next(e for e in m2["models"] if e["name"] == "finetuned-delta")
    assert e2["delta_package"]["changed_fraction"] < dp["changed_fraction"]
    ft1 = next(e for e in metrics["models"] if e["name"] == "finetuned")
    ft2 = next(e for e in m2["models"] if e["name"] == "finetuned")
    assert np.isclose(ft1["accuracy"], ft2["accuracy"]) and ft1["train_seconds"] == ft2["train_seconds"]


def test_norm_allocation_keeps_the_total_and_favours_tensors_that_moved_more():
    from slimship.transfer.delta import norm_allocation

    model, base, _pre, _data = _setup()
    names = [n for n, p in model.named_parameters() if p.ndim >= 2 and n in base]
    moved, still = names[1], names[2]
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in base and p.ndim >= 2:
                p.add_(base[n].abs().mean() * (0.5 if n == moved else 0.01) * torch.randn_like(p))
    share = norm_allocation(model, base, 0.1)
    sizes = {n: base[n].numel() for n in share}
    assert sum(share[n] * sizes[n] for n in share) == pytest.approx(0.1 * sum(sizes.values()), rel=1e-3)
    assert share[moved] > share[still] and all(0.025 - 1e-9 <= d <= 1.0 for d in share.values())
    masks = sparsify_delta_(model, base, share)
    assert int(masks.masks[moved].sum()) == max(1, round(share[moved] * sizes[moved]))


def test_dense_depthwise_leaves_depthwise_kernels_out_of_the_masks():
    model, base, _pre, _data = _setup()
    dw = [n for n, p in model.named_parameters() if p.ndim == 4 and p.shape[1] == 1]
    assert dw
    assert set(dw) <= set(sparsify_delta_(copy.deepcopy(model), base, 0.1).masks)
    assert not set(dw) & set(sparsify_delta_(model, base, 0.1, dense_depthwise=True).masks)
