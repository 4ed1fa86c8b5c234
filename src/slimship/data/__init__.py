"""Data sources: image folders, idx files, ``.npz`` archives and built-in data sets, as numpy splits.

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
