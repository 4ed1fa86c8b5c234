"""Compressed weight encoding inside a package: sparse bitmasks, bit-packed cluster indices, codebooks.

A graph's float initializers are stored in the smallest exact form that fits them. Each form is one
:class:`TensorCodec` in :data:`CODECS`:

* ``raw``: float32 as is; always possible.
* ``sparse``: many zeros but unshared values → bitmask + the nonzero float32 values.
* ``shared``: at most 256 distinct nonzero values (k-means weight sharing) → a codebook of the values, a
  bitmask of nonzero positions (if any are zero) and ``ceil(log2 k)``-bit indices of the nonzeros, packed.
* ``half``: every value is exactly a float16 (the BatchNorm affines of compressed packages) → float16 bytes.
* ``qint``: symmetric integer codes times a float scale per block (weight-only int8/int4 quantization) → the
  scales (float16 where that is exact, else float32), an optional bitmask, and the codes, bit-packed. Found
  from the values alone (see :func:`_qint_fit`), so any exporter layout works, including the transposed
  weights ONNX MatMuls hold.

Bitmasks and packed codes use the one bit order of :mod:`slimship.package.bits` (little-endian). The container
then entropy-codes the whole blob (lzma/zlib, whichever is smaller; see package-format.md). Decoding is exact:
the decoded tensors are bit-identical to the encoded ones, and the ONNX graph they are put back into is the one
measured. Every declared size is checked against the blob before anything is allocated, so a hostile blob is
refused with PackageError rather than exhausting memory.
"""

from __future__ import annotations

import json
import math
import struct

import numpy as np

from slimship.core.errors import PackageError
from slimship.package._header import MAX_PACKAGE_RAW_BYTES
from slimship.package.bits import pack_bits, pack_mask, packed_size, unpack_bits, unpack_mask

MAGIC = b"SLW1"
MAX_ELEMENTS = 1 << 31  # per tensor
MIN_ENCODE = 256  # smaller tensors stay inside the graph

Encoded = tuple[dict, list[bytes]]  # (entry without name/shape/lengths, chunks)


class TensorCodec:
    """One exact encoding of a float32 tensor in a weights blob; an entry's ``"enc"`` names its codec.

    ``encode(a)`` returns ``(entry, chunks)`` (the entry holds ``"enc"`` and the codec's own keys; the caller adds
    ``name``, ``shape`` and ``lengths``), or None where this encoding cannot hold ``a`` exactly.
    ``decode(e, chunks, shape, n)`` returns the float32 tensor of ``shape`` (``n`` entries, already bounded by
    :data:`MAX_ELEMENTS`). It must check every length against ``n`` before allocating anything the size of the
    tensor, and raise PackageError for anything inconsistent; a missing key or a value of the wrong type may
    surface as KeyError/TypeError/ValueError, which :func:`decode_tensor` reports as a malformed header.

    A new encoding is one subclass added to :data:`CODECS`, e.g. all-zero tensors stored as nothing::

        class ZerosCodec(TensorCodec):
            name = "zeros"

            def encode(self, a):
                return None if a.view(np.uint32).any() else ({"enc": self.name}, [])  # -0.0 is not +0.0

            def decode(self, e, chunks, shape, n):
                if chunks:
                    raise PackageError("weights blob is corrupted: zeros tensor with data")
                return np.zeros(shape, np.float32)
    """

    name: str = ""

    def encode(self, a: np.ndarray) -> Encoded | None:
        raise NotImplementedError

    def decode(self, e: dict, chunks: list[bytes], shape: tuple, n: int) -> np.ndarray:
        raise NotImplementedError


def _nonzeros(flat: np.ndarray) -> tuple[np.ndarray, int, bytes]:
    """(nonzero flags, their count, the bitmask chunk: empty when every entry is nonzero)."""
    nz = flat != 0
    nnz = int(nz.sum())
    return nz, nnz, pack_mask(nz) if nnz < flat.size else b""


