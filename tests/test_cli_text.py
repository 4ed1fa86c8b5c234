"""A text data set slimship has never seen, from `init` to a shipped package without editing the recipe (in
subprocesses, as a user runs them), then predict / eval / export / inspect / list on it (tiny BERT, tiny texts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import onnx
import pytest
import yaml

from slimship.cli.main import main
from tests.text_helpers import make_texts, make_tiny_bert, write_text_folder


def _in_process(capsys, *args: str) -> subprocess.CompletedProcess:
    """The CLI in this process (no second torch import): exit status, stdout and stderr as a subprocess gives."""
    capsys.readouterr()
    rc = main(list(args))
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, rc, out.out, out.err)


def _cli(*args: str) -> subprocess.CompletedProcess:
    # one torch thread: a tiny model trains far faster on one thread of a busy machine (figures do not change)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "slimship.cli.main", *args], capture_output=True, text=True, env=env,
                          timeout=900)


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    bert = make_tiny_bert(root / "bert")
    data = write_text_folder(root / "mails", 40, eml_every=5)
    p = _cli("init", "--model", str(bert), "--data", str(data), "--out", str(root / "recipe.yaml"))
    assert p.returncode == 0, p.stderr
    p = _cli("run", str(root / "recipe.yaml"), "--out", str(root / "out"), "--quiet")
    assert p.returncode == 0, p.stderr
    return root, bert, data, root / "out"


def test_init_writes_a_text_recipe_and_run_ships_it_unedited(shipped):
    root, bert, data, out = shipped
    r = yaml.safe_load((root / "recipe.yaml").read_text())
    assert r["model"]["kind"] == "hf-text" and r["model"]["architecture"] == str(bert)
    assert r["model"]["max_length"] == 64  # 256, capped by the tiny model's positions
    m = json.loads((out / "metrics.json").read_text())
    by = {e["name"]: e for e in m["models"]}
    assert {"probe", "finetuned", "scratch", "int8"} <= set(by)
    assert by["finetuned"]["accuracy"] >= 0.9 and by["finetuned"]["accuracy"] > by["scratch"]["accuracy"]
    assert set(by["finetuned"]["latency_ms"]) == {"batch1", "batch32"}
    assert m["dataset"]["preprocessing"]["kind"] == "text" and m["dataset"]["examples"] == "texts"
    assert by["int8"]["size_bytes"] < by["finetuned"]["size_bytes"]
    assert {t["mode"] for t in by["int8"]["notes"]["int8"]["trials"]} == {"dynamic", "static"}
    # the template's transformer surgery (half the layers; heads and FFN neurons), each then int8, is smaller still
    assert by["half-layers-int8"]["notes"]["drop_layers"]["kept"] == [1]
    assert by["pruned-int8"]["notes"]["prune_transformer"]["ffn_after"] == [32, 32]
    assert max(by[n]["size_bytes"] for n in ("half-layers-int8", "pruned-int8")) < by["int8"]["size_bytes"]
    # and both in a row: the half-layer model (the same cached step), then its heads and neurons
    assert by["half-layers-pruned-int8"]["notes"]["drop_layers"]["kept"] == [1]
    assert by["half-layers-pruned-int8"]["size_bytes"] < by["half-layers-int8"]["size_bytes"]
    assert "texts, 2 classes, tokenized to at most 64 tokens" in (out / "report.md").read_text()
    log = (out / "run.log").read_text()
    assert "texts/s" in log and "img/s" not in log  # training speed in texts
    # precision auto: a text model trains in bf16 on a CPU with AMX (faster there), else fp32
    from slimship.core.device import cpu_has_amx

    assert m["device"]["precision"] == ("bf16" if cpu_has_amx() else "fp32")


def test_predict_takes_texts_and_text_files(capsys, shipped):
    root, _, data, out = shipped
    (root / "note.txt").write_text("free money winner click now")
    p = _in_process(capsys, "predict", str(out / "model.slim"), "meeting report agenda for the team",
                    str(root / "note.txt"), "--json", "--top", "2")
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout)
    assert [r["text"] for r in rows] == ["meeting report agenda for the team", str(root / "note.txt")]
    assert [r["top"][0]["class"] for r in rows] == ["ham", "spam"]
    assert abs(sum(t["probability"] for t in rows[0]["top"]) - 1) < 1e-3


def test_eval_scores_a_text_table_with_the_recipes_columns(capsys, shipped):
    root, _, _, out = shipped
    texts, labels = make_texts(10, seed=7)
    table = root / "more.jsonl"
    table.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in zip(texts, labels)))
    p = _in_process(capsys, "eval", str(out / "model.slim"), "--data", str(table), "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["examples"] == 20 and r["example_kind"] == "texts" and r["accuracy"] >= 0.8
    p = _in_process(capsys, "eval", str(out / "model.slim"), "--data", str(root / "mails"))
    assert p.returncode == 0 and "80 texts" in p.stdout, p.stderr


def test_export_gives_a_graph_of_token_ids_and_the_package_holds_the_tokenizer(capsys, shipped):
    root, _, _, out = shipped
    p = _in_process(capsys, "export", str(out / "model.slim"), "--onnx", str(root / "model.onnx"))
    assert p.returncode == 0, p.stderr
    inp = onnx.load(str(root / "model.onnx")).graph.input[0]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert [d.dim_param for d in inp.type.tensor_type.shape.dim] == ["batch", "sequence"]
    p = _in_process(capsys, "inspect", str(out / "model.slim"), "--json")
    info = json.loads(p.stdout)
    assert "tokenizer.json" in {x["name"] for x in info["parts"]}
    assert info["preprocessing"]["max_length"] == 64 and info["preprocessing"]["tokenizer_file"] == "tokenizer.json"


def test_list_shows_text_sources_and_models(capsys):
    p = _in_process(capsys, "list", "--json")
    assert p.returncode == 0, p.stderr
    lists = json.loads(p.stdout)
    assert {"spam-assassin", "text-folder", "text-table"} <= {e["name"] for e in lists["data sources"]}
    assert "hf-text" in {e["name"] for e in lists["model kinds"]}


@pytest.mark.parametrize("model_is_text, phrase", [(True, "holds images"), (False, "not a Hugging Face text model")])
def test_init_refuses_a_text_model_with_images_and_the_reverse(capsys, shipped, tiny_npz, model_is_text, phrase):
    root, bert, data, _ = shipped
    args = ["--model", str(bert), "--data", str(tiny_npz)] if model_is_text else \
        ["--model", "test_efficientnet", "--data", str(data)]
    p = _in_process(capsys, "init", *args)
    assert p.returncode == 2 and phrase in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_init_guesses_the_columns_of_a_table(capsys, shipped, tmp_path):
    _, bert, _, _ = shipped
    texts, labels = make_texts(4)
    table = tmp_path / "t.csv"
    table.write_text("id,category,body\n" + "".join(f'{i},{lab},"{t}"\n' for i, (t, lab) in
                                                   enumerate(zip(texts, labels))))
    p = _in_process(capsys, "init", "--model", str(bert), "--data", str(table))
    assert p.returncode == 0, p.stderr
    data = yaml.safe_load(p.stdout)["data"]
    assert (data["text_column"], data["label_column"]) == ("body", "category")


def test_init_sizes_the_validation_split_to_the_texts(shipped):
    from slimship.recipe.text_template import VAL_TEXTS, text_val_fraction

    root, _, _, out = shipped
    assert yaml.safe_load((root / "recipe.yaml").read_text())["data"]["val_fraction"] == 0.2  # a small set
    m = json.loads((out / "metrics.json").read_text())
    assert m["dataset"]["sizes"]["val"] >= 12  # 80 texts, 16 of them test: a fifth of the other 64 validates
    # SpamAssassin's 4,232 training mails: 846 validate, not 424; larger pools stop at the val_limit, and very
    # large ones keep the usual tenth
    assert [text_val_fraction(n) for n in (None, 300, 4232, 6000, 10_000, 50_000)] == [0.1, 0.2, 0.2, 0.16, 0.1, 0.1]
    assert all(n * text_val_fraction(n) <= VAL_TEXTS for n in (5001, 6000, 7777, 9999))


def test_init_loads_the_text_data_at_once(capsys, shipped, tmp_path):
    _, bert, _, _ = shipped
    table = tmp_path / "t.csv"
    table.write_text("id,body,category\n1,hello there,a\n2,goodbye now,b\n")
    p = _in_process(capsys, "init", "--model", str(bert), "--data", str(table), "--label-column", "kind")
    assert p.returncode == 2 and "no column 'kind'" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "pass --text-column / --label-column" in p.stderr  # init's flags, not the recipe's keys
    one_class = tmp_path / "one.csv"
    one_class.write_text("text,label\n" + "".join(f"mail number {i},ham\n" for i in range(10)))
    p = _in_process(capsys, "init", "--model", str(bert), "--data", str(one_class))
    assert p.returncode == 2 and "fewer than two classes" in p.stderr, p.stderr
    tiny = tmp_path / "tiny.csv"  # one text per class: nothing to hold out, said in texts
    tiny.write_text("text,label\nhello there,a\ngoodbye now,b\n")
    p = _in_process(capsys, "init", "--model", str(bert), "--data", str(tiny))
    assert p.returncode == 2 and "too few texts for a test split" in p.stderr and "images" not in p.stderr, p.stderr


def test_init_checks_the_text_model_at_once(capsys, shipped, tmp_path):
    import shutil

    _, bert, data, _ = shipped
    p = _in_process(capsys, "init", "--model", str(bert), "--data", str(data), "--max-length", "128")
    assert p.returncode == 2 and "pass --max-length at most 64" in p.stderr, p.stderr
    folder = tmp_path / "no-weights"
    shutil.copytree(bert, folder)
    (folder / "model.safetensors").unlink()
    p = _in_process(capsys, "init", "--model", str(folder), "--data", str(data))
    assert p.returncode == 2 and "no .safetensors weights" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    with pytest.raises(SystemExit):  # argparse: not a length
        main(["init", "--model", str(bert), "--data", str(data), "--max-length", "0"])


def test_init_says_how_many_texts_the_cut_shortens(capsys, shipped, tmp_path):
    _, bert, _, _ = shipped
    texts, labels = make_texts(10)
    table = tmp_path / "t.csv"
    # each text three times over: 12 to 30 words, more than 8 tokens and fewer than 64
    table.write_text("text,label\n" + "".join(f'"{t} {t} {t}",{lab}\n' for t, lab in zip(texts, labels)))
    p = _in_process(capsys, "init", "--model", str(bert), "--data", str(table), "--max-length", "8")
    assert p.returncode == 0, p.stderr
    assert "100 % of these texts are longer than 8 tokens" in p.stdout and "reads up to 64" in p.stdout
    model = yaml.safe_load(p.stdout)["model"]
    assert model["max_length"] == 8 and model["tail_tokens"] == 4  # a long text keeps its start and its end
    p = _in_process(capsys, "init", "--model", str(bert), "--data", str(table))  # 64 tokens: none is cut
    assert p.returncode == 0 and "lose their middle" not in p.stdout, p.stderr
