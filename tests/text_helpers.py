"""A tiny randomly initialised BERT (a real Hugging Face folder: config.json, model.safetensors, tokenizer.json)
and a tiny learnable text data set, built in the test: fast on 2 CPU cores, nothing downloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SPAM_WORDS = ["free", "winner", "money", "offer", "click", "prize", "cash", "cheap"]
HAM_WORDS = ["meeting", "report", "project", "lunch", "schedule", "review", "agenda", "notes"]
FILLER = ["the", "a", "we", "you", "today", "please", "and", "for", "this", "is", "our", "team", "now", "see"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]


def make_tokenizer_json(words: list[str]) -> str:
    """A BERT-style WordPiece tokenizer over ``words`` (lower-cased; [CLS] ... [SEP]; [PAD] is id 0)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = {w: i for i, w in enumerate([*SPECIAL, *words])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2),
                                                                                                 ("[SEP]", 3)])
    return tok.to_str()


def make_tiny_bert(folder: Path, *, layers: int = 2, hidden: int = 32, heads: int = 2, seed: int = 0) -> Path:
    """Write a randomly initialised BERT (``layers`` layers, ``hidden`` wide, ``heads`` heads) and its tokenizer to
    ``folder``."""
    import torch
    from transformers import BertConfig, BertModel

    words = sorted({*SPAM_WORDS, *HAM_WORDS, *FILLER})
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(SPECIAL) + len(words), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=2 * hidden, max_position_embeddings=64,
                        pad_token_id=0)
    BertModel(config, add_pooling_layer=False).save_pretrained(folder, safe_serialization=True)
    (folder / "tokenizer.json").write_text(make_tokenizer_json(words))
    return folder


def make_texts(n_per_class: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``(texts, labels)``: "spam" texts hold spam words, "ham" texts ham words, both with filler."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for label, words in (("ham", HAM_WORDS), ("spam", SPAM_WORDS)):
        for _ in range(n_per_class):
            n = int(rng.integers(4, 12))
            picked = [str(rng.choice(words)) if rng.random() < 0.4 else str(rng.choice(FILLER)) for _ in range(n)]
            picked[int(rng.integers(0, n))] = str(rng.choice(words))  # at least one class word
            texts.append(" ".join(picked).capitalize() + ".")
            labels.append(label)
    return texts, labels


def write_text_folder(root: Path, n_per_class: int, seed: int = 0, eml_every: int = 0) -> Path:
    """``root/{ham,spam}/NNN.txt`` (every ``eml_every``-th one as an ``.eml`` mail with the text as its body)."""
    texts, labels = make_texts(n_per_class, seed)
    for i, (text, label) in enumerate(zip(texts, labels)):
        (root / label).mkdir(parents=True, exist_ok=True)
        if eml_every and i % eml_every == 0:
            mail = f"From: a@example.com\nSubject: {text.split()[0]}\nContent-Type: text/plain\n\n{text}\n"
            (root / label / f"{i:04d}.eml").write_text(mail)
        else:
            (root / label / f"{i:04d}.txt").write_text(text)
    return root


def text_recipe(model: Path, data: str, **over) -> dict:
    r = {
        "name": "tiny-text",
        "model": {"kind": "hf-text", "architecture": str(model), "max_length": 16},
        "data": {"source": data, "val_fraction": 0.2},
        "transfer": {"budget": {"epochs": 4}, "lr": 0.003, "batch_size": 16, "evals": 2,
                     "scratch_budget": {"epochs": 1}, "augment": {"hflip": False}},
        "compress": {"accuracy_budget": 100.0, "candidates": [
            {"name": "int8", "steps": [{"method": "int8", "mode": ["dynamic", "static"], "calibration": ["minmax"],
                                        "calibration_images": 32}]},
        ]},
        "evaluate": {"latency_runs": 3, "batch_sizes": [1, 4]},
    }
    for k, v in over.items():
        r[k] = v
    return r


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """One tiny BERT folder for the whole session (import this fixture into a test module to use it)."""
    return make_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-bert")


@pytest.fixture
def one_torch_thread():
    """Tiny models train ~20x faster on one thread than on two when the machine is busy (two threads wait for each
    other); the figures do not depend on it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def text_task(bert: Path, n_train: int = 30, n_val: int = 10, max_length: int = 16):
    """``(adapter, pretrained model, preprocessing, train Examples, val Examples)`` on the tiny BERT in ``bert``."""
    import torch

    from slimship.data.task import Examples
    from slimship.models.hf_text import HfTextAdapter

    adapter = HfTextAdapter(str(bert), max_length)
    pre = adapter.preprocessing()

    def examples(n, seed):
        texts, labels = make_texts(n, seed)
        return Examples(pre.prepare(texts), torch.tensor([["ham", "spam"].index(lab) for lab in labels]))

    torch.manual_seed(0)
    return adapter, adapter.build(2).model, pre, examples(n_train, 0), examples(n_val, 1)
