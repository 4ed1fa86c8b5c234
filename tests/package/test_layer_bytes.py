"""layer_bytes: one row per weight tensor of a package, with its encoding and share of the compressed file."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import timm
import torch
from onnx import numpy_helper

from slimship.compress.weight_only import WeightOnlyConfig, block_scales, fake_quant
from slimship.data.transforms import ImagePreprocessing
from slimship.core.errors import PackageError
from slimship.models.export import export_onnx
from slimship.package.format import write_package
from slimship.package.layer_bytes import _module_path, format_layer_table, layer_bytes, part_bytes
from slimship.package.pack import load_package, pack

PRE = ImagePreprocessing(32, 1, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=64,
                             depth=2, num_heads=2, num_classes=3).eval()


@pytest.fixture(scope="module")
def packages(vit, tmp_path_factory):
    """The same tiny ViT packed plain (fp32 model.onnx) and int4 with pruned zeros (graph + weights.bin)."""
    d = tmp_path_factory.mktemp("layer_bytes")
    args = {"architecture": "vit", "class_names": ["a", "b", "c"], "preprocessing": PRE}
    pack(d / "fp32.slim", onnx=export_onnx(vit, 32), **args)
    cfg = WeightOnlyConfig(bits=4, granularity="group", group_size=32)
    with torch.no_grad():
        for name, m in vit.named_modules():
            if isinstance(m, torch.nn.Linear) and m.weight.numel() >= 256:
                w = m.weight * (torch.rand(m.weight.shape) > (0.7 if name == "blocks.0.mlp.fc1" else 0.0))
                m.weight.copy_(fake_quant(w, block_scales(w, cfg), 4))
    pack(d / "int4.slim", onnx=export_onnx(vit, 32, fold_bn=False), encode_weights=True, **args)
    return d / "fp32.slim", d / "int4.slim"


def _float_initializers(onnx_bytes: bytes) -> dict[str, np.ndarray]:
    g = onnx.load_from_string(onnx_bytes).graph
    return {i.name: numpy_helper.to_array(i) for i in g.initializer if i.data_type == onnx.TensorProto.FLOAT}


def test_rows_of_an_encoded_package(packages):
    path = packages[1]
    rows = layer_bytes(path)
    want = _float_initializers(load_package(path).onnx)
    by_name = {r.name: r for r in rows}
    assert set(by_name) == set(want)  # every weight tensor once, nothing else
    for name, a in want.items():
        r = by_name[name]
        assert (r.shape, r.params, r.nonzeros, r.dtype) == (a.shape, a.size, int(np.count_nonzero(a)), "float32")
    quantized = [r for r in rows if r.encoding == "qint"]
    assert len(quantized) == 8 and all(r.part == "weights.bin" for r in quantized)  # 2 blocks x qkv/proj/fc1/fc2
    assert {r.layer for r in quantized} >= {"blocks.0.attn.qkv", "blocks.1.mlp.fc2"}
    fc1 = next(r for r in quantized if r.layer == "blocks.0.mlp.fc1")
    assert fc1.nonzeros < 0.4 * fc1.params  # the pruned one
    assert all(r.stored_bytes <= r.params // 2 + r.params // 32 * 4 + r.params // 8 for r in quantized)
    assert {r.encoding for r in rows if r.part == "graph.onnx"} == {"in-graph"}
    parts = {p.name: p for p in part_bytes(path)}
    blob = [r for r in rows if r.part == "weights.bin"]
    assert sum(r.stored_bytes for r in blob) < parts["weights.bin"].raw_bytes  # the rest is the blob's header
    est, real = sum(r.compressed_bytes for r in blob), parts["weights.bin"].stored_bytes
    assert 0.75 * real < est < 1.25 * real  # the estimates add up to about the real stored size


def test_rows_of_a_plain_package_and_the_table(packages):
    rows = layer_bytes(packages[0])
    assert rows and {(r.part, r.encoding) for r in rows} == {("model.onnx", "in-graph")}
    assert sum(r.params for r in rows) == sum(a.size for a in _float_initializers(load_package(packages[0]).onnx).values())
    text = format_layer_table(rows, part_bytes(packages[0]))
    lines = text.splitlines()
    assert lines[0].split() == ["tensor", "shape", "params", "nonzero", "encoding", "stored", "compressed~", "share"]
    assert "blocks.0.attn.qkv (onnx::MatMul_" in text and "pos_embed" in text
    assert any(line.startswith("total") and "100.0%" in line for line in lines)
    assert "model.onnx [" in lines[-2] and "stored" in lines[-2] and lines[-1].startswith("  all parts:")
    assert format_layer_table([]).splitlines()[-1].startswith("total")


def test_packages_without_a_graph_or_damaged_are_refused(packages, tmp_path):
    write_package(tmp_path / "labels.slim", {"model": {}}, {"labels.txt": b"a\nb\n"})
    with pytest.raises(PackageError, match="no deploy graph"):
        layer_bytes(tmp_path / "labels.slim")
    data = packages[1].read_bytes()
    (tmp_path / "cut.slim").write_bytes(data[:-100])
    with pytest.raises(PackageError):
        layer_bytes(tmp_path / "cut.slim")


@pytest.mark.parametrize("node,path", [
    ("/blocks/blocks.0/attn/qkv/MatMul", "blocks.0.attn.qkv"),
    ("/head/Gemm", "head"),
    ("/features/features.3/conv/conv.0/Conv", "features.3.conv.0"),
    ("/1/conv/conv.1/conv.1.0/Conv", "1.conv.1.0"),  # what torch.onnx names nested Sequentials
    ("Gemm_0", ""),
    ("", ""),
])
def test_module_paths_from_node_names(node, path):
    assert _module_path(node) == path