def _nnz(e: dict, n: int) -> int:
    nnz = int(e["nnz"])
    if not 0 <= nnz <= n:
        raise PackageError("weights blob is corrupted: impossible nonzero count")
    return nnz


def _mask_of(chunk: bytes, nnz: int, n: int) -> np.ndarray:
    """The nonzero positions of a tensor: its bitmask chunk, or every position when the chunk is empty."""
    if not chunk:
        if nnz != n:
            raise PackageError("weights blob is corrupted: dense tensor with a nonzero count that differs")
        return np.ones(n, bool)
    if len(chunk) != packed_size(n, 1):
        raise PackageError("weights blob is corrupted: bitmask length does not match the tensor shape")
    m = unpack_mask(chunk, n)
    if int(m.sum()) != nnz:
        raise PackageError("weights blob is corrupted: bitmask does not match the declared nonzero count")
    return m


def _unpack_codes(data: bytes, count: int, nbits: int) -> np.ndarray:
    need = packed_size(count, nbits)
    if len(data) != need:
        raise PackageError(f"weights blob is corrupted: {len(data)} index bytes where {need} were declared; re-create the package")
    return unpack_bits(data, count, nbits)


class RawCodec(TensorCodec):
    name = "raw"

    def encode(self, a: np.ndarray) -> Encoded:
        return {"enc": self.name}, [a.reshape(-1).astype(np.float32).tobytes()]

    def decode(self, e: dict, chunks: list[bytes], shape: tuple, n: int) -> np.ndarray:
        if len(chunks) != 1 or len(chunks[0]) != 4 * n:
            raise PackageError("weights blob is corrupted: raw tensor of the wrong length")
        return np.frombuffer(chunks[0], np.float32).reshape(shape).copy()


class SparseCodec(TensorCodec):
    name = "sparse"

    def encode(self, a: np.ndarray) -> Encoded | None:
        flat = a.reshape(-1)
        nz, nnz, mask = _nonzeros(flat)
        if not mask:
            return None
        return {"enc": self.name, "nnz": nnz}, [mask, flat[nz].astype(np.float32).tobytes()]

    def decode(self, e: dict, chunks: list[bytes], shape: tuple, n: int) -> np.ndarray:
        nnz = _nnz(e, n)
        # the value length is checked before the tensor is allocated: a declared shape cannot make the reader
        # allocate more than the blob's own size justifies
        if len(chunks) != 2 or len(chunks[1]) != 4 * nnz:
            raise PackageError("weights blob is corrupted: sparse values of the wrong length")
        keep = _mask_of(chunks[0], nnz, n)
        out = np.zeros(n, np.float32)
        out[keep] = np.frombuffer(chunks[1], np.float32)
        return out.reshape(shape)


class SharedCodec(TensorCodec):
    name = "shared"

    def encode(self, a: np.ndarray) -> Encoded | None:
        flat = a.reshape(-1)
        nz, nnz, mask = _nonzeros(flat)
        uniq, inv = np.unique(flat[nz], return_inverse=True)
        if not 0 < len(uniq) <= 256:
            return None
        nbits = max(1, math.ceil(math.log2(len(uniq))))
        chunks = [uniq.astype(np.float32).tobytes(), mask, pack_bits(inv.astype(np.uint32), nbits)]
        return {"enc": self.name, "k": int(len(uniq)), "nbits": nbits, "nnz": nnz}, chunks

    def decode(self, e: dict, chunks: list[bytes], shape: tuple, n: int) -> np.ndarray:
        nnz = _nnz(e, n)
        k, nbits = int(e["k"]), int(e["nbits"])
        if not (1 <= k <= 256 and 1 <= nbits <= 8 and len(chunks) == 3 and len(chunks[0]) == 4 * k):
            raise PackageError("weights blob is corrupted: bad codebook")
        codebook = np.frombuffer(chunks[0], np.float32)
        idx = _unpack_codes(chunks[2], nnz, nbits)  # length checked first: at most nnz indices
        if idx.size and int(idx.max()) >= k:
            raise PackageError("weights blob is corrupted: cluster index out of range")
        keep = _mask_of(chunks[1], nnz, n)
        out = np.zeros(n, np.float32)
        out[keep] = codebook[idx]
        return out.reshape(shape)


