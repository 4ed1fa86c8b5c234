"""The human report (Markdown) of a run's metrics."""

from __future__ import annotations

from pathlib import Path


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def comparison_rows(metrics: dict) -> list[dict]:
    """The figures of the comparison table, relative to the dense reference (ONNX Runtime fp32)."""
    ref = next(e for e in metrics["models"] if e["name"] == metrics["reference"])
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
            "b64": f"{lat.get('batch64', float('nan')):.1f}",
            "speedup": " / ".join(f"{ref['latency_ms'][k] / v:.2f}x" for k, v in lat.items()),
            "p": f"{e['decision']['probability']:.2f}" if e.get("decision") else "ref" if e is ref else "",
            "epochs": "" if e.get("epochs") is None else f"{e['epochs']:.1f}",
        })
    return rows


COLUMNS = [("name", "model"), ("accuracy", "test acc %"), ("delta", "Δ vs ref"), ("val", "val acc %"),
           ("p", "P(within)"), ("size", "package"), ("smaller", "× smaller"), ("params", "params"),
           ("nonzero", "nonzeros"), ("macs", "MACs"), ("b1", "ms b1"), ("b64", "ms b64"),
           ("speedup", "speed-up b1 / b64"), ("epochs", "epochs")]


def decision_lines(metrics: dict) -> list[str]:
    """The decision, its uncertainty, the reference choice and its warnings, and the measuring conditions."""
    lines = []
    for w in (metrics.get("reference_choice") or {}).get("warnings", []):
        lines.append(f"Warning: {w}.")
    d = metrics.get("decision")
    if d:
        lines.append(f"Decision: {d['summary']}. P(within) is the probability, from a paired comparison on the same "
                     f"validation images, that a model loses at most {d['budget_points']:g} point(s); a candidate "
                     f"ships when it reaches {d['confidence']:g} (docs/decision.md).")
    m = (metrics.get("conditions") or {}).get("machine")
    if m:
        v = m.get("versions", {})
        lines.append(f"Measured on {m['cpu']} ({m['logical_cores']} logical cores, {m['threads']} threads), "
                     + ", ".join(f"{k} {v[k]}" for k in ("onnxruntime", "torch", "python") if k in v)
                     + "; latency p50 (p95 in metrics.json), batch sizes "
                     f"{metrics['conditions'].get('latency', {}).get('batch_sizes')}.")
    return lines


def render_markdown(metrics: dict) -> str:
    ref = next(e for e in metrics["models"] if e["name"] == metrics["reference"])
    ds = metrics["dataset"]
    lines = [
        f"# slimship report: {metrics['recipe']}",
        "",
        f"Data: `{ds.get('source')}`: {ds['sizes']['train']} train / {ds['sizes']['val']} val / "
        f"{ds['sizes']['test']} test images, {ds['num_classes']} classes, at {ds['image_size']}×{ds['image_size']}. "
        f"Test split: {ds.get('test_from')}.",
        "",
        "Accuracy is on the held-out test split, measured on the deploy graph read back from each package, in "
        "ONNX Runtime on the CPU; size is the package file on disk; latency is the median of repeated runs "
        f"after warm-up ({metrics['threads']} threads). `*` marks the shipped model (the smallest package judged "
        f"within {metrics['accuracy_budget_points']} point(s) of `{metrics['reference']}` on validation data). "
        f"The full report with plots: report.html.",
        "",
        "| " + " | ".join(h for _, h in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for r in comparison_rows(metrics):
        lines.append("| " + " | ".join(r[k] for k, _ in COLUMNS) + " |")
    lines.append("")
    lines += decision_lines(metrics)
    lines.append("")
    pt = ref.get("pytorch_eager_latency_ms")
    if pt:
        lines.append(f"The dense model in PyTorch eager: {pt.get('batch1', 0):.2f} ms at batch 1, "
                     f"{pt.get('batch64', 0):.1f} ms at batch 64 (ONNX Runtime fp32 above is the baseline to beat).")
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
