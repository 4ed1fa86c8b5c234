"""Texts to token ids, the same way in training, evaluation, prediction and inside a package.

The tokenizer is a Hugging Face ``tokenizer.json`` (a data file: the vocabulary, normalizer, pre-tokenizer and
special-token template, run by the ``tokenizers`` library; nothing in it is executed as code). Texts are encoded
with the model's special tokens, cut to ``max_length`` tokens and padded on the right with ``pad_id`` into int64
rows ``[N, max_length]``. A longer text keeps its first ``max_length - tail`` tokens and its last ``tail`` tokens
(``tail`` 0: its start only); the start and the end of a text carry most of its class (a mail's subject and
greeting, its signature and unsubscribe lines: docs/text.md measures the gain).
:meth:`TextPreprocessing.model_input` drops the columns that are padding in every row of a batch, so a batch of
short texts runs as short sequences (the deploy graph takes any sequence length); the model builds its attention
mask from ``ids != pad_id``. There is no augmentation.

A package keeps :meth:`~TextPreprocessing.to_dict` in its manifest and the tokenizer as the part
``tokenizer.json`` (:meth:`~TextPreprocessing.files`).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from slimship.core.errors import DataError, PackageError
from slimship.core.preprocessing import PREPROCESSINGS

TOKENIZER_FILE = "tokenizer.json"


@dataclass(frozen=True)
class TextPreprocessing:
    """The text input contract (:class:`slimship.core.preprocessing.Preprocessing`): texts → int64 token ids."""

    kind = "text"
    examples = "texts"
    max_length: int
    pad_id: int
    vocab_size: int
    tokenizer: str | None = field(default=None, repr=False)  # the tokenizer.json text (None: ids only)
    tail: int = 0  # tokens a longer text keeps from its end (the rest from its start)
    onnx_input_type = 7  # int64 token ids (ONNX TensorProto.INT64)

    def input_shape(self) -> tuple[int, ...]:
        """One model input row at most: ``max_length`` token ids (the graph's sequence axis is dynamic, and
        batches are trimmed to their longest row)."""
        return (self.max_length,)

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "max_length": self.max_length, "pad_id": self.pad_id, "vocab_size": self.vocab_size}
        if self.tail:
            d["tail"] = self.tail
        if self.tokenizer is not None:
            d.update(tokenizer_file=TOKENIZER_FILE,
                     tokenizer_sha256=hashlib.sha256(self.tokenizer.encode()).hexdigest())
        return d

    def files(self) -> dict[str, bytes]:
        """Data files a package must carry beside :meth:`to_dict` (the tokenizer)."""
        return {} if self.tokenizer is None else {TOKENIZER_FILE: self.tokenizer.encode()}

    def describe(self) -> str:
        if self.tail:
            return (f"tokenized to at most {self.max_length} tokens (a longer text: its first "
                    f"{self.max_length - self.tail} and last {self.tail})")
        return f"tokenized to at most {self.max_length} tokens"

    def summary(self) -> dict:
        return {"max_length": self.max_length, "tail": self.tail}

    def prepare(self, raw) -> Any:
        """Texts (a sequence of ``str``) → int64 token ids ``[N, max_length]``, right-padded with ``pad_id``; a
        longer text keeps its first ``max_length - tail`` and its last ``tail`` tokens (the special tokens at both
        ends stay)."""
        import torch

        texts = list(raw)
        if any(not isinstance(t, str) for t in texts):
            bad = next(type(t).__name__ for t in texts if not isinstance(t, str))
            raise DataError(f"this model reads texts but was given {bad} examples: pass a text data set or texts")
        ids = np.full((len(texts), self.max_length), self.pad_id, np.int64)
        head = self.max_length - self.tail
        cut = None if self.tail else self.max_length  # with a tail, whole texts are encoded and cut here
        for i, enc in enumerate(_tokenizer(self._tokenizer_json(), cut).encode_batch(texts)):
            row = enc.ids
            if len(row) > self.max_length:
                row = row[:head] + row[len(row) - self.tail:] if self.tail else row[: self.max_length]
            ids[i, : len(row)] = row
        return torch.from_numpy(ids)

    def cut_share(self, texts) -> float:
        """The share of ``texts`` longer than ``max_length`` tokens (special tokens included): the texts the cut
        shortens (it drops their end, or their middle with a ``tail``)."""
        texts = list(texts)
        if not texts:
            return 0.0
        encoded = _tokenizer(self._tokenizer_json(), self.max_length + 1).encode_batch(texts)
        return sum(len(e.ids) > self.max_length for e in encoded) / len(texts)

    def model_input(self, batch):
        return batch[:, : _used_columns(batch != self.pad_id)]

    def model_input_np(self, batch: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(batch[:, : _used_columns(batch != self.pad_id)], dtype=np.int64)

    def random_rows(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Full-length rows of random token ids other than ``pad_id``."""
        ids = rng.integers(0, self.vocab_size - 1, (n, self.max_length), dtype=np.int64)
        return ids + (ids >= self.pad_id)

    def augment(self, batch, generator=None, hflip: bool = False, shift: int = 0):
        return batch

    def _tokenizer_json(self) -> str:
        if self.tokenizer is None:
            raise PackageError("this text preprocessing has no tokenizer (a manifest read without its parts): load "
                               "the package with slimship.api.load")
        return self.tokenizer

    @classmethod
    def from_dict(cls, d: dict, read_file: Callable[[str], bytes] | None = None) -> "TextPreprocessing":
        """Rebuild from :meth:`to_dict`; ``read_file(name)`` gives the package part named in it (the tokenizer),
        else the result has token ids only (enough to check graphs on random rows)."""
        tokenizer = None
        if read_file is not None and d.get("tokenizer_file"):
            data = read_file(str(d["tokenizer_file"]))
            if hashlib.sha256(data).hexdigest() != d.get("tokenizer_sha256"):
                raise PackageError("the package's tokenizer does not match its manifest: re-create the package")
            tokenizer = data.decode("utf-8")
        max_length = _int_in(d["max_length"], "max_length", 1, MAX_LENGTH)
        vocab_size = _int_in(d["vocab_size"], "vocab_size", 2, MAX_VOCAB)
        return cls(max_length=max_length, pad_id=_int_in(d["pad_id"], "pad_id", 0, vocab_size - 1),
                   vocab_size=vocab_size, tokenizer=tokenizer,
                   tail=_int_in(d.get("tail", 0), "tail", 0, max_length - 1))  # packages from before tails: 0