class HalfCodec(TensorCodec):
    name = "half"

    def encode(self, a: np.ndarray) -> Encoded | None:
        flat = a.reshape(-1)
        half = flat.astype(np.float16)
        if not np.array_equal(half.astype(np.float32).view(np.uint32), flat.astype(np.float32).view(np.uint32)):
            return None  # not bit-exact
        return {"enc": self.name}, [half.tobytes()]

    def decode(self, e: dict, chunks: list[bytes], shape: tuple, n: int) -> np.ndarray:
        if len(chunks) != 1 or len(chunks[0]) != 2 * n:
            raise PackageError("weights blob is corrupted: float16 tensor of the wrong length")
        return np.frombuffer(chunks[0], np.float16).astype(np.float32).reshape(shape)


# ---- qint: integer codes times a scale per block ------------------------------------------------------------
# A block is ``block`` consecutive entries of one row; a row is the tensor seen as [shape[0], rest] (layout
# "rows": Conv weights, Gemm weights, PyTorch's [out, in]) or, for 2-D tensors, one column (layout "cols": the
# transposed [in, out] weights that ONNX MatMuls hold). The last block of a row may be shorter.
QINT_BLOCKS = (16, 32, 64, 128, 256, 512, 1024)  # block lengths tried besides whole rows


def _rows_of(a: np.ndarray, layout: str) -> np.ndarray:
    return a.reshape(a.shape[0] if a.ndim else 1, -1) if layout == "rows" else a.T


