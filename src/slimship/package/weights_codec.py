"""Compressed weight encoding inside a package: sparse bitmasks, bit-packed cluster indices, codebooks.

A graph's float initializers are stored in the smallest exact form that fits them:

* ``shared``: at most 256 distinct nonzero values (k-means weight sharing) → a codebook of the values, a
  bitmask of nonzero positions (if any are zero) and ``ceil(log2 k)``-bit indices of the nonzeros, packed.
* ``sparse``: many zeros but unshared values → bitmask + the nonzero float32 values.
* ``raw``: everything else, float32 as is.

The container then entropy-codes the whole blob (lzma/zlib, whichever is smaller; see package-format.md).
Decoding is exact: the decoded tensors are bit-identical to the encoded ones, and the ONNX graph they are
put back into is the one measured. Every declared size is checked against the blob before anything is
allocated, so a hostile blob is refused with PackageError rather than exhausting memory.
"""

from __future__ import annotations

import json
import math
import struct

import numpy as np

from slimship.errors import PackageError

MAGIC = b"SLW1"
MAX_ELEMENTS = 1 << 31  # per tensor
MIN_ENCODE = 256  # smaller tensors stay inside the graph


def _pack_bits(values: np.ndarray, nbits: int) -> bytes:
    """Pack unsigned ints < 2**nbits, little-endian bit order, into bytes."""
    if values.size == 0:
        return b""
    bits = ((values[:, None] >> np.arange(nbits, dtype=values.dtype)) & 1).astype(np.uint8)
    return np.packbits(bits.reshape(-1), bitorder="little").tobytes()


def _unpack_bits(data: bytes, count: int, nbits: int) -> np.ndarray:
    need = math.ceil(count * nbits / 8)
    if len(data) != need:
        raise PackageError(f"weights blob is corrupted: {len(data)} index bytes where {need} were declared; re-create the package")
    bits = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")[: count * nbits].reshape(count, nbits)
    return (bits.astype(np.uint32) << np.arange(nbits, dtype=np.uint32)).sum(1)


def encode_tensor(a: np.ndarray) -> tuple[dict, list[bytes]]:
    """Encode one float32 tensor exactly; returns (entry without offsets, chunks)."""
    flat = a.reshape(-1)
    nz = flat != 0
    nnz = int(nz.sum())
    mask = np.packbits(nz, bitorder="little").tobytes() if nnz < flat.size else b""
    options = [({"enc": "raw"}, [flat.astype(np.float32).tobytes()])]
    if mask:
        options.append(({"enc": "sparse", "nnz": nnz}, [mask, flat[nz].astype(np.float32).tobytes()]))
    uniq, inv = np.unique(flat[nz], return_inverse=True)
    if 0 < len(uniq) <= 256:
        nbits = max(1, math.ceil(math.log2(len(uniq))))
        chunks = [uniq.astype(np.float32).tobytes(), mask, _pack_bits(inv.astype(np.uint32), nbits)]
        options.append(({"enc": "shared", "k": int(len(uniq)), "nbits": nbits, "nnz": nnz}, chunks))
    return min(options, key=lambda o: sum(len(c) for c in o[1]))  # the smallest exact form