MAX_LENGTH, MAX_VOCAB = 8192, 10_000_000  # bounds a package manifest must keep (a hostile one could ask for more)


def _int_in(value, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer between {low} and {high}, not {repr(value)[:40]}")
    return value


def _used_columns(mask) -> int:
    """Columns up to the last one that holds a token in any row (at least one)."""
    cols = mask.any(0)
    nz = cols.nonzero()
    idx = nz[0] if isinstance(nz, tuple) else nz.flatten()
    return int(idx[-1]) + 1 if len(idx) else 1


@functools.lru_cache(maxsize=4)
def _tokenizer(tokenizer_json: str, max_length: int | None):
    """A ``tokenizers.Tokenizer`` from its JSON, truncating at ``max_length`` (special tokens included; None: not
    at all), no padding."""
    from tokenizers import Tokenizer

    try:
        tok = Tokenizer.from_str(tokenizer_json)
    except Exception as e:  # the Rust library raises a plain Exception for malformed JSON
        raise DataError(f"the tokenizer cannot be read ({str(e)[:80]}): give the model folder's "
                        f"tokenizer.json") from None
    tok.no_padding()
    if max_length is None:
        tok.no_truncation()
    else:
        tok.enable_truncation(max_length)
    return tok


PREPROCESSINGS.add("text", TextPreprocessing,
                   help="texts: tokenizer.json, cut to max_length tokens (start + tail), int64 ids")
