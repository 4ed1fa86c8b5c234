"""ONNX graph helpers: loading, initializer stripping and shape queries, base/task initializer matching."""

from __future__ import annotations

from slimship.package.delta.config import _FLOAT, _MAX_PAYLOAD, _NUMERIC_TYPES, _bad

_GENERATED = "onnx::"  # prefix of initializer names the torch exporter makes up (numbered in export order)


def _load_model(data: bytes, what: str):
    import onnx

    try:
        model = onnx.load_from_string(bytes(data))
    except Exception as e:
        raise ValueError(f"{what} is not an ONNX model ({type(e).__name__})") from None
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            raise ValueError(f"{what} keeps initializer {t.name!r} in external data: embed the weights")
    return model


def _plain_numeric(t) -> bool:
    return t.data_type in _NUMERIC_TYPES and t.data_location == 0


def _strip(t) -> None:
    """Remove a tensor's data, keep its name, type and shape."""
    t.ClearField("raw_data")
    for f in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data"):
        t.ClearField(f)


def _is_stripped(t) -> bool:
    return not (t.raw_data or t.float_data or t.int32_data or t.int64_data or t.double_data or t.uint64_data
                or t.string_data)


def _dims_numel(dims) -> int:
    n = 1
    for d in dims:
        if d < 0:
            raise _bad("a tensor has a negative dimension")
        n *= int(d)
        if n > _MAX_PAYLOAD:
            raise _bad("a tensor is larger than any payload could fill")
    return n


def _numel(model, name: str) -> int:
    for t in model.graph.initializer:
        if t.name == name:
            return _dims_numel(t.dims)
    raise KeyError(name)


def _rows(model, name: str) -> int:
    """Output channels (axis 0) of a tensor with 2+ dimensions, else 0 (one scale for the tensor)."""
    for t in model.graph.initializer:
        if t.name == name:
            return int(t.dims[0]) if len(t.dims) >= 2 and t.dims[0] > 1 else 0
    return 0


def _is_vector(model, name: str) -> bool:
    for t in model.graph.initializer:
        if t.name == name:
            return len([d for d in t.dims if d != 1]) <= 1
    return False


def _match_initializers(base, task) -> dict[str, str]:
    """task initializer name -> base initializer name, for fp32 tensors of equal shape.

    By name first; names the exporter generated (``onnx::MatMul_123``) shift between exports (a task graph with
    a head numbers them differently from its base without one), so those, and any tensor left over, are
    matched by where they are used (see _use_keys) when that place is unique in both graphs; a generated
    name still unmatched then falls back to the same name."""
    bt = {t.name: t for t in base.graph.initializer if t.data_type == _FLOAT and _plain_numeric(t)}
    out: dict[str, str] = {}
    left = []
    for t in task.graph.initializer:
        if t.data_type != _FLOAT or not _plain_numeric(t):
            continue
        b = bt.get(t.name)
        if b is not None and list(b.dims) == list(t.dims) and not t.name.startswith(_GENERATED):
            out[t.name] = t.name
        else:
            left.append(t)
    if left:
        used = set(out.values())
        bkeys = _use_keys(base, {n for n in bt if n not in used})
        tkeys = _use_keys(task, {t.name for t in left})
        by_key: dict[tuple, list[str]] = {}
        for n, key in bkeys.items():
            by_key.setdefault(key, []).append(n)
        tcount: dict[tuple, int] = {}
        for key in tkeys.values():
            tcount[key] = tcount.get(key, 0) + 1
        for t in left:
            key = tkeys.get(t.name)
            cands = by_key.get(key, []) if key else []
            if len(cands) == 1 and tcount[key] == 1 and list(bt[cands[0]].dims) == list(t.dims):
                out[t.name] = cands[0]
        used = set(out.values())
        for t in left:
            b = bt.get(t.name)
            if t.name not in out and t.name not in used and b is not None and list(b.dims) == list(t.dims):
                out[t.name] = t.name
    return out


def _use_keys(model, names: set[str]) -> dict[str, tuple]:
    """Where each named tensor is used: sorted (op type, ordinal among nodes of that op type, input slot),
    looking through Identity nodes (the exporter inserts them where it deduplicated equal tensors, so their
    number differs between exports)."""
    alias: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type == "Identity" and len(node.input) == 1 and len(node.output) == 1:
            alias[node.output[0]] = node.input[0]

    def root(name: str) -> str:
        for _ in range(64):  # Identity chains are short; the bound keeps a cyclic graph from looping
            if name not in alias:
                break
            name = alias[name]
        return name

    keys: dict[str, list] = {n: [] for n in names}
    ordinal: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type == "Identity":
            continue
        i = ordinal[node.op_type] = ordinal.get(node.op_type, -1) + 1
        for slot, inp in enumerate(node.input):
            r = root(inp)
            if r in keys:
                keys[r].append((node.op_type, i, slot))
    return {n: tuple(sorted(v)) for n, v in keys.items() if v}