def _blocked(x2: np.ndarray, block: int) -> np.ndarray:
    rows, cols = x2.shape
    nb = -(-cols // block)
    if nb * block != cols:
        x2 = np.pad(x2, ((0, 0), (0, nb * block - cols)))
    return x2.reshape(rows, nb, block)


def _qint_fit(x2: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray, int] | None:
    """Integer codes [rows, cols] and float32 scales [rows * blocks] with codes * scale == x2 exactly, or None.

    Every float32 is an integer (its 24-bit significand) times a power of two; within a block the values share
    the factor gcd(significands at a common exponent) times that power, and the cofactors are the codes. A block
    that was quantized as code * scale, with a product exact in float32 (slimship's quantizer keeps an 11-bit
    scale significand so that it is), gives back codes no larger than the quantizer's, so the fit is found from
    the values alone. The result is checked by decoding, so a wrong guess can only lose a size saving.
    """
    rows, cols = x2.shape
    b = _blocked(x2, block)
    nz = b != 0
    mant, ex = np.frexp(b)
    sig = (mant.astype(np.float64) * (1 << 24)).astype(np.int64)  # exact: 24-bit significands
    emin = np.where(nz, ex, np.iinfo(np.int32).max).min(axis=2, keepdims=True)
    shift = np.where(nz, ex - emin, 0)
    if shift.size and int(shift.max()) > 20:  # exponents this far apart cannot be small codes of one scale
        return None
    ints = sig * (np.int64(1) << shift.astype(np.int64))
    g = np.gcd.reduce(ints, axis=2, keepdims=True)
    codes = ints // np.maximum(g, 1)
    top = int(np.abs(codes).max()) if codes.size else 0
    if top > 127:
        return None
    nbits = max(2, int(2 * top).bit_length())  # symmetric: codes in [-(2**(nbits-1) - 1), 2**(nbits-1) - 1]
    scales = np.ldexp(g.astype(np.float64), np.where(g > 0, emin, 0) - 24).astype(np.float32)
    # Scale each block up to the full code range where that divides evenly (a block of codes {0, ±qmax} came
    # back as {0, ±1}): the quantizer's own scale, which float16 usually holds exactly.
    qmax = (1 << (nbits - 1)) - 1
    top_b = np.abs(codes).max(axis=2, keepdims=True)
    f = np.where((top_b > 0) & (qmax % np.maximum(top_b, 1) == 0), qmax // np.maximum(top_b, 1), 1)
    up_codes, up_scales = codes * f, (scales / f.astype(np.float32)).astype(np.float32)
    same = ((up_codes.astype(np.float32) * up_scales) == b).all(axis=2, keepdims=True)
    codes, scales = np.where(same, up_codes, codes), np.where(same, up_scales, scales)
    return codes.reshape(rows, -1)[:, :cols], scales.reshape(-1), nbits


class QintCodec(TensorCodec):
    name = "qint"

    def encode(self, a: np.ndarray) -> Encoded | None:
        """The smallest exact qint form of ``a`` over the layouts that have one (each checked by decoding)."""
        flat = a.reshape(-1)
        if a.ndim < 2 or not np.isfinite(flat).all():  # vectors: a scale per entry never beats raw
            return None
        found = [f for layout in (("rows", "cols") if a.ndim == 2 else ("rows",)) if (f := self._fit(a, layout))]
        return min(found, key=lambda o: sum(len(c) for c in o[1])) if found else None

    def _fit(self, a: np.ndarray, layout: str) -> Encoded | None:
        x2 = _rows_of(a, layout)
        cols = x2.shape[1]
        # Probe a few rows first (float weights are refused in microseconds): a fit for some block length implies
        # fits for the shorter ones inside it, so the probe goes up until one fails, and the whole tensor is then
        # fitted with the longest block that needs no more bits than the shortest (fewest scales, same codes).
        probes = []
        for block in sorted({cols, *(g for g in QINT_BLOCKS if g < cols)}):
            fit = _qint_fit(x2[:8], block)
            if fit is None:
                break
            probes.append((block, fit[2]))
        fit = None
        for block, nbits in reversed(probes):
            if nbits == probes[0][1]:
                fit = _qint_fit(x2, block)
                if fit is not None:
                    break
        if fit is None:
            return None
        codes2, scales, nbits = fit
        codes = (codes2 if layout == "rows" else codes2.T).reshape(-1)  # back in the tensor's own order
        half = scales.astype(np.float16)
        exact16 = bool(np.array_equal(half.astype(np.float32), scales)) and np.isfinite(half).all()
        sc = half.tobytes() if exact16 else scales.tobytes()
        nz = codes != 0
        nnz = int(nz.sum())
        offset = (1 << (nbits - 1)) - 1
        e = {"enc": self.name, "nbits": nbits, "block": int(block), "layout": layout,
             "scale": "f16" if exact16 else "f32", "nnz": nnz}
        dense = [sc, b"", pack_bits((codes + offset).astype(np.uint32), nbits)]
        masked = [sc, pack_mask(nz), pack_bits((codes[nz] + offset).astype(np.uint32), nbits)]
        chunks = min(dense, masked, key=lambda cs: sum(len(c) for c in cs))
        if not np.array_equal(self.decode(e, chunks, a.shape, a.size).reshape(-1), a.reshape(-1)):
            return None
        return e, chunks

    def decode(self, e: dict, chunks: list[bytes], shape: tuple, n: int) -> np.ndarray:
        nnz = _nnz(e, n)
        nbits, block, layout, scale = int(e["nbits"]), int(e["block"]), e["layout"], e["scale"]
        if not (2 <= nbits <= 8 and len(chunks) == 3 and layout in ("rows", "cols") and scale in ("f16", "f32")
                and n > 0 and (layout == "rows" or len(shape) == 2)):
            raise PackageError("weights blob is corrupted: bad qint tensor description; re-create the package")
        rows = (shape[0] if shape else 1) if layout == "rows" else shape[1]
        cols = n // rows
        if not 1 <= block <= cols:
            raise PackageError("weights blob is corrupted: qint block length does not fit the tensor; re-create the package")
        nb = -(-cols // block)
        sc_bytes, mask, packed = chunks
        ncodes = nnz if mask else n
        # every length is checked before anything the size of the tensor is allocated
        if len(sc_bytes) != rows * nb * (2 if scale == "f16" else 4) or (mask and len(mask) != packed_size(n, 1)):
            raise PackageError("weights blob is corrupted: qint scales or bitmask of the wrong length; re-create the package")
        offset = (1 << (nbits - 1)) - 1
        u = _unpack_codes(packed, ncodes, nbits)
        if u.size and int(u.max()) > 2 * offset:
            raise PackageError("weights blob is corrupted: qint code out of range; re-create the package")
        codes = u.astype(np.int16) - offset
        if mask:
            keep = unpack_mask(mask, n)
            if int(keep.sum()) != nnz or not codes.all():
                raise PackageError("weights blob is corrupted: qint bitmask does not match its codes; re-create the package")
            full = np.zeros(n, np.int16)
            full[keep] = codes
            codes = full
        elif int(np.count_nonzero(codes)) != nnz:
            raise PackageError("weights blob is corrupted: qint nonzero count differs from the codes; re-create the package")
        scales = np.frombuffer(sc_bytes, np.float16 if scale == "f16" else np.float32).astype(np.float32)
        if not np.isfinite(scales).all():
            raise PackageError("weights blob is corrupted: qint scale is not finite; re-create the package")
        per = np.repeat(scales.reshape(rows, nb), block, axis=1)[:, :cols]
        # float32 product, exactly as the quantizer formed the weights: decoding is bit-identical
        x2 = _rows_of(codes.reshape(shape), layout).astype(np.float32) * per
        return np.ascontiguousarray(x2 if layout == "rows" else x2.T).reshape(shape)


# Every encoding by name. encode_tensor tries them in this order and keeps the first of the smallest forms, so
# the order decides ties (and is part of what makes a package byte-identical when re-written).
CODECS: dict[str, TensorCodec] = {
    c.name: c for c in (RawCodec(), SparseCodec(), SharedCodec(), HalfCodec(), QintCodec())
}


def encode_tensor(a: np.ndarray) -> tuple[dict, list[bytes]]:
    """Encode one float32 tensor exactly in its smallest form; returns (entry without name/shape/lengths, chunks)."""
    options = [o for codec in CODECS.values() if (o := codec.encode(a)) is not None]
    return min(options, key=lambda o: sum(len(c) for c in o[1]))  # raw always fits


def decode_tensor(e: dict, chunks: list[bytes]) -> np.ndarray:
    """Decode one entry of a weights blob; a malformed or inconsistent entry raises PackageError."""
    try:
        shape = tuple(int(d) for d in e["shape"])
        n = math.prod(shape)  # Python ints: a hostile shape cannot wrap around
        if n > MAX_ELEMENTS or any(d < 0 for d in shape):
            raise PackageError(f"weights blob declares a tensor of shape {list(shape)}; refusing (at most {MAX_ELEMENTS} elements)")
        codec = CODECS.get(e["enc"])
        if codec is None:
            raise PackageError(f"weights blob uses unknown encoding {e['enc']!r}: upgrade slimship")
        return codec.decode(e, chunks, shape, n)
    except _MALFORMED as err:
        raise PackageError(f"weights blob header is malformed ({type(err).__name__}); re-create the package") from None


def encode_graph(onnx_bytes: bytes) -> tuple[bytes, bytes, dict]:
    """Split an ONNX model into (skeleton graph without the big float weights, weights blob, info)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(onnx_bytes)
    entries, chunks, info = [], [], {"shared": 0, "sparse": 0, "qint": 0, "half": 0, "raw": 0, "bytes": {}}
    for init in model.graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or np.prod(init.dims) < MIN_ENCODE:
            continue
        a = numpy_helper.to_array(init)
        e, cs = encode_tensor(a)
        e.update(name=init.name, shape=list(a.shape), lengths=[len(c) for c in cs])
        entries.append(e)
        chunks.extend(cs)
        info[e["enc"]] = info.get(e["enc"], 0) + 1
        info["bytes"][e["enc"]] = info["bytes"].get(e["enc"], 0) + sum(len(c) for c in cs)
        init.ClearField("raw_data")
        init.ClearField("float_data")
    header = json.dumps({"tensors": entries}, separators=(",", ":")).encode()
    blob = MAGIC + struct.pack("<I", len(header)) + header + b"".join(chunks)
    return model.SerializeToString(), blob, info


_MALFORMED = (KeyError, TypeError, ValueError, OverflowError, IndexError, RecursionError)  # hostile JSON values


def read_blob(blob: bytes) -> list[tuple[dict, list[bytes]]]:
    """The tensor entries of a weights blob, each with its chunks; every length is checked, nothing decoded."""
    if len(blob) < 8 or blob[:4] != MAGIC:
        raise PackageError("weights blob is not in slimship's encoding (bad magic); re-create the package")
    (hlen,) = struct.unpack("<I", blob[4:8])
    if 8 + hlen > len(blob):
        raise PackageError("weights blob is truncated (header runs past its end); re-create the package")
    out = []
    try:
        entries = json.loads(blob[8 : 8 + hlen])["tensors"]
        pos = 8 + hlen
        for e in entries:
            if not isinstance(e, dict) or not isinstance(e.get("name"), str):
                raise TypeError("tensor entry")
            lengths = [int(x) for x in e["lengths"]]
            if any(x < 0 for x in lengths) or pos + sum(lengths) > len(blob):
                raise PackageError("weights blob is truncated; re-create the package")
            cs = []
            for x in lengths:
                cs.append(blob[pos : pos + x])
                pos += x
            out.append((e, cs))
    except _MALFORMED as err:
        raise PackageError(f"weights blob header is malformed ({type(err).__name__}); re-create the package") from None
    if pos != len(blob):
        raise PackageError("weights blob has trailing bytes; re-create the package")
    return out


def decode_graph(skeleton: bytes, blob: bytes) -> bytes:
    """Inverse of :func:`encode_graph`: the full ONNX bytes, every tensor checked while decoding."""
    import onnx

    entries = read_blob(blob)
    try:
        # Sparse encodings decode up to 32 times their size: bound the total before allocating anything.
        total = 4 * sum(math.prod(int(d) for d in e["shape"]) for e, _ in entries)
    except _MALFORMED as err:
        raise PackageError(f"weights blob header is malformed ({type(err).__name__}); re-create the package") from None
    if total > MAX_PACKAGE_RAW_BYTES:
        raise PackageError(f"weights blob declares {total:,} bytes of tensors, over the {MAX_PACKAGE_RAW_BYTES:,}-byte "
                           "limit of a deploy graph; refusing it without decoding (see docs/security.md)")
    tensors = {}
    for e, cs in entries:
        tensors[e["name"]] = decode_tensor(e, cs)
    try:
        model = onnx.load_from_string(skeleton)
    except Exception:
        raise PackageError("the package's graph is not valid ONNX; re-create the package") from None
    for init in model.graph.initializer:
        a = tensors.pop(init.name, None)
        if a is not None:
            if list(a.shape) != list(init.dims):
                raise PackageError(f"weights blob tensor {init.name} does not fit the graph; re-create the package")
            init.raw_data = a.tobytes()
    if tensors:
        raise PackageError(f"weights blob has tensors the graph does not use ({next(iter(tensors))}); re-create the package")
    return model.SerializeToString()
