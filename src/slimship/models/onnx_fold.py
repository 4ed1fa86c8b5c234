"""Fold constant zero ``Pad`` nodes into the ``Conv`` that consumes them.

A TF-"same" conv whose padding was made static (static_pad.py) exports as ``Pad → Conv``, with the pad amounts
computed by a chain of constant nodes. ONNX Runtime does not fuse that pair: on the CPU each Pad breaks the
blocked (NCHWc) layout of the convs around it (a reorder out and back in), and in an int8 QDQ graph each Pad
sits between a Dequantize and a Quantize. ``Conv`` takes asymmetric pads itself, so the graph is rewritten to
``Conv(pads=...)`` and the constant chain removed. The computation is the same (zero padding either way).
"""

from __future__ import annotations

import numpy as np


def _constant_value(name: str, producers: dict, inits: dict, opsets=()) -> np.ndarray | None:
    """The value of tensor ``name`` if it is computed from constants only, else None."""
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    if name in inits:
        return numpy_helper.to_array(inits[name])
    nodes, todo, seen = [], [name], set()
    while todo:
        t = todo.pop()
        if t in seen or t == "":
            continue
        seen.add(t)
        if t in inits:
            continue
        n = producers.get(t)
        if n is None:  # a graph input: not constant
            return None
        nodes.append(n)
        todo.extend(n.input)
    ids = {id(n) for n in nodes}
    order = list({id(n): n for n in producers.values() if id(n) in ids}.values())  # graph order, once each
    used_inits = [inits[t] for t in seen if t in inits]
    g = helper.make_graph(order, "c", [], [helper.make_tensor_value_info(name, 0, None)], initializer=used_inits)
    return np.asarray(ReferenceEvaluator(helper.make_model(g, opset_imports=list(opsets))).run(None, {})[0])


def fold_pads_into_convs(data: bytes) -> bytes:
    """Return ONNX bytes with every constant zero 2-D ``Pad`` feeding only a ``Conv`` merged into it."""
    import onnx
    from onnx import helper

    model = onnx.load_from_string(data)
    g = model.graph
    producers = {o: n for n in g.node for o in n.output}
    inits = {i.name: i for i in g.initializer}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    graph_outputs = {o.name for o in g.output}
    dropped = set()
    opsets = model.opset_import  # constants are evaluated at the graph's own opset
    for pad in [n for n in g.node if n.op_type == "Pad"]:
        mode = next((a.s.decode() for a in pad.attribute if a.name == "mode"), "constant")
        users = consumers.get(pad.output[0], [])
        if mode != "constant" or len(users) != 1 or users[0].op_type != "Conv" or pad.output[0] in graph_outputs:
            continue
        if len(pad.input) > 3 and pad.input[3]:  # explicit axes: not what the exporter writes; leave it
            continue
        pads = _constant_value(pad.input[1], producers, inits, opsets) if len(pad.input) > 1 else None
        value = (_constant_value(pad.input[2], producers, inits, opsets) if len(pad.input) > 2 and pad.input[2]
                 else np.zeros(1))
        if pads is None or value is None or np.any(value != 0) or pads.size != 8:
            continue
        pads = [int(p) for p in pads.reshape(-1)]
        if pads[0] or pads[1] or pads[4] or pads[5] or min(pads) < 0:  # batch/channel padding, or cropping
            continue
        conv = users[0]
        attrs = {a.name: a for a in conv.attribute}
        if "auto_pad" in attrs and attrs["auto_pad"].s not in (b"", b"NOTSET"):
            continue
        old = list(attrs["pads"].ints) if "pads" in attrs else [0, 0, 0, 0]
        new = [old[0] + pads[2], old[1] + pads[3], old[2] + pads[6], old[3] + pads[7]]
        if "pads" in attrs:
            conv.attribute.remove(attrs["pads"])
        conv.attribute.append(helper.make_attribute("pads", new))
        conv.input[0] = pad.input[0]
        dropped.add(id(pad))
    if not dropped:
        return data
    keep = [n for n in g.node if id(n) not in dropped]
    # remove nodes nothing reads any more (the constant chains that computed the pad amounts)
    live = set(graph_outputs)
    alive = []
    for n in reversed(keep):
        if any(o in live for o in n.output):
            alive.append(n)
            live.update(n.input)
    del g.node[:]
    g.node.extend(reversed(alive))
    unused = [i for i in g.initializer if i.name not in live]
    for i in unused:
        g.initializer.remove(i)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def affine_batchnorms(data: bytes, half: bool = True) -> bytes:
    """Rewrite every inference ``BatchNormalization`` as the per-channel affine it computes.

    ``gamma * (x - mean) / sqrt(var + eps) + beta`` becomes ``a * x + b`` held in the same node (mean 0, and a
    variance for which ``var + eps`` is exactly 1 in float32), so a package stores two numbers per channel
    instead of four, the constant ones costing nothing after compression. With ``half`` the affine is rounded
    to float16 (stored as such, see weights_codec ``half``): a relative change of at most 2^-11 per channel.
    The graph returned is what gets measured, so its accuracy is the accuracy reported. Used for compressed
    packages, whose BatchNorms stay unfolded so shared and sparse weights stay shared and sparse.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(data)
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    # The exporter stores equal tensors once and feeds the other names through Identity nodes (a BatchNorm
    # bias still at zero can share its tensor with a conv bias). Give each name its own initializer again.
    for n in [n for n in g.node if n.op_type == "Identity" and n.input[0] in inits]:
        copy = onnx.TensorProto()
        copy.CopyFrom(inits[n.input[0]])
        copy.name = n.output[0]
        g.initializer.append(copy)
        inits[copy.name] = g.initializer[-1]
        g.node.remove(n)
    users: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            users[i] = users.get(i, 0) + 1
    changed = False
    for node in model.graph.node:
        if node.op_type != "BatchNormalization" or len(node.output) != 1:
            continue
        names = list(node.input[1:5])
        if len(names) != 4 or any(n not in inits or users.get(n, 0) != 1 for n in names):
            continue
        gamma, beta, mean, var = (numpy_helper.to_array(inits[n]).astype(np.float64) for n in names)
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        a = gamma / np.sqrt(var + np.float32(eps))
        b = beta - mean * a
        dt = np.float16 if half else np.float32
        a, b = a.astype(dt).astype(np.float32), b.astype(dt).astype(np.float32)
        one = np.float32(1.0) - np.float32(eps)
        while np.float32(one + np.float32(eps)) != np.float32(1.0):  # the float32 value with var + eps == 1
            one = np.nextafter(one, np.float32(2.0) if one + np.float32(eps) < 1 else np.float32(0.0))
        new = (a, b, np.zeros_like(a), np.full_like(a, one))
        for n, v in zip(names, new):
            inits[n].CopyFrom(numpy_helper.from_array(v.astype(np.float32), n))
        changed = True
    return model.SerializeToString() if changed else data
