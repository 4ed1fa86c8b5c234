"""The data stage: a recipe's ``data`` section in, the task's train / validation / test examples out, stored
the way the model's preprocessing expects them (images resized once to the input size, texts tokenized once)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from slimship.core.preprocessing import Preprocessing


@dataclass(frozen=True)
class Examples:
    """Stored examples: ``x`` [N, ...] (uint8 images at the model's input size, or int64 token ids) and int64
    labels ``y`` [N], as torch tensors. The preprocessing turns a batch of ``x`` into model input."""

    x: Any
    y: Any

    def __len__(self) -> int:
        return len(self.y)

    def take(self, idx) -> "Examples":
        return Examples(self.x[idx], self.y[idx])


@dataclass
class TaskData:
    """What every later stage trains and judges on. ``fingerprint`` hashes the training and validation bytes,
    so editing the data invalidates cached stage results."""

    train: Examples
    val: Examples
    test: Examples
    class_names: list[str]
    channels: int
    info: dict = field(default_factory=dict)
    fingerprint: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def load_task_data(section: Any, *, seed: int) -> Any:
    """Load and split the source a recipe's ``data`` section names (raw examples, before preprocessing).

    An image folder is not decoded here: its splits hold the files (:class:`~slimship.data.files.ImageFiles`),
    which :func:`prepare_task_data` decodes one at a time straight to the model's input size, after splitting
    and subsampling, so memory follows the input size and ``train_limit``, not the photos' resolution.
    Raises DataError for bad input."""
    from slimship.data.sources import load_dataset
    from slimship.data.split import stratified_subsample

    splits = load_dataset(section.source, test=section.test, val_fraction=section.val_fraction,
                          test_fraction=section.test_fraction, train_limit=section.train_limit,
                          test_limit=section.test_limit, seed=seed, lazy=True, options=source_options(section))
    if section.val_limit and len(splits.val) > section.val_limit:
        splits.val = splits.val.subset(stratified_subsample(splits.val.labels, section.val_limit, seed))
        splits.info.setdefault("sizes", {})["val"] = len(splits.val)
    return splits


def source_options(section: Any) -> dict:
    """The settings of a kind of source a ``data`` section may carry (a text table's column names)."""
    return {k: getattr(section, k) for k in ("text_column", "label_column") if getattr(section, k, None)}


def prepare_task_data(splits: Any, pre: Preprocessing) -> TaskData:
    """Store every split as ``pre`` expects it and fingerprint what training and decisions will see. Raises
    DataError when the data holds examples of another kind than ``pre`` reads (texts for an image model)."""
    import torch

    from slimship.data.inputs import check_examples

    check_examples(splits.info.get("source", "the data"), getattr(splits.train, "examples", "images"), pre)
    ex = [Examples(pre.prepare(s.raw), torch.from_numpy(s.labels.astype("int64")))
          for s in (splits.train, splits.val, splits.test)]
    return TaskData(*ex, class_names=splits.class_names, channels=splits.channels, info=splits.info,
                    fingerprint=fingerprint(ex[0], ex[1]))


def fingerprint(train: Examples, val: Examples, salt: bytes = b"") -> str:
    """The hash of what training and decisions see (``salt`` first: a refit's merged data, api/refit.py)."""
    h = hashlib.sha256(salt)
    for t in (train.x, train.y, val.x, val.y):
        h.update(t.numpy().tobytes())
    return h.hexdigest()
