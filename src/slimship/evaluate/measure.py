"""Measure one model as shipped: package it, read the package back, and take every figure from that.

Accuracy is computed by ONNX Runtime on the deploy graph *decoded from the package file*; size is the byte
size of that file; latency is the median of repeated runs after warm-up in the same runtime.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from slimship.evaluate.compute import count_macs
from slimship.evaluate.latency import interleaved_ort_latency, torch_latency
from slimship.models.factory import count_params
from slimship.package.pack import load_package, pack


def measure_and_pack(
    *, name: str, kind: str, model, onnx: bytes, path: Path, pack_args: dict, val: tuple, test: tuple,
    compressed: bool, batch_sizes: list[int], runs: int, pytorch_latency: bool = False, extra: dict | None = None,
) -> dict:
    """Write the package for ``name``, evaluate it from disk, and return its metrics entry.

    Args:
        val/test: (float32 model inputs [N,C,H,W], int labels [N]).
        pack_args: keyword arguments of :func:`slimship.package.pack.pack` except path/onnx/metrics.
    """
    pack(path, onnx=onnx, **pack_args)
    loaded = load_package(path)
    acc = {}
    for split, (x, y) in (("val", val), ("test", test)):
        from slimship.evaluate.runtime import ort_logits

        acc[split] = float((ort_logits(loaded.session, x).argmax(1) == y).mean()) if len(y) else float("nan")
    params, nonzero = count_params(model)
    c = pack_args["preprocessing"].model_channels
    s = pack_args["preprocessing"].image_size
    entry = {
        "name": name,
        "kind": kind,
        "accuracy": acc["test"],
        "val_accuracy": acc["val"],
        "size_bytes": 0,
        "onnx_bytes": len(onnx),
        "params": params,
        "nonzero_params": nonzero,
        "macs": count_macs(model, (c, s, s)),
        "latency_ms": {},  # filled by finish_latency(), measured interleaved across all models
        "runtime": "onnxruntime",
        "package": str(path),
        "compressed": compressed,
        **(extra or {}),
    }
    if pytorch_latency:
        entry["pytorch_eager_latency_ms"] = torch_latency(model, (c, s, s), tuple(batch_sizes), runs=max(5, runs // 3))
    # Rewrite with the measured figures in the manifest; the deploy graph is byte-identical, so the figures
    # measured above hold for the final file.
    pack(path, onnx=onnx, metrics=entry, **pack_args)
    entry["size_bytes"] = os.path.getsize(path)
    return entry


def finish_latency(entries: list[dict], pack_args_of: dict[str, dict], *, batch_sizes: list[int], runs: int) -> None:
    """Measure every package's deploy graph interleaved, then re-pack each with its complete metrics."""
    graphs = {e["name"]: load_package(e["package"]).onnx for e in entries}
    pre = next(iter(pack_args_of.values()))["preprocessing"]
    shape = (pre.model_channels, pre.image_size, pre.image_size)
    lat = interleaved_ort_latency(graphs, shape, tuple(batch_sizes), runs=runs)
    for e in entries:
        e["latency_ms"] = lat[e["name"]]
        pack(e["package"], onnx=graphs[e["name"]], metrics=e, **pack_args_of[e["name"]])
        e["size_bytes"] = os.path.getsize(e["package"])


def test_inputs(images_uint8, labels, pre) -> tuple[np.ndarray, np.ndarray]:
    from slimship.data.transforms import to_model_input_np

    return to_model_input_np(images_uint8.numpy(), pre), labels.numpy()
