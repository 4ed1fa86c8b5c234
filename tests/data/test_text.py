"""Text data: folders of .txt/.eml, tables, the built-in SpamAssassin source, mail parsing, the text
preprocessing, and the refusal of texts for an image model (and the reverse)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from slimship.core.errors import DataError, PackageError
from slimship.data import load_dataset, resolve_source
from slimship.data.inputs import load_eval_examples, read_inputs
from slimship.data.text import SPAM_ASSASSIN, TEXT_BUILTINS, BuiltinTextDataset
from slimship.data.text_mail import parse_mail
from slimship.data.text_preprocessing import TextPreprocessing
from slimship.data.text_table import guess_columns
from tests.text_helpers import make_texts, make_tokenizer_json, write_text_folder

WORDS = ["free", "money", "meeting", "report", "hello", "world"]


def _pre(max_length: int = 8) -> TextPreprocessing:
    return TextPreprocessing(max_length, 0, 4 + len(WORDS), make_tokenizer_json(WORDS))


# ---- sources ---------------------------------------------------------------------------------------------


def test_text_folder_loads_and_splits_by_the_image_rules(tmp_path):
    write_text_folder(tmp_path, 20)
    assert resolve_source(str(tmp_path)) == ("text-folder", str(tmp_path.resolve()))
    d = load_dataset(str(tmp_path), val_fraction=0.2, test_fraction=0.25, seed=3)
    assert d.class_names == ["ham", "spam"] and d.info["examples"] == "texts"
    assert d.info["sizes"] == {"train": 24, "val": 6, "test": 10}
    for split in (d.train, d.val, d.test):  # stratified: both classes in every split
        assert set(np.unique(split.labels)) == {0, 1}
    assert sorted([*d.train.texts, *d.val.texts, *d.test.texts]) == sorted(make_texts(20)[0])  # every file once
    again = load_dataset(str(tmp_path), val_fraction=0.2, test_fraction=0.25, seed=3)
    assert list(again.test.texts) == list(d.test.texts)  # the same seed, the same split


def test_eml_files_read_as_mail(tmp_path):
    write_text_folder(tmp_path, 3, eml_every=1)
    d = load_dataset(str(tmp_path), val_fraction=0.3, test_fraction=0.3)
    texts = sorted([*d.train.texts, *d.val.texts, *d.test.texts])
    # subject, then the body; headers other than the subject dropped
    assert texts == sorted(f"{t.split()[0]} {t}" for t in make_texts(3)[0])


def test_text_folder_with_train_and_test_uses_its_own_test(tmp_path):
    write_text_folder(tmp_path / "train", 10)
    write_text_folder(tmp_path / "test", 4, seed=1)
    d = load_dataset(str(tmp_path), val_fraction=0.2)
    assert d.info["test_from"] == "own split" and d.info["sizes"]["test"] == 8


def test_image_folder_with_a_stray_text_file_is_still_images(tmp_path):
    from PIL import Image

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(3):
            Image.new("L", (8, 8), i * 40).save(tmp_path / c / f"{i}.png")
    (tmp_path / "a" / "notes.txt").write_text("not a class member")
    assert resolve_source(str(tmp_path))[0] == "folder"


@pytest.mark.parametrize("make, phrase", [
    (lambda p: (p / "x.txt").write_text("hi"), "no class sub-folders"),
    (lambda p: ((p / "a").mkdir(), (p / "a" / "1.txt").write_text("hi"), (p / "b").mkdir()), "has no text files"),
    (lambda p: ((p / "a").mkdir(), (p / "a" / "1.txt").write_text("hi"), (p / "a" / "2.txt").write_text("yo")),
     "fewer than two classes"),
])
def test_bad_text_folders_raise_one_line_errors(tmp_path, make, phrase):
    make(tmp_path)
    with pytest.raises(DataError, match=phrase) as e:
        load_dataset(str(tmp_path))
    assert "\n" not in str(e.value)


def _table(path: Path, rows: list[dict]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    else:
        import csv

        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t" if path.suffix == ".tsv" else ",")
            w.writeheader()
            w.writerows(rows)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_tables_read_the_named_columns(tmp_path, suffix):
    texts, labels = make_texts(10)
    rows = [{"id": i, "message": t, "kind": lab} for i, (t, lab) in enumerate(zip(texts, labels))]
    path = _table(tmp_path / f"mails{suffix}", rows)
    assert resolve_source(str(path))[0] == "text-table"
    d = load_dataset(str(path), options={"text_column": "message", "label_column": "kind"})
    assert d.class_names == ["ham", "spam"]
    got = sorted([*d.train.texts, *d.val.texts, *d.test.texts])
    assert got == sorted(texts)
    assert guess_columns(path) == ("message", "kind")
    with pytest.raises(DataError, match="no column 'text'" if suffix != ".jsonl" else "has no 'text'"):
        load_dataset(str(path))


def test_usual_column_names_win_over_longer_columns(tmp_path):
    rows = [{"description": "a long description " * 5, "text": f"short {i}", "stars": i % 2} for i in range(6)]
    assert guess_columns(_table(tmp_path / "t.csv", rows)) == ("text", "stars")  # stars: the fewest values


def test_numeric_labels_are_ordered_as_numbers(tmp_path):
    rows = [{"text": f"t {i}", "label": lab} for i, lab in enumerate([10, 2, 2, 10, 2, 10, 2, 10, 1, 1, 1, 1])]
    d = load_dataset(str(_table(tmp_path / "t.jsonl", rows)), val_fraction=0.25, test_fraction=0.25)
    assert d.class_names == ["1", "2", "10"]


def test_a_separate_test_table_is_mapped_by_class_name(tmp_path):
    tr = _table(tmp_path / "train.csv", [{"text": f"x{i}", "label": ["b", "a"][i % 2]} for i in range(20)])
    te = _table(tmp_path / "test.jsonl", [{"text": "y", "label": "b"}, {"text": "z", "label": "a"}])
    d = load_dataset(str(tr), test=str(te))
    assert d.class_names == ["a", "b"] and list(d.test.labels) == [1, 0] and d.info["sizes"]["test"] == 2
    bad = _table(tmp_path / "other.jsonl", [{"text": "y", "label": "c"}, {"text": "z", "label": "a"}])
    with pytest.raises(DataError, match="different classes"):
        load_dataset(str(tr), test=str(bad))


def test_evaluation_data_is_mapped_into_the_models_classes_by_name(tmp_path):
    only_spam = _table(tmp_path / "spam.jsonl", [{"text": "win cash", "label": "spam"}] * 3)
    split = load_eval_examples(str(only_spam), ["ham", "spam"], _pre())
    assert list(split.labels) == [1, 1, 1] and list(split.raw) == ["win cash"] * 3
    with pytest.raises(DataError, match="class eggs is not one of the model's classes"):
        load_eval_examples(str(_table(tmp_path / "e.csv", [{"text": "x", "label": "eggs"}])), ["ham", "spam"], _pre())


def test_bad_jsonl_line_names_the_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a", "label": "x"}\nnot json\n')
    with pytest.raises(DataError, match="line 2 is not JSON"):
        load_dataset(str(path))


@pytest.fixture
def tiny_spam_assassin(tmp_path, monkeypatch):
    """A five-folder corpus laid out as setup.sh installs SpamAssassin, standing in for the real one."""
    root = tmp_path / "spam-assassin"
    for g in ("easy-ham-1", "easy-ham-2", "hard-ham-1", "spam-1", "spam-2"):
        (root / g).mkdir(parents=True)
        for i in range(4):
            word = "meeting" if "ham" in g else "winner"
            (root / g / f"{i:05d}.x.txt").write_text(f"From: a@b\nSubject: {word} {i}\n\nbody of {g} {i}\n")
    monkeypatch.setitem(TEXT_BUILTINS, "spam-assassin", BuiltinTextDataset(root, SPAM_ASSASSIN.groups, "setup"))
    return root


def test_builtin_spam_assassin_maps_folders_to_ham_and_spam(tiny_spam_assassin):
    assert resolve_source("Spam_Assassin") == ("spam-assassin", "spam-assassin")
    d = load_dataset("spam-assassin", val_fraction=0.2, test_fraction=0.25)
    assert d.class_names == ["ham", "spam"]
    texts = [*d.train.texts, *d.val.texts, *d.test.texts]
    labels = [*d.train.labels, *d.val.labels, *d.test.labels]
    assert len(texts) == 20 and sum(labels) == 8
    assert all(t.startswith("winner") == bool(lab) for t, lab in zip(texts, labels))  # subject first, by class


def test_builtin_not_installed_says_how(tmp_path, monkeypatch):
    monkeypatch.setitem(TEXT_BUILTINS, "spam-assassin", BuiltinTextDataset(tmp_path / "nope", SPAM_ASSASSIN.groups,
                                                                           "run scripts/setup.sh"))
    with pytest.raises(DataError, match="not installed.*setup.sh"):
        load_dataset("spam-assassin")


# ---- mail -------------------------------------------------------------------------------------------------


def test_parse_mail_keeps_subject_and_text_parts_only():
    html = base64.b64encode("<html><style>p{}</style><p>Caf&eacute; <b>deal</b></p></html>".encode()).decode()
    raw = ("From: x@y\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\nMIME-Version: 1.0\n"
           "Content-Type: multipart/mixed; boundary=B\n\n--B\nContent-Type: text/plain; charset=latin-1\n"
           "Content-Transfer-Encoding: quoted-printable\n\nna=EFve   text\n--B\nContent-Type: text/html\n"
           f"Content-Transfer-Encoding: base64\n\n{html}\n--B\nContent-Type: text/plain\n"
           "Content-Disposition: attachment; filename=a.txt\n\nSECRET ATTACHMENT\n--B\n"
           "Content-Type: image/png\n\nPNGDATA\n--B--\n").encode("latin-1")
    assert parse_mail(raw) == "Grüße naïve text Café deal"
    assert parse_mail(raw, max_chars=5) == "Grüße"


def test_parse_mail_survives_an_unknown_charset():
    raw = b"Subject: hi\nContent-Type: text/plain; charset=x-unknown-42\n\ncaf\xe9\n"
    assert parse_mail(raw) == "hi caf\xe9"


def test_parse_mail_reads_undeclared_8bit_text_in_the_charset_that_fits():
    """SpamAssassin has such mails: an HTML part naming its charset only in <meta>, UTF-8 or Windows-1252 bytes
    under no or an ASCII declaration, raw 8-bit subjects. None of them may turn into U+FFFD."""
    russian = "ВНИМАНИЕ деньги"
    koi8 = (b"Subject: [ILUG] " + russian.encode("koi8-r") + b"\nContent-Type: text/html\n\n"
            b'<html><META content="text/html; charset=koi8-r" http-equiv=Content-Type><p>'
            + russian.encode("koi8-r") + b"</p></html>\n")
    assert parse_mail(koi8) == f"[ILUG] {russian} {russian}"
    utf8 = "Subject: hi\nContent-Type: text/plain; charset=us-ascii\n\nGrüße ça\n".encode("utf-8")
    assert parse_mail(utf8) == "hi Grüße ça"
    cp1252 = b"Subject: Gambler wins \xa37,000\nContent-Type: text/plain; charset=utf-8\n\n\x93quoted\x94 caf\xe9\n"
    assert parse_mail(cp1252) == "Gambler wins £7,000 \u201cquoted\u201d café"
    turkish = "çekilişini kaçırmayın"
    declared = (b"Subject: " + turkish.encode("iso-8859-9") + b"\nContent-Type: text/plain; charset=iso-8859-9\n\n"
                + turkish.encode("iso-8859-9") + b"\n")
    assert parse_mail(declared) == f"{turkish} {turkish}"
    assert "\ufffd" not in parse_mail(b"Subject: x\nContent-Type: text/plain; charset=utf-8\n\n\x81\x8d\x8f\n")


# ---- preprocessing ------------------------------------------------------------------------------------------


def test_prepare_pads_truncates_and_model_input_trims_padding():
    pre = _pre(max_length=6)
    x = pre.prepare(["free money", "hello world meeting report free money hello"])
    assert x.dtype.is_floating_point is False and tuple(x.shape) == (2, 6)
    assert x[0].tolist() == [2, 4, 5, 3, 0, 0]  # [CLS] free money [SEP], padded with [PAD]
    assert x[1, 0].item() == 2 and x[1, -1].item() == 3  # cut at 6 tokens, [SEP] kept
    short = pre.model_input(x[:1])
    assert tuple(short.shape) == (1, 4)  # the padding columns of this batch dropped
    assert pre.model_input_np(x.numpy()).shape == (2, 6)
    assert pre.model_input_np(x[:1].numpy()).dtype == np.int64


def test_a_tail_keeps_the_start_and_the_end_of_a_long_text():
    pre = TextPreprocessing(6, 0, 4 + len(WORDS), make_tokenizer_json(WORDS), tail=2)
    x = pre.prepare(["free money", "hello world meeting report free money hello"])
    assert x[0].tolist() == [2, 4, 5, 3, 0, 0]  # a short text as without a tail
    # [CLS] hello world meeting ... hello [SEP]: 4 tokens from the start, 2 from the end
    assert x[1].tolist() == [2, 8, 9, 6, 8, 3]
    assert "first 4 and last 2" in pre.describe()
    d = pre.to_dict()
    assert d["tail"] == 2 and TextPreprocessing.from_dict(d, pre.files().__getitem__) == pre
    assert "tail" not in _pre().to_dict()  # packages without a tail keep the manifest they had
    assert TextPreprocessing.from_dict(_pre().to_dict()).tail == 0
    with pytest.raises(ValueError, match="tail must be an integer between 0 and 5"):
        TextPreprocessing.from_dict({**d, "tail": 6})


def test_cut_share_counts_the_texts_longer_than_max_length():
    pre = _pre(max_length=6)  # [CLS] + 4 words + [SEP] fit exactly; a fifth word is cut
    texts = ["free money", "hello world meeting report", "hello world meeting report free", "free " * 40]
    assert pre.cut_share(texts) == 0.5 and pre.cut_share([]) == 0.0
    assert _pre(max_length=100).cut_share(texts) == 0.0


def test_text_preprocessing_round_trips_through_its_dict_and_files():
    pre = _pre()
    d, files = pre.to_dict(), pre.files()
    assert set(files) == {"tokenizer.json"} and len(json.dumps(d)) < 300  # the tokenizer travels as a file
    back = TextPreprocessing.from_dict(d, files.__getitem__)
    assert back == pre and back.prepare(["free"]).tolist() == pre.prepare(["free"]).tolist()
    ids_only = TextPreprocessing.from_dict(d)  # no parts: enough for random rows, not for texts
    assert ids_only.random_rows(3, np.random.default_rng(0)).shape == (3, 8)
    with pytest.raises(PackageError, match="no tokenizer"):
        ids_only.prepare(["free"])
    with pytest.raises(PackageError, match="does not match"):
        TextPreprocessing.from_dict(d, lambda name: files[name] + b" ")


def test_random_rows_never_hold_the_pad_id():
    pre = TextPreprocessing(32, 3, 6, None)
    rows = pre.random_rows(200, np.random.default_rng(1))
    assert rows.min() >= 0 and rows.max() < 6 and not (rows == 3).any()


def test_texts_for_an_image_model_and_images_for_a_text_model_are_refused(tmp_path, tiny_npz):
    from slimship.data.task import prepare_task_data
    from slimship.data.transforms import ImagePreprocessing

    write_text_folder(tmp_path / "texts", 6)
    with pytest.raises(DataError, match="holds texts but the model reads images"):
        prepare_task_data(load_dataset(str(tmp_path / "texts")), ImagePreprocessing(16, 1, (0.5,), (0.5,)))
    with pytest.raises(DataError, match="holds images but the model reads texts"):
        load_eval_examples(str(tiny_npz), ["top", "middle", "bottom"], _pre())


def test_prediction_inputs_are_files_or_the_texts_themselves(tmp_path):
    (tmp_path / "a.txt").write_text("free money")
    (tmp_path / "m.eml").write_text("Subject: meeting\n\nreport\n")
    names, texts = read_inputs([str(tmp_path / "a.txt"), str(tmp_path / "m.eml"), "hello world"], _pre())
    assert names == [str(tmp_path / "a.txt"), str(tmp_path / "m.eml"), "hello world"]
    assert texts == ["free money", "meeting report", "hello world"]
    with pytest.raises(DataError, match="nothing to classify"):
        read_inputs([], _pre())


def test_predict_reads_texts_that_cannot_be_paths_as_texts():
    from slimship.data.text import read_texts_for_prediction

    texts = ["~~ FREE OFFER ~~", "a long review " * 30, "nul\x00byte"]  # ~user, over NAME_MAX, a NUL byte
    names, got = read_texts_for_prediction(texts)
    assert got == texts and len(names) == 3


def test_an_idx_folder_with_a_readme_txt_is_still_idx(tmp_path):
    from tests.data.test_sources import make_idx_dir

    root = make_idx_dir(tmp_path / "idx", gz=False)
    (root / "README.txt").write_text("Fashion-MNIST, copied here")
    assert resolve_source(str(root))[0] == "idx"


def test_a_test_source_that_is_the_training_source_is_refused(tmp_path):
    from tests.data.test_sources import make_idx_dir

    root = make_idx_dir(tmp_path / "idx", gz=False)
    with pytest.raises(DataError, match="is the training data itself"):
        load_dataset(str(root), test=str(root))
