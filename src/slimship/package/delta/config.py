"""Delta blob constants, the :class:`DeltaConfig` dataclass and the malformed-blob error."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from slimship.core.errors import PackageError
from slimship.package.format import _LZMA_MEMLIMIT, _LZMA_PRESET, MAX_HEADER_BYTES, MAX_PART_BYTES

DELTA_PART = "delta.bin"
BLOB_VERSION = 3  # the newest version read; a blob is written at the lowest version that holds its entries
# Bit order of the bitmasks (sparse positions) and sign bits, by blob version. Version 1 used numpy's default
# (big-endian); version 2 uses the little-endian order of everything else slimship packs (package/bits.py).
# Version 3 adds ``lowrank`` entries (nothing else changed: a blob without them is still written as version 2).
_BIT_ORDER = {1: "big", 2: "little", 3: "little"}
LOWRANK_VERSION = 3
MODES = ("sparse", "bitdelta", "mixed", "lowrank")
VALUE_BITS = (4, 8, 16, 32)
ALLOCATIONS = ("uniform", "norm")

_MAGIC = b"SLIMDLT\x00"
_PREFIX = struct.Struct("<8sHQ32s")  # magic, version, payload size, sha256(payload); then the xz stream
# The container's bounds and xz settings: the blob is a package part, its payload bounded like any part's
# decoded bytes and its JSON header like the package's own.
_MAX_PAYLOAD = MAX_PART_BYTES
_MAX_HEADER = MAX_HEADER_BYTES
_FLOAT = 1  # onnx.TensorProto.FLOAT
_NUMERIC_TYPES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}  # type: itemsize
_KINDS = ("same", "sparse", "sign", "codes", "half", "lowrank")
# Codebook sizes the mixed mode chooses from. At least 2: dropping a tensor's delta (1 level) looked cheap
# by the error measure but cost far more accuracy than a sign-like 2-level code on real fine-tunes.
_LEVELS = (2, 3, 4, 6, 8, 12, 16, 24, 32)
_FIX = "re-create the delta with slimship.package.delta.encode_delta"


# --------------------------------------------------------------------------------------------- config


@dataclass
class DeltaConfig:
    """How to encode a task against its base.

    mode: ``"sparse"`` (top-``density`` entries, quantised), ``"bitdelta"`` (sign + one scale per tensor),
        ``"mixed"`` (every entry, coded with a per-tensor codebook whose size is chosen per tensor) or
        ``"lowrank"`` (each changed matrix as a truncated SVD with fp16 factors, exact for a LoRA-trained change;
        vectors, and matrices whose factors would not be smaller, as dense fp16 deltas).
    density: fraction of entries kept per tensor (sparse; ``1.0`` keeps every changed entry).
    value_bits: 4 or 8 (int, per-tensor scale), 16 (fp16 delta) or 32 (lossless) for kept values.
    allocation: ``"uniform"`` keeps ``density`` of every tensor; ``"norm"`` keeps the same total but gives each
        tensor a share proportional to its relative change ``rms(delta) / rms(base)`` (clipped to
        ``[density/4, 1]``), so tensors that moved more keep more entries.
    scales: bitdelta / mixed scale per ``"tensor"`` (BitDelta) or per output ``"channel"`` (row of axis 0:
        one fp16 multiplier per channel on top of the tensor's fp32 scale, which follows per-channel effects
        such as BatchNorm folded into the weights).
    bits_per_weight: mixed mode's budget: average bits per delta entry (entropy estimate; lzma lands close).
        Each tensor's delta is quantised with a Lloyd-Max codebook of 2 to 32 levels; the sizes are allocated
        across tensors greedily by rate-distortion, the distortion of a tensor being its squared error relative
        to the energy of its base weights (an estimate of the noise it adds to its layer's output), times its
        measured sensitivity when one is given.
    dense_vectors: store the deltas of 1-D tensors (biases, the folded BatchNorm shifts) completely, as fp16.
    head_bits: 32 keeps tensors without a base counterpart (the new head) in fp32; 16 stores them as fp16.
    rank: lowrank mode's largest rank per tensor (None: the smallest rank whose relative error is below
        ``lowrank.RANK_TOLERANCE``; a lower cap truncates, lossily).
    """

    mode: str = "sparse"
    density: float = 0.05
    value_bits: int = 8
    allocation: str = "uniform"
    scales: str = "tensor"
    bits_per_weight: float = 1.4
    dense_vectors: bool = False
    head_bits: int = 32
    rank: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"DeltaConfig.mode must be one of {MODES}, got {self.mode!r}")
        if not isinstance(self.density, (int, float)) or not 0.0 < float(self.density) <= 1.0:
            raise ValueError(f"DeltaConfig.density must be in (0, 1], got {self.density!r}")
        if self.value_bits not in VALUE_BITS:
            raise ValueError(f"DeltaConfig.value_bits must be one of {VALUE_BITS}, got {self.value_bits!r}")
        if self.allocation not in ALLOCATIONS:
            raise ValueError(f"DeltaConfig.allocation must be one of {ALLOCATIONS}, got {self.allocation!r}")
        if not isinstance(self.bits_per_weight, (int, float)) or not 0.0 < float(self.bits_per_weight) <= 8.0:
            raise ValueError(f"DeltaConfig.bits_per_weight must be in (0, 8], got {self.bits_per_weight!r}")
        if self.scales not in ("tensor", "channel"):
            raise ValueError(f"DeltaConfig.scales must be 'tensor' or 'channel', got {self.scales!r}")
        if self.head_bits not in (16, 32):
            raise ValueError(f"DeltaConfig.head_bits must be 16 or 32, got {self.head_bits!r}")
        if self.rank is not None and (type(self.rank) is not int or self.rank < 1):
            raise ValueError(f"DeltaConfig.rank must be None or an integer >= 1, got {self.rank!r}")


def _bad(what: str) -> PackageError:
    return PackageError(f"the delta blob is malformed: {what}; the file is corrupted, {_FIX}")
