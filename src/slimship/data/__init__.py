"""Data sources: image folders, idx files, ``.npz`` archives, texts (folders, tables, mails) and built-in data
sets, as numpy splits.

Importing this package does not import torch.
"""

from slimship.data import transforms as _transforms  # noqa: F401  (registers the image preprocessing)
from slimship.data.sources import (
    BUILTIN_DATASETS,
    IMAGE_EXTENSIONS,
    SOURCES,
    ArraySplit,
    DatasetSplits,
    ImageFiles,
    SourceKind,
    image_files,
    load_dataset,
    load_eval_split,
    load_images_for_prediction,
    read_idx,
    resolve_source,
    stratified_split,
    stratified_subsample,
)
from slimship.data import text as _text  # noqa: F401,E402  (registers the text sources, after the image ones)
from slimship.data import text_preprocessing as _text_preprocessing  # noqa: F401,E402  (the "text" preprocessing)

__all__ = [
    "BUILTIN_DATASETS",
    "IMAGE_EXTENSIONS",
    "SOURCES",
    "ArraySplit",
    "DatasetSplits",
    "ImageFiles",
    "SourceKind",
    "image_files",
    "load_dataset",
    "load_eval_split",
    "load_images_for_prediction",
    "read_idx",
    "resolve_source",
    "stratified_split",
    "stratified_subsample",
]
