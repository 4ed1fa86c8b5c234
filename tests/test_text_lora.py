"""A text task trained with ``strategy: lora`` end to end (tiny BERT): the run writes the task as a lowrank delta
against base.slim; predict / eval / verify work on the delta package (its tokenizer travels with it) and give the
task package's predictions; the store takes it with ``--delta lowrank``; a full text fine-tune goes through the
sparse and bitdelta modes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from slimship.package.format import read_package
from tests.test_cli_store import _ok, _one_line_error
from tests.text_helpers import make_texts, make_tiny_bert, one_torch_thread, text_recipe, text_task, tiny_bert  # noqa: F401,E501

pytestmark = pytest.mark.usefixtures("one_torch_thread")
RANK = 4


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    import torch

    from slimship.api.run import run
    from slimship.recipe import parse_recipe
    from tests.text_helpers import write_text_folder

    root = tmp_path_factory.mktemp("text-lora")
    bert = make_tiny_bert(root / "bert")
    data = write_text_folder(root / "mails", 40)
    r = text_recipe(bert, str(data), compress={"accuracy_budget": 100.0, "candidates": []})
    r["transfer"].update(strategy="lora", scratch_baseline=False, lora={"rank": RANK, "lr": 0.01})
    threads = torch.get_num_threads()
    run(parse_recipe(r), out=root / "out", quiet=True)
    torch.set_num_threads(threads)
    return root, root / "out" / "packages", json.loads((root / "out" / "metrics.json").read_text())


def test_the_run_writes_the_lora_task_as_a_lowrank_delta_on_the_base(lora_run):
    _, pk, metrics = lora_run
    m = next(e for e in metrics["models"] if e["name"] == "finetuned")
    assert m["kind"] == "lora" and m["accuracy"] >= 0.9
    lo = m["notes"]["lora"]
    assert lo["rank"] == RANK and lo["layers"] == 12 and lo["trainable"] < lo["parameters"] / 4
    dp = m["delta_package"]
    assert Path(dp["path"]) == pk / "finetuned.delta.slim" and dp["bytes"] < dp["full_bytes"] / 3
    info = read_package(pk / "finetuned.delta.slim").manifest["delta"]["info"]
    # every adapted layer is found in the base graph (the exporter's names differ) and coded at the adapter's rank
    assert info["mode"] == "lowrank" and info["ranks"] == {str(RANK): 12} and info["dense_fp16"] == 0


def test_the_delta_package_predicts_what_the_task_package_predicts(capsys, lora_run):
    root, pk, _ = lora_run
    texts, labels = make_texts(6, seed=3)
    want = json.loads(_ok(capsys, "predict", pk / "finetuned.slim", *texts, "--json", "--top", "2"))
    got = json.loads(_ok(capsys, "predict", pk / "finetuned.delta.slim", *texts, "--json", "--top", "2",
                         "--base", pk / "base.slim"))
    assert got == want and len(got) == 12
    assert json.loads(_ok(capsys, "predict", pk / "finetuned.delta.slim", texts[0], "--json")) == want[:1]  # base found
    table = root / "more.jsonl"
    table.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in zip(texts, labels)))
    full = json.loads(_ok(capsys, "eval", pk / "finetuned.slim", "--data", table, "--json"))
    delta = json.loads(_ok(capsys, "eval", pk / "finetuned.delta.slim", "--data", table, "--json"))
    assert delta["accuracy"] == full["accuracy"] and delta["examples"] == 12
    _ok(capsys, "verify", pk / "finetuned.delta.slim")
    other = make_tiny_bert(root / "other-bert", seed=1)  # a base of the same shape, other weights
    from slimship.models.hf_text import HfTextAdapter
    from slimship.package.pack import pack

    adapter = HfTextAdapter(str(other), 16)
    pack(root / "other-base.slim", onnx=adapter.export_onnx(adapter.without_head(adapter.build(2).model)),
         architecture=str(other), class_names=[], preprocessing=adapter.preprocessing())
    _one_line_error(capsys, ["predict", pk / "finetuned.delta.slim", texts[0], "--base", root / "other-base.slim"],
                    "is not the base of")


def test_the_store_takes_a_text_task_as_a_lowrank_delta(capsys, lora_run, tmp_path):
    _, pk, _ = lora_run
    store = tmp_path / "store"
    _ok(capsys, "push", pk / "base.slim", store, "--name", "base", "--tag", "1")
    r = json.loads(_ok(capsys, "push", pk / "finetuned.slim", store, "--base", "base@1", "--delta", "lowrank",
                       "--name", "spam", "--json"))
    assert r["check"]["top1_agreement"] == 1.0 and r["size_bytes"] < r["full_bytes"] / 3
    probe = json.loads(_ok(capsys, "push", pk / "probe.slim", store, "--base", "base@1", "--json"))  # default fp16
    assert probe["base"] == r["base"] and probe["check"]["top1_agreement"] == 1.0  # random token ids checked
    _ok(capsys, "pull", "spam", store, "-o", tmp_path / "spam.slim")
    assert "tokenizer.json" in read_package(tmp_path / "spam.slim").parts
    texts, _ = make_texts(3, seed=4)
    assert (json.loads(_ok(capsys, "predict", tmp_path / "spam.slim", *texts, "--json"))
            == json.loads(_ok(capsys, "predict", pk / "finetuned.slim", *texts, "--json")))


def test_a_full_text_fine_tune_goes_through_the_sparse_and_bitdelta_modes(tiny_bert):
    from slimship.core.runtime import ort_session
    from slimship.package.delta import DeltaConfig, apply_delta, encode_delta
    from slimship.transfer.trainer import TrainConfig, train

    adapter, model, pre, T, V = text_task(tiny_bert)
    base = adapter.export_onnx(adapter.without_head(model))
    train(model, T, V, pre, TrainConfig(epochs=3, lr=3e-3, batch_size=8, evals=1, hflip=False))
    task = adapter.export_onnx(model)
    x = pre.model_input_np(V.x.numpy())
    want = ort_session(task, threads=1)(x)
    sizes = {}
    for cfg in (DeltaConfig("sparse", density=1.0, value_bits=16), DeltaConfig("bitdelta", scales="channel")):
        blob, info = encode_delta(base, task, cfg)
        assert info["changed_fraction"] > 0.9  # a full fine-tune moves everything
        assert _whole_matrices(blob) == ["head.weight"]  # every other weight matrix is coded against the base
        got = ort_session(apply_delta(base, blob), threads=1)(x)
        if cfg.mode == "sparse":
            np.testing.assert_allclose(got, want, atol=2e-2)
        sizes[cfg.mode] = len(blob)
        assert np.isfinite(got).all() and got.shape == want.shape
    assert sizes["bitdelta"] < sizes["sparse"]


def _whole_matrices(blob: bytes) -> list[str]:
    """Weight matrices a delta blob stores whole (not coded against the base). (Vectors may be whole too: the
    export of a random BERT shares its equal LayerNorm and bias vectors, which fine-tuning separates.)"""
    import onnx

    from slimship.package.delta.decode import _open_blob

    header, streams = _open_blob(blob)
    coded = {e["name"] for e in header["tensors"]}
    skeleton = onnx.load_from_string(streams["skeleton"])
    return [t.name for t in skeleton.graph.initializer if t.name not in coded and len(t.dims) >= 2]