def decode_tensor(e: dict, chunks: list[bytes]) -> np.ndarray:
    shape = tuple(int(d) for d in e["shape"])
    n = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if n > MAX_ELEMENTS:
        raise PackageError(f"weights blob declares a tensor of {n} elements; refusing (limit {MAX_ELEMENTS})")
    enc = e["enc"]

    def mask_of(chunk: bytes, nnz: int) -> np.ndarray:
        if not chunk:
            if nnz != n:
                raise PackageError("weights blob is corrupted: dense tensor with a nonzero count that differs")
            return np.ones(n, bool)
        if len(chunk) != math.ceil(n / 8):
            raise PackageError("weights blob is corrupted: bitmask length does not match the tensor shape")
        m = np.unpackbits(np.frombuffer(chunk, np.uint8), bitorder="little")[:n].astype(bool)
        if int(m.sum()) != nnz:
            raise PackageError("weights blob is corrupted: bitmask does not match the declared nonzero count")
        return m

    if enc == "raw":
        if len(chunks) != 1 or len(chunks[0]) != 4 * n:
            raise PackageError("weights blob is corrupted: raw tensor of the wrong length")
        return np.frombuffer(chunks[0], np.float32).reshape(shape).copy()
    nnz = int(e["nnz"])
    if not 0 <= nnz <= n:
        raise PackageError("weights blob is corrupted: impossible nonzero count")
    out = np.zeros(n, np.float32)
    if enc == "sparse":
        if len(chunks) != 2 or len(chunks[1]) != 4 * nnz:
            raise PackageError("weights blob is corrupted: sparse values of the wrong length")
        out[mask_of(chunks[0], nnz)] = np.frombuffer(chunks[1], np.float32)
        return out.reshape(shape)
    if enc == "shared":
        k, nbits = int(e["k"]), int(e["nbits"])
        if not (1 <= k <= 256 and 1 <= nbits <= 8 and len(chunks) == 3 and len(chunks[0]) == 4 * k):
            raise PackageError("weights blob is corrupted: bad codebook")
        codebook = np.frombuffer(chunks[0], np.float32)
        idx = _unpack_bits(chunks[2], nnz, nbits)
        if idx.size and int(idx.max()) >= k:
            raise PackageError("weights blob is corrupted: cluster index out of range")
        out[mask_of(chunks[1], nnz)] = codebook[idx]
        return out.reshape(shape)
    raise PackageError(f"weights blob uses unknown encoding {enc!r}: upgrade slimship")


def encode_graph(onnx_bytes: bytes) -> tuple[bytes, bytes, dict]:
    """Split an ONNX model into (skeleton graph without the big float weights, weights blob, info)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(onnx_bytes)
    entries, chunks, info = [], [], {"shared": 0, "sparse": 0, "raw": 0, "bytes": {}}
    for init in model.graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or np.prod(init.dims) < MIN_ENCODE:
            continue
        a = numpy_helper.to_array(init)
        e, cs = encode_tensor(a)
        e.update(name=init.name, shape=list(a.shape), lengths=[len(c) for c in cs])
        entries.append(e)
        chunks.extend(cs)
        info[e["enc"]] += 1
        info["bytes"][e["enc"]] = info["bytes"].get(e["enc"], 0) + sum(len(c) for c in cs)
        init.ClearField("raw_data")
        init.ClearField("float_data")
    header = json.dumps({"tensors": entries}, separators=(",", ":")).encode()
    blob = MAGIC + struct.pack("<I", len(header)) + header + b"".join(chunks)
    return model.SerializeToString(), blob, info


def decode_graph(skeleton: bytes, blob: bytes) -> bytes:
    """Inverse of :func:`encode_graph`: the full ONNX bytes, every tensor checked while decoding."""
    import onnx

    if len(blob) < 8 or blob[:4] != MAGIC:
        raise PackageError("weights blob is not in slimship's encoding (bad magic); re-create the package")
    (hlen,) = struct.unpack("<I", blob[4:8])
    if 8 + hlen > len(blob):
        raise PackageError("weights blob is truncated (header runs past its end); re-create the package")
    try:
        entries = json.loads(blob[8 : 8 + hlen])["tensors"]
        pos = 8 + hlen
        tensors = {}
        for e in entries:
            lengths = [int(x) for x in e["lengths"]]
            if any(x < 0 for x in lengths) or pos + sum(lengths) > len(blob):
                raise PackageError("weights blob is truncated; re-create the package")
            cs = []
            for x in lengths:
                cs.append(blob[pos : pos + x])
                pos += x
            tensors[str(e["name"])] = decode_tensor(e, cs)
    except (KeyError, TypeError, ValueError) as err:
        raise PackageError(f"weights blob header is malformed ({type(err).__name__}); re-create the package") from None
    if pos != len(blob):
        raise PackageError("weights blob has trailing bytes; re-create the package")
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
