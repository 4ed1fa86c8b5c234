"""The hf-text model kind on a tiny randomly initialised BERT written as a real Hugging Face folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from slimship.core.errors import ModelError
from slimship.models.hf_text import HfTextAdapter, is_hf_text_model, model_folder
from slimship.models.kinds import adapter_for
from tests.text_helpers import one_torch_thread, tiny_bert  # noqa: F401  (fixtures)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def bert(tiny_bert):
    return tiny_bert


def test_recipe_section_picks_the_kind(bert):
    from slimship.recipe import parse_recipe

    r = parse_recipe({"model": {"kind": "hf-text", "architecture": str(bert), "max_length": 24, "pooling": "cls",
                                "tail_tokens": 10}, "data": {"source": "x"}})
    a = adapter_for(r.model)
    assert isinstance(a, HfTextAdapter) and a.sequence_length() == 24 and a.pooling == "cls"
    assert a.preprocessing().tail == 10
    with pytest.raises(ModelError, match="set model.tail_tokens below max_length"):
        HfTextAdapter(str(bert), 24, tail_tokens=24).preprocessing()


def test_other_weights_than_the_folders_own_are_refused(bert):
    from slimship.recipe import parse_recipe

    r = parse_recipe({"model": {"kind": "hf-text", "architecture": str(bert), "weights": "other.safetensors"},
                      "data": {"source": "x"}})
    with pytest.raises(ModelError, match="loads its own folder's safetensors"):
        adapter_for(r.model)


def test_build_loads_the_folders_safetensors_and_scratch_does_not(bert):
    from safetensors.torch import load_file

    saved = load_file(str(bert / "model.safetensors"))
    a = HfTextAdapter(str(bert), 16)
    built = a.build(3)
    w = built.model.encoder.embeddings.word_embeddings.weight
    assert torch.equal(w, saved["embeddings.word_embeddings.weight"])
    assert built.weights_report["loaded"] > 0 and built.model.head.out_features == 3
    scratch = a.build(3, pretrained=False).model.encoder.embeddings.word_embeddings.weight
    assert not torch.equal(scratch, w)
    assert not torch.equal(HfTextAdapter(str(bert), 16, weights="none").build(3).model.encoder.embeddings
                           .word_embeddings.weight, w)


def test_pickled_weights_are_never_loaded(bert, tmp_path):
    import shutil

    folder = tmp_path / "pickled"
    shutil.copytree(bert, folder)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(ModelError, match="no .safetensors"):
        HfTextAdapter(str(folder)).build(2)


def test_weights_that_do_not_fit_fail_loudly(bert, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "partial"
    shutil.copytree(bert, folder)
    state = load_file(str(folder / "model.safetensors"))
    save_file({k: v for k, v in state.items() if "layer.1." not in k}, str(folder / "model.safetensors"))
    with pytest.raises(ModelError, match="unloaded"):
        HfTextAdapter(str(folder)).build(2)


def test_a_model_is_a_folder_or_an_installed_package(bert, tmp_path):
    assert model_folder(str(bert)) == bert.resolve() and is_hf_text_model(str(bert))
    assert not is_hf_text_model("tf_efficientnet_lite0") and not is_hf_text_model(str(tmp_path))
    with pytest.raises(ModelError, match="neither a folder nor an installed package"):
        model_folder("no-such-model-package")
    with pytest.raises(ModelError, match="no config.json"):
        model_folder(str(tmp_path))


def test_max_length_beyond_the_position_embeddings_is_refused(bert):
    with pytest.raises(ModelError, match="at most 64"):
        HfTextAdapter(str(bert), 65).sequence_length()
    assert HfTextAdapter(str(bert)).sequence_length() == 64  # 256 capped by the model


def test_layer_groups_run_embeddings_layers_head(bert):
    a = HfTextAdapter(str(bert), 16)
    m = a.build(2).model
    groups = a.layer_groups(m)
    assert len(groups) == 4  # embeddings, 2 layers, head
    assert all("embeddings" in n for n in groups[0])
    assert all(".layer.0." in n for n in groups[1]) and all(".layer.1." in n for n in groups[2])
    assert groups[-1] == ["head.weight", "head.bias"]
    assert sorted(n for g in groups for n in g) == sorted(n for n, _ in m.named_parameters())
    assert a.spared_modules(m) == [m.head] and a.classifier(m) is m.head


def test_padding_does_not_change_the_prediction(bert):
    a = HfTextAdapter(str(bert), 16)
    m = a.build(2).model.eval()
    ids = torch.tensor([[2, 10, 11, 12, 3]])
    padded = torch.cat([ids, torch.zeros(1, 6, dtype=torch.long)], 1)
    with torch.no_grad():
        assert torch.allclose(m(ids), m(padded), atol=1e-5)
        assert torch.allclose(a.features(m, ids), a.without_head(m)(ids), atol=1e-6)
        cls = HfTextAdapter(str(bert), 16, pooling="cls").build(2).model.eval()
        assert not torch.allclose(cls.features(ids), m.features(ids))


def test_onnx_takes_token_ids_of_any_batch_and_length(bert):
    import onnx

    from slimship.core.runtime import ort_session

    a = HfTextAdapter(str(bert), 16)
    m = a.build(2).model.eval()
    graph = a.export_onnx(m)
    inp = onnx.load_from_string(graph).graph.input[0]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert [d.dim_param for d in inp.type.tensor_type.shape.dim] == ["batch", "sequence"]
    sess = ort_session(graph)
    for b, length in ((1, 5), (3, 16), (2, 40)):
        ids = np.random.default_rng(b).integers(4, 30, (b, length))
        ids[0, length // 2:] = 0  # a padded row
        with torch.no_grad():
            want = m(torch.from_numpy(ids)).numpy()
        np.testing.assert_allclose(sess(ids), want, atol=1e-4)
    assert a.example_input(2).dtype == torch.long and tuple(a.example_input(2).shape) == (2, 16)


def test_a_folder_without_any_vocabulary_is_refused_not_given_a_tokenizer_of_special_tokens(bert, tmp_path):
    import json
    import shutil

    folder = tmp_path / "no-vocab"
    shutil.copytree(bert, folder)
    words = list(json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"])
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ModelError, match="no vocabulary file"):
        HfTextAdapter(str(folder)).preprocessing()
    # a vocabulary file is enough: the fast tokenizer is built from it
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    pre = HfTextAdapter(str(folder)).preprocessing()
    ids = pre.prepare(["buy cheap pills now"])
    assert (np.asarray(ids) > 4).any()  # real word ids, not only [CLS] [UNK] [SEP] and padding


def test_check_ready_finds_what_build_and_preprocessing_would_fail_on(bert, tmp_path):
    import shutil

    HfTextAdapter(str(bert)).check_ready()
    with pytest.raises(ModelError, match="at most 64"):
        HfTextAdapter(str(bert), 65).check_ready()
    folder = tmp_path / "no-weights"
    shutil.copytree(bert, folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="no .safetensors"):
        HfTextAdapter(str(folder)).check_ready()
    HfTextAdapter(str(folder), weights="none").check_ready()  # random init needs no weights
