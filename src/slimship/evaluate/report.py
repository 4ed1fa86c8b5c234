"""The human report (Markdown) of a run's metrics."""

from __future__ import annotations

from pathlib import Path


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def large_batch(metrics: dict) -> str:
    """The latency key of the largest batch measured ("batch64"; "batch32" for a text run)."""
    ref = next(e for e in metrics["models"] if e["name"] == metrics["reference"])
    keys = [k for k in ref.get("latency_ms", {}) if k.startswith("batch") and k[5:].isdigit()]
    return max(keys, key=lambda k: int(k[5:]), default="batch64")


def comparison_rows(metrics: dict) -> list[dict]:
    """The figures of the comparison table, relative to the dense reference (ONNX Runtime fp32)."""
    ref = next(e for e in metrics["models"] if e["name"] == metrics["reference"])
    big = large_batch(metrics)
    rows = []
    for e in metrics["models"]:
        lat = e["latency_ms"]
        rows.append({
            "name": e["name"] + (" *" if e["name"] == metrics["selected"] else ""),
            "accuracy": f"{100 * e['accuracy']:.2f}",
            "delta": f"{100 * (e['accuracy'] - ref['accuracy']):+.2f}",
            "val": f"{100 * e['val_accuracy']:.2f}",
            "size": _mb(e["size_bytes"]),
            "smaller": f"{ref['size_bytes'] / e['size_bytes']:.2f}x",
            "params": f"{e['params'] / 1e6:.2f}M",
            "nonzero": f"{e['nonzero_params'] / 1e6:.2f}M",
            "macs": f"{e['macs'] / 1e6:.1f}M",
            "b1": f"{lat.get('batch1', float('nan')):.2f}",
            "b64": f"{lat.get(big, float('nan')):.1f}",
            "speedup": " / ".join(f"{ref['latency_ms'][k] / v:.2f}x" for k, v in lat.items()),
        })
    return rows


COLUMNS = [("name", "model"), ("accuracy", "test acc %"), ("delta", "Δ vs dense"), ("val", "val acc %"),
           ("size", "package"), ("smaller", "× smaller"), ("params", "params"), ("nonzero", "nonzeros"),
           ("macs", "MACs"), ("b1", "ms b1"), ("b64", "ms b64"), ("speedup", "speed-up b1 / b64")]


def columns(metrics: dict) -> list[tuple[str, str]]:
    """:data:`COLUMNS` with the large batch the run measured in the headers (b64 for images, b32 for texts)."""
    n = large_batch(metrics)[5:]
    return [(k, h.replace("b64", f"b{n}")) for k, h in COLUMNS]


def _input_words(ds: dict) -> str:
    """How the examples were fed ("resized to 64x64"); metrics written before ``input`` existed hold image_size."""
    if ds.get("input"):
        return str(ds["input"])
    return f"at {ds['image_size']}×{ds['image_size']}" if "image_size" in ds else ""


def render_markdown(metrics: dict) -> str:
    ref = next(e for e in metrics["models"] if e["name"] == metrics["reference"])
    ds = metrics["dataset"]
    lines = [
        f"# slimship report: {metrics['recipe']}",
        "",
        f"Data: `{ds.get('source')}`: {ds['sizes']['train']} train / {ds['sizes']['val']} val / "
        f"{ds['sizes']['test']} test {ds.get('examples', 'images')}, {ds['num_classes']} classes, {_input_words(ds)}. "
        f"Test split: {ds.get('test_from')}.",
        "",
        "Accuracy is on the held-out test split, measured on the deploy graph read back from each package, in "
        "ONNX Runtime on the CPU; size is the package file on disk; latency is the median of repeated runs "
        f"after warm-up ({metrics['threads']} threads). `*` marks the shipped model (the smallest package within "
        f"{metrics['accuracy_budget_points']} point(s) of `{metrics['reference']}` on validation data).",
        "",
        "| " + " | ".join(h for _, h in columns(metrics)) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for r in comparison_rows(metrics):
        lines.append("| " + " | ".join(r[k] for k, _ in COLUMNS) + " |")
    lines.append("")
    pt = ref.get("pytorch_eager_latency_ms")
    big = large_batch(metrics)
    if pt:
        lines.append(f"The dense model in PyTorch eager: {pt.get('batch1', 0):.2f} ms at batch 1, "
                     f"{pt.get(big, 0):.1f} ms at batch {big[5:]} (ONNX Runtime fp32 above is the baseline to beat).")
    sc = next((e for e in metrics["models"] if e["name"] == "scratch"), None)
    if sc:
        lines.append(f"Transfer vs scratch (same architecture, same budget): "
                     f"{100 * (ref['accuracy'] - sc['accuracy']):+.2f} points.")
    lines.append("")
    for e in metrics["models"]:
        int8 = e.get("notes", {}).get("int8")
        if int8:
            lines.append(f"- `{e['name']}` int8 settings chosen on validation: {int8['choice']}")
        pr = e.get("notes", {}).get("prune_channels")
        if pr:
            lines.append(f"- `{e['name']}` pruning: MACs {pr['macs_before'] / 1e6:.1f}M → {pr['macs_after'] / 1e6:.1f}M, "
                         f"params {pr['params_before'] / 1e6:.2f}M → {pr['params_after'] / 1e6:.2f}M")
        dp = e.get("delta_package")
        if dp:
            lines.append(f"- `{e['name']}` as a delta on the pretrained base: {dp['bytes']:,} bytes "
                         f"({100 * dp['fraction_of_full']:.1f} % of the full fine-tune's package; "
                         f"{100 * (dp.get('changed_fraction') or 0):.1f} % of the base's weights changed), "
                         f"`{Path(dp['path']).name}` against `base.slim` ({dp['base_bytes']:,} bytes, stored once "
                         f"for every task). Accuracy above is that of the model rebuilt from the delta.")
    return "\n".join(lines) + "\n"
