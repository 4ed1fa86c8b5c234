"""One base, many tasks: a task model stored as a small, compressed delta against a shared base graph.

Models fine-tuned from the same base (say ImageNet EfficientNet-Lite0) differ from it by a small change per
weight. :func:`encode_delta` turns two fp32 ONNX graphs of the same architecture into one self-contained blob:

* the task's graph **skeleton**: the task ONNX with the data of every delta-coded initializer removed. It keeps
  the task's own structure, so a task head with another class count (or any tensor the base lacks, or holds at
  another shape) is simply stored whole inside it;
* per matched fp32 initializer (same name, or same place of use, and same shape in base and task) one
  encoding of ``task - base``:

  - ``sparse``: the top ``density`` fraction of entries by ``|delta|`` (per tensor, or allocated across tensors
    with ``allocation="norm"``), values as int8 / int4 with one scale per tensor (MSE-chosen clipping), fp16,
    or 32 bits (lossless: the difference of the fp32 bit patterns), positions as a bitmask or as varint-coded
    gaps, whichever compresses smaller;
  - ``bitdelta`` (BitDelta-style): one sign bit per entry and one fp32 scale per tensor, ``mean |delta|``
    (or per output channel);
  - ``mixed``: every entry coded with a per-tensor Lloyd-Max codebook of 2 to 32 levels, the sizes allocated
    across tensors by rate-distortion under a bits-per-weight budget, optionally weighted by measured
    sensitivities (:func:`tensor_sensitivity`);
  - ``lowrank``: each changed matrix as a truncated SVD with fp16 factors (exact for a LoRA-trained task;
    :mod:`slimship.package.delta.lowrank`), vectors and full-rank changes as fp16 deltas;
  - unchanged tensors cost nothing.

The payload is lzma-compressed as a whole. :func:`apply_delta` rebuilds the task ONNX from the base graph and
the blob, :func:`best_delta` picks the smallest blob whose reconstruction keeps a caller-given score (validation
accuracy) within ``max_drop``, :func:`pack_delta` writes it as a ``.slim`` package and :func:`load_task_onnx`
reads it back against the base package, refusing a base that is not the one the delta was made from.

Decoding is bounded and never executes anything: the blob is JSON + raw arrays, its payload size is checked
before decompressing (with an output bound), its SHA-256 is checked, and every declared size is compared with
the bytes actually present before anything is allocated. Any malformed blob raises
:class:`~slimship.core.errors.PackageError`. numpy + onnx only (no torch). Layout and figures: docs/delta.md.
"""

from __future__ import annotations

# Modules: config (DeltaConfig, constants), encode (encode_delta and its coders), lowrank (the lowrank coder),
# decode (apply_delta, blob checks), search (tensor_sensitivity, best_delta), graph (ONNX initializer helpers),
# bits (mask/gap packing; the bit and int4 packing itself is slimship.package.bits), package (pack_delta,
# load_task_onnx). The
# constants and private helpers imported below besides the public API keep their old paths
# (slimship.package.delta._PREFIX, ._varint_encode, ._pack_int4, ...) working.
from slimship.package.bits import pack_int4 as _pack_int4
from slimship.package.bits import unpack_int4 as _unpack_int4
from slimship.package.delta.bits import _gaps, _gaps_decode, _mask_bytes, _varint_encode
from slimship.package.delta.config import (
    _FIX,
    _MAGIC,
    _PREFIX,
    ALLOCATIONS,
    BLOB_VERSION,
    DELTA_PART,
    MODES,
    VALUE_BITS,
    DeltaConfig,
)
from slimship.package.delta.decode import _open_blob, apply_delta
from slimship.package.delta.encode import encode_delta
from slimship.package.delta.package import load_task_onnx, pack_delta
from slimship.package.delta.search import best_delta, tensor_sensitivity

__all__ = [
    "DeltaConfig",
    "encode_delta",
    "apply_delta",
    "best_delta",
    "pack_delta",
    "load_task_onnx",
    "tensor_sensitivity",
    "DELTA_PART",
]
