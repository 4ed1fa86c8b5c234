"""int8 QAT: the int8 graph simulated in PyTorch, fine-tuned, and written back with only its codes changed."""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from slimship.compress import METHODS, ModelState
from slimship.compress.int8 import Int8Config
from slimship.compress.int8.quantize import quantize_int8
from slimship.compress.int8.qat import QDQGraphModule
from slimship.core.runtime import ort_session
from slimship.models.export import export_onnx
from tests.compress.test_sparsity_share import _ctx_and_model


def _int8_graph(model, x) -> bytes:
    cfg = Int8Config(calibration=["minmax"], calibration_images=32)
    return quantize_int8(export_onnx(model, 32), x.numpy(), lambda g: 0.5, cfg, log=lambda s: None).onnx


def _inits(g: bytes) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in onnx.load_from_string(g).graph.initializer}


def test_the_simulation_computes_what_onnx_runtime_computes():
    _, m = _ctx_and_model()
    x = torch.randn(32, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    q = _int8_graph(m.eval(), x)
    module = QDQGraphModule(q)
    assert len(module.weights) > 10
    ort = ort_session(q)(x.numpy())
    with torch.no_grad():
        sim = module(x).numpy()
        fp = m(x).numpy()
    # far closer to the int8 graph than the float model is: the same roundings, up to ORT's requantization
    assert np.abs(sim - ort).max() < 0.75 * np.abs(fp - ort).max()
    assert module.to_onnx() == q  # untrained: written back bit for bit


def test_int8_qat_changes_only_weight_codes_and_biases():
    ctx, m = _ctx_and_model()
    cfg = Int8Config(calibration=["minmax"], calibration_images=32,
                     qat={"epochs": 1, "seconds": None, "lr": 1e-3, "kd_alpha": 0.7})
    st = METHODS.get("int8").handler(ModelState(model=m), cfg, ctx)
    qat = st.notes["int8"]["qat"]
    assert set(qat) == {"val_accuracy", "ptq_val_accuracy", "kept"}
    assert qat["kept"] == (qat["val_accuracy"] > qat["ptq_val_accuracy"])
    ptq = METHODS.get("int8").handler(ModelState(model=m), cfg.model_copy(update={"qat": None}), ctx).onnx
    a, b = onnx.load_from_string(ptq).graph, onnx.load_from_string(st.onnx).graph
    assert [n.op_type for n in a.node] == [n.op_type for n in b.node]
    pa, pb = _inits(ptq), _inits(st.onnx)
    assert all(np.array_equal(pa[k], pb[k]) for k in pa if pa[k].dtype.kind == "f")  # same scales
    # direct check of the write-back: train the graph module a little and look at what changed
    module = QDQGraphModule(st.onnx)
    before = _inits(st.onnx)
    with torch.no_grad():
        for p in module.weights.values():
            p.add_(0.05 * p.abs().max() * torch.randn_like(p))
    after = _inits(module.to_onnx())
    changed = {k for k in before if not np.array_equal(before[k], after[k])}
    assert changed and all(before[k].dtype in (np.int8, np.int32) for k in changed)  # scales/zero points untouched
    zeros = 0
    for k in changed:
        if before[k].dtype == np.int8:
            assert np.abs(after[k].astype(int)).max() <= max(64, np.abs(before[k].astype(int)).max())  # code range kept
            assert not after[k][before[k] == 0].any()  # zero codes (pruned weights) stay zero
            zeros += int((before[k] == 0).sum())
    assert zeros > 0


def test_an_all_zero_channel_stays_zero_not_nan():
    """A pruned channel's weights are all zero and ONNX Runtime gives it scale 0; 0 / 0 made NaN outputs in the
    simulation and NaN codes (cast to garbage int8) in the written graph."""
    _, m = _ctx_and_model()
    x = torch.randn(32, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    module = QDQGraphModule(_int8_graph(m.eval(), x))
    name = next(n for n, w in module.weights.items() if w.dim() == 4 and getattr(module, f"s_{n}").numel() > 1)
    s = getattr(module, f"s_{name}")
    with torch.no_grad():
        s.view(-1)[0] = 0.0  # the first output channel of a conv: scale 0, as for an all-zero channel
        module.weights[name][0] = 0.0
        assert torch.isfinite(module(x)).all()
    codes = _inits(module.to_onnx())
    assert all(np.isfinite(v).all() for v in codes.values() if v.dtype.kind == "f")
    assert not any((v == -128).any() for v in codes.values() if v.dtype == np.int8)  # NaN cast to int8 is -128



def test_a_saturating_bias_keeps_its_sign():
    """int32's top code 2**31 - 1 is 2**31 in float32: a bias pushed past it was written back as int32's most
    negative code."""
    _, m = _ctx_and_model()
    x = torch.randn(32, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    module = QDQGraphModule(_int8_graph(m.eval(), x))
    name = next(p for p, *_, kind in module._wq.values() if kind == "int32")
    init = module.nodes[int(name[1:])].input[0]  # parameter w<i> holds the codes behind DequantizeLinear node i
    s = getattr(module, f"s_{name}")
    with torch.no_grad():
        module.weights[name].view(-1)[0] = 1e4 * 2.0**31 * s.view(-1)[0]  # far past the top code
        module.weights[name].view(-1)[-1] = -1e4 * 2.0**31 * s.view(-1)[-1]
    bias = _inits(module.to_onnx())[init].reshape(-1)
    assert bias.dtype == np.int32 and bias[0] == 2**31 - 1 and bias[-1] == -(2**31)


def _saved_bytes(module, x) -> int:
    """Bytes autograd keeps for the backward pass of one training forward."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x).sum()
    return total


def test_activation_fake_quantizers_run_fused_and_keep_little_for_backward():
    """Each activation QuantizeLinear → DequantizeLinear pair runs as one fused fake quantizer: the same outputs
    and gradients as the op-by-op simulation, at a fraction of the memory kept for the backward pass."""
    _, m = _ctx_and_model()
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    q = _int8_graph(m.eval(), x)
    fused, plain = QDQGraphModule(q), QDQGraphModule(q)
    assert len(fused._fused) > 5
    plain._fused = {}
    outs, grads = [], []
    for mod in (fused, plain):
        xi = x.clone().requires_grad_(True)
        y = mod(xi)
        (y * torch.arange(y.shape[1], dtype=y.dtype)).sum().backward()
        outs.append(y.detach())
        grads.append(xi.grad)
    # x * (1 / s) in the fused kernel vs x / s: a value one ulp from a rounding tie can take the next code,
    # so a few activations may differ by one quantization step
    # (these differences then spread through the backward pass's masks)
    assert (outs[0] - outs[1]).norm() < 0.01 * outs[1].norm()
    assert (grads[0] - grads[1]).norm() < 0.1 * grads[1].norm()
    assert _saved_bytes(fused, x) < 0.8 * _saved_bytes(plain, x)
