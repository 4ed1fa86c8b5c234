"""Tables of labelled texts: ``.csv`` / ``.tsv`` with a header row, ``.jsonl`` / ``.ndjson`` with one JSON object
per line. Only the two named columns are read; labels are kept as text (class names)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from slimship.core.errors import DataError


def read_table(path: Path, text_column: str, label_column: str) -> tuple[list[str], list[str]]:
    """``(texts, labels)`` from a table file; a row without text or label is a DataError naming the line."""
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = _jsonl_rows(path)
    else:
        rows = _csv_rows(path, "\t" if path.suffix.lower() == ".tsv" else ",", text_column, label_column)
    texts, labels = [], []
    for line, row in rows:
        text, label = row.get(text_column), row.get(label_column)
        if text is None or label is None or (isinstance(label, str) and not label.strip()):
            missing = text_column if text is None else label_column
            raise DataError(f"{path} line {line} has no {missing!r}: give every row a text and a label (the "
                            f"columns are data.text_column / data.label_column in the recipe)")
        if isinstance(label, float) and label.is_integer():
            label = int(label)
        texts.append(str(text))
        labels.append(str(label).strip())
    if not texts:
        raise DataError(f"{path} holds no rows: add labelled texts")
    return texts, labels


def _csv_rows(path: Path, delimiter: str, text_column: str, label_column: str):
    try:
        handle = path.open(newline="", encoding="utf-8-sig", errors="replace")
    except OSError as e:
        raise DataError(f"{path} cannot be read ({e.strerror}): fix its permissions") from None
    csv.field_size_limit(2**24)
    with handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        header = reader.fieldnames or []
        absent = [c for c in (text_column, label_column) if c not in header]
        if absent:
            raise DataError(f"{path} has no column {', '.join(map(repr, absent))} (its header: "
                            f"{', '.join(header[:10]) or 'empty'}): set data.text_column / data.label_column")
        try:
            rows = [(reader.line_num, row) for row in reader]
        except csv.Error as e:
            kind = "TSV" if delimiter == "\t" else "CSV"
            raise DataError(f"{path} line {reader.line_num} is not valid {kind} ({e}): fix the quoting") from None
    return rows


def _jsonl_rows(path: Path):
    rows = []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        raise DataError(f"{path} cannot be read ({e.strerror}): fix its permissions") from None
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path} line {i} is not JSON ({e.msg}): write one JSON object per line") from None
        if not isinstance(row, dict):
            raise DataError(f"{path} line {i} is not a JSON object: write one object per line, e.g. "
                            '{"text": "...", "label": "spam"}')
        rows.append((i, row))
    return rows


_TEXT_NAMES = ("text", "texts", "sentence", "message", "body", "content", "review", "document", "email", "mail",
               "comment", "tweet", "question", "title")
_LABEL_NAMES = ("label", "labels", "class", "category", "target", "sentiment", "intent", "topic", "y", "tag")


def guess_columns(path: Path, sample: int = 200) -> tuple[str, str]:
    """``(text column, label column)`` of a table: the usual names when present (``text``, ``message``, ...;
    ``label``, ``class``, ...), else the column with the longest texts and the one with the fewest distinct
    values (at least two) among the first ``sample`` rows. Raises DataError for a table with fewer than two
    columns."""
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = [r for _, r in _jsonl_rows(path)[:sample]]
    else:
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        with path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
            reader = csv.DictReader(handle, delimiter=delimiter)
            rows = [r for _, r in zip(range(sample), reader)]
    names = list(dict.fromkeys(k for r in rows for k in r if k is not None))
    if len(names) < 2:
        raise DataError(f"{path} has {len(names)} column(s): a table of texts needs a text and a label column")
    lower = {n.lower(): n for n in names}
    text = next((lower[n] for n in _TEXT_NAMES if n in lower), None) or max(
        names, key=lambda n: sum(len(str(r.get(n, ""))) for r in rows))
    rest = [n for n in names if n != text]
    label = next((lower[n] for n in _LABEL_NAMES if n in lower and lower[n] != text), None)
    if label is None:
        counts = {n: len({str(r.get(n)) for r in rows}) for n in rest}
        label = min(rest, key=lambda n: (counts[n] < 2, counts[n]))
    return text, label
