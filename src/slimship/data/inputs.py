"""What a model's preprocessing reads, whatever the kind of examples: labelled data to evaluate a package on, and
the inputs of a prediction. The kind comes from the preprocessing (``examples``: "images" or "texts"); a data
source of the other kind is refused with a message that says so."""

from __future__ import annotations

from typing import Any

from slimship.core.errors import DataError
from slimship.core.preprocessing import examples_of
from slimship.data.folder import image_files
from slimship.data.sources import SOURCES, load_eval_split, resolve_source
from slimship.data.text import read_texts_for_prediction


def check_examples(source: str, holds: str, pre: Any) -> None:
    """DataError unless a source that ``holds`` examples of one kind fits a model reading ``pre``'s kind."""
    wants = examples_of(pre)
    if holds != wants:
        raise DataError(f"data source {source} holds {holds} but the model reads {wants}: pass {wants}, or a model "
                        f"kind for {holds} (`slimship list`)")


def load_eval_examples(source: str, class_names: list[str], pre: Any, options: dict | None = None, lazy: bool = False):
    """Everything ``source`` offers for evaluation (its own test split when it has one), labels in the model's
    label space, as a split whose ``raw`` examples ``pre.prepare`` reads (with ``lazy``, an image folder stays
    undecoded: the preprocessing decodes a chunk at a time, straight to its input size). Raises DataError."""
    kind, target = resolve_source(source)
    entry = SOURCES.get(kind)
    check_examples(source, entry.examples, pre)
    if entry.eval_split is not None:
        return entry.eval_split(target, class_names, options)
    return load_eval_split(source, class_names, pre.channels, None, lazy=lazy)


def read_inputs(items: list[str], pre: Any) -> tuple[list[str], Any]:
    """``(names, raw examples)`` to predict: for an image model, image files or folders of them, undecoded
    (:class:`~slimship.data.files.ImageFiles`: the preprocessing decodes a slice at a time); texts or text files
    (.txt, .eml) for a text model. Raises DataError."""
    if examples_of(pre) == "texts":
        return read_texts_for_prediction(items)
    source = image_files([str(p) for p in items], pre.channels)
    return [str(p) for p in source.paths], source


def source_examples(source: str) -> str:
    """What a data source holds: "images" or "texts". Raises DataError when it cannot be resolved."""
    return SOURCES.get(resolve_source(source)[0]).examples
