"""Quantization-aware fine-tuning of a finished int8 QDQ graph, in that graph itself.

Post-training int8 fixes every scale from calibration data and rounds each weight to its nearest code; what is
left of the accuracy drop comes from those roundings adding up. Here the int8 deploy graph that post-training
quantization produced is turned into a PyTorch module that computes what ONNX Runtime computes: every
``QuantizeLinear → DequantizeLinear`` pair is a fake quantizer with the graph's own (fixed) scale and zero
point, every int8 weight is a float parameter seen through its own per-channel grid, every int32 bias a float
parameter. A short distilled fine-tune moves the weights (straight-through rounding; an activation outside its
calibrated range gets no gradient), and the new integer codes and biases are written back into the same graph.

So nothing is re-calibrated and no other graph is exported: the deploy artifact keeps its structure, scales
and zero points, only its int8 weight codes and int32 biases change. Weight codes stay inside the range the
quantizer gave them (7 bits with ``reduce_range``), so kernels that saturate on 8-bit codes stay safe, and a
zero code (a pruned weight) stays zero.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from slimship.core.errors import SlimshipError

_OPS = {"QuantizeLinear", "DequantizeLinear", "Conv", "Gemm", "MatMul", "Add", "Mul", "Relu", "Clip", "Sigmoid",
        "HardSigmoid", "HardSwish", "GlobalAveragePool", "Flatten", "Reshape", "Identity", "Concat", "Pad",
        "MaxPool", "AveragePool", "ReduceMean"}


def _ste_round(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()



def _nonzero(s):
    """``s`` with zeros replaced by 1, to divide by: a channel whose weights are all zero (pruned) has scale 0,
    and 0 / 0 made NaN codes (cast to garbage int8) and NaN outputs."""
    return torch.where(s == 0, torch.ones_like(s), s)

class QDQGraphModule(nn.Module):
    """A PyTorch view of an int8 QDQ ONNX graph: same ops, same scales, trainable weights and biases."""

    def __init__(self, onnx_bytes: bytes):
        super().__init__()
        import onnx
        from onnx import numpy_helper

        self.model = onnx.load_from_string(onnx_bytes)
        g = self.model.graph
        bad = sorted({n.op_type for n in g.node} - _OPS)
        if bad:
            raise SlimshipError(f"int8 qat: the graph uses {', '.join(bad)}, which QAT does not simulate; "
                                "leave out `qat` for this model")
        self.inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
        self.input_name = g.input[0].name
        self.output_name = g.output[0].name
        self.nodes = list(g.node)
        self.weights = nn.ParameterDict()  # one per int8/int32 initializer behind a DequantizeLinear
        self._wq: dict[str, tuple[str, torch.Tensor, int, int, str]] = {}  # dq output -> (param, scale, lo, hi, kind)
        self.consts = nn.Module()  # float initializers as buffers, so they follow the module to a device
        self._const_ix: dict[str, str] = {}
        for i, node in enumerate(self.nodes):
            if node.op_type == "DequantizeLinear" and node.input[0] in self.inits:
                q = self.inits[node.input[0]]
                scale = self.inits[node.input[1]].astype(np.float32)
                zp = self.inits[node.input[2]] if len(node.input) > 2 and node.input[2] else np.zeros_like(scale, q.dtype)
                if np.any(zp != 0) or q.dtype not in (np.int8, np.int32):
                    continue  # asymmetric / unusual constants stay fixed
                axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
                axis = axis if 0 <= axis < q.ndim else 0
                shape = [1] * q.ndim
                if scale.size > 1:
                    shape[axis] = scale.size
                s = torch.from_numpy(scale.reshape(shape))
                pname = f"w{i}"
                self.weights[pname] = nn.Parameter(torch.from_numpy(q.astype(np.float32)) * s)
                if q.dtype == np.int8:  # symmetric codes: [-64, 64] with reduce_range, else [-127, 127]
                    hi = 64 if int(np.abs(q.astype(np.int32)).max()) <= 64 else 127
                    lo, kind = -hi, "int8"
                else:
                    lo, hi, kind = -(2**31), 2**31 - 1, "int32"
                self.register_buffer(f"s_{pname}", s)
                # a zero code stays zero (pruned weights survive QAT: sparsity is never undone)
                self.register_buffer(f"nz_{pname}", torch.from_numpy(q != 0) if kind == "int8" else None)
                self._wq[node.output[0]] = (pname, s, lo, hi, kind)
        self._fused = self._fusable_pairs()
        # a tensor is dropped from the forward pass's table after its last reader (autograd keeps what it needs)
        self._last_use: dict[int, list[str]] = {}
        last: dict[str, int] = {}
        for i, node in enumerate(self.nodes):
            for name in node.input:
                last[name] = i
        for name, i in last.items():
            if name != self.output_name:
                self._last_use.setdefault(i, []).append(name)
        for name, v in self.inits.items():
            if v.dtype.kind == "f":
                self._const_ix[name] = f"c{len(self._const_ix)}"
                self.consts.register_buffer(self._const_ix[name], torch.from_numpy(v.astype(np.float32)),
                                            persistent=False)

    def _fusable_pairs(self) -> dict[str, tuple[float, int, int, int]]:
        """Activation ``QuantizeLinear`` outputs read only by ``DequantizeLinear`` nodes with the same per-tensor
        scale and zero point: ``{q output: (scale, zero point, lo, hi)}``. Such a pair runs as one fused fake
        quantizer (``torch.fake_quantize_per_tensor_affine``), which keeps a 1-byte mask for the backward pass
        instead of several float copies of the activation (most of QAT's memory)."""
        readers: dict[str, list] = {}
        for node in self.nodes:
            for name in node.input:
                readers.setdefault(name, []).append(node)
        fused = {}
        for node in self.nodes:
            if node.op_type != "QuantizeLinear" or node.input[0] in self.inits:
                continue
            s_name = node.input[1]
            z_name = node.input[2] if len(node.input) > 2 else ""
            scale, zp = self.inits.get(s_name), self.inits.get(z_name) if z_name else None
            if scale is None or scale.size != 1 or (z_name and zp is None) or (zp is not None and zp.size != 1):
                continue
            lo, hi = (0, 255) if zp is None or zp.dtype == np.uint8 else (-128, 127)
            outs = readers.get(node.output[0], [])
            same = all(r.op_type == "DequantizeLinear" and r.input[0] == node.output[0] and r.input[1] == s_name
                       and (r.input[2] if len(r.input) > 2 else "") == z_name for r in outs)
            if outs and same and node.output[0] != self.output_name and float(scale) > 0:
                fused[node.output[0]] = (float(scale), int(zp) if zp is not None else 0, lo, hi)
        return fused

    # ---- simulation ---------------------------------------------------------------------------------------
    def _const(self, name: str) -> torch.Tensor | None:
        if not name:
            return None
        if name in self._const_ix:
            return getattr(self.consts, self._const_ix[name])
        if name in self.inits:
            return torch.from_numpy(np.asarray(self.inits[name]))
        return None

    def _weight(self, out: str) -> torch.Tensor:
        pname, s, lo, hi, kind = self._wq[out]
        w = self.weights[pname]
        s = getattr(self, f"s_{pname}")
        if kind == "int32":
            return w  # bias codes are rounded on write-back only (their steps are far below the weights')
        return torch.clamp(_ste_round(w / _nonzero(s)), lo, hi) * s * getattr(self, f"nz_{pname}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env: dict[str, torch.Tensor] = {self.input_name: x}

        def get(name: str) -> torch.Tensor | None:
            if not name:
                return None
            if name in env:
                return env[name]
            return self._const(name)

        for i, node in enumerate(self.nodes):
            op, ins, out = node.op_type, node.input, node.output[0]
            attrs = {a.name: a for a in node.attribute}
            if op == "DequantizeLinear" and out in self._wq:
                env[out] = self._weight(out)
            elif op == "QuantizeLinear" and out in self._fused:
                s, zp, lo, hi = self._fused[out]  # the pair's dequantized value (its DequantizeLinear passes it on)
                env[out] = torch.fake_quantize_per_tensor_affine(get(ins[0]), s, zp, lo, hi)
            elif op == "DequantizeLinear" and ins[0] in self._fused:
                env[out] = env[ins[0]]
            elif op == "QuantizeLinear":
                s, zp = get(ins[1]), self.inits.get(ins[2]) if len(ins) > 2 else None
                zp_v = float(zp) if zp is not None else 0.0
                lo, hi = (0, 255) if zp is None or zp.dtype == np.uint8 else (-128, 127)
                env[out] = torch.clamp(_ste_round(get(ins[0]) / s + zp_v), lo, hi)
            elif op == "DequantizeLinear":
                s = get(ins[1])
                zp = self.inits.get(ins[2]) if len(ins) > 2 and ins[2] else None
                src = get(ins[0])
                if src is None:
                    raise SlimshipError(f"int8 qat: cannot resolve {ins[0]!r}")
                env[out] = (src - (float(zp) if zp is not None else 0.0)) * s
            elif op == "Conv":
                xin, w, b = get(ins[0]), get(ins[1]), get(ins[2]) if len(ins) > 2 else None
                pads = list(attrs["pads"].ints) if "pads" in attrs else [0, 0, 0, 0]
                if pads[:2] != pads[2:]:
                    xin = F.pad(xin, (pads[1], pads[3], pads[0], pads[2]))
                    pad = 0
                else:
                    pad = tuple(pads[:2])
                env[out] = F.conv2d(xin, w, b, tuple(attrs["strides"].ints) if "strides" in attrs else 1, pad,
                                    tuple(attrs["dilations"].ints) if "dilations" in attrs else 1,
                                    attrs["group"].i if "group" in attrs else 1)
            elif op == "Gemm":
                a, b = get(ins[0]), get(ins[1])
                if "transA" in attrs and attrs["transA"].i:
                    a = a.t()
                if "transB" in attrs and attrs["transB"].i:
                    b = b.t()
                y = (attrs["alpha"].f if "alpha" in attrs else 1.0) * a @ b
                c = get(ins[2]) if len(ins) > 2 else None
                env[out] = y if c is None else y + (attrs["beta"].f if "beta" in attrs else 1.0) * c
            elif op == "MatMul":
                env[out] = get(ins[0]) @ get(ins[1])
            elif op == "Add":
                env[out] = get(ins[0]) + get(ins[1])
            elif op == "Mul":
                env[out] = get(ins[0]) * get(ins[1])
            elif op == "Relu":
                env[out] = F.relu(get(ins[0]))
            elif op == "Clip":
                # bounds read from the initializers (host numbers): no device round trip on every forward
                lo, hi = (float(self.inits[n]) if n in self.inits else (float(get(n)) if get(n) is not None else None)
                          for n in (ins[1] if len(ins) > 1 else "", ins[2] if len(ins) > 2 else ""))
                env[out] = torch.clamp(get(ins[0]), lo, hi)
            elif op == "Sigmoid":
                env[out] = torch.sigmoid(get(ins[0]))
            elif op == "HardSigmoid":
                alpha = attrs["alpha"].f if "alpha" in attrs else 0.2
                beta = attrs["beta"].f if "beta" in attrs else 0.5
                env[out] = torch.clamp(alpha * get(ins[0]) + beta, 0, 1)
            elif op == "HardSwish":
                env[out] = F.hardswish(get(ins[0]))
            elif op == "GlobalAveragePool":
                env[out] = get(ins[0]).mean((2, 3), keepdim=True)
            elif op == "ReduceMean":
                axes = list(attrs["axes"].ints) if "axes" in attrs else (
                    [int(v) for v in get(ins[1]).tolist()] if len(ins) > 1 and ins[1] else None)
                keep = bool(attrs["keepdims"].i) if "keepdims" in attrs else True
                src = get(ins[0])
                env[out] = src.mean(tuple(axes) if axes else tuple(range(src.ndim)), keepdim=keep)
            elif op == "Flatten":
                axis = attrs["axis"].i if "axis" in attrs else 1
                env[out] = torch.flatten(get(ins[0]), axis)
            elif op == "Reshape":
                shape = [int(v) for v in get(ins[1]).tolist()]
                src = get(ins[0])
                shape = [src.shape[i] if v == 0 else v for i, v in enumerate(shape)]
                env[out] = src.reshape(shape)
            elif op == "Identity":
                env[out] = get(ins[0])
            elif op == "Concat":
                env[out] = torch.cat([get(i) for i in ins], attrs["axis"].i)
            elif op == "Pad":
                p = [int(v) for v in get(ins[1]).tolist()]
                n = len(p) // 2
                torch_pad = [v for d in range(n - 1, -1, -1) for v in (p[d], p[d + n])]
                env[out] = F.pad(get(ins[0]), torch_pad)
            elif op in ("MaxPool", "AveragePool"):
                k = tuple(attrs["kernel_shape"].ints)
                st = tuple(attrs["strides"].ints) if "strides" in attrs else 1
                pads = list(attrs["pads"].ints) if "pads" in attrs else [0, 0, 0, 0]
                xin = F.pad(get(ins[0]), (pads[1], pads[3], pads[0], pads[2]))
                env[out] = F.max_pool2d(xin, k, st) if op == "MaxPool" else F.avg_pool2d(xin, k, st)
            for name in self._last_use.get(i, ()):
                env.pop(name, None)
        return env[self.output_name]

    # ---- write-back ---------------------------------------------------------------------------------------
    def to_onnx(self) -> bytes:
        """The original graph with the trained weights and biases as its integer codes."""
        from onnx import numpy_helper

        new = {}
        for out, (pname, s, lo, hi, kind) in self._wq.items():
            # float64: int32's top code 2**31 - 1 rounds up to 2**31 in float32, and a bias saturating there was
            # cast to int32's most negative value (a sign flip)
            w = self.weights[pname].detach().double()
            s = getattr(self, f"s_{pname}").double()
            codes = torch.clamp(torch.round(w / _nonzero(s)), lo, hi) * (s != 0)  # a zero scale: an all-zero channel
            if kind == "int8":
                codes = codes * getattr(self, f"nz_{pname}")
            new[pname] = codes.numpy().astype(np.int8 if kind == "int8" else np.int32)
        by_init = {}
        for i, node in enumerate(self.nodes):
            if f"w{i}" in new:
                by_init[node.input[0]] = new[f"w{i}"]
        for k, init in enumerate(self.model.graph.initializer):
            if init.name in by_init:
                self.model.graph.initializer[k].CopyFrom(numpy_helper.from_array(by_init[init.name], init.name))
        return self.model.SerializeToString()
