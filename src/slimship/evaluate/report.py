"""The human report (Markdown) of a run's metrics."""

from __future__ import annotations

from pathlib import Path

from slimship.evaluate.runtime_choice import describe, ships_at


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def _baseline_latency(ref: dict) -> dict:
    """The dense reference's latency in the reference runtime (ONNX Runtime fp32): what speed-ups are relative to."""
    from slimship.core.runtime import REFERENCE_RUNTIME

    return ref.get("runtimes", {}).get(REFERENCE_RUNTIME, {}).get("latency_ms") or ref["latency_ms"]


def _speedup(lat: dict, base: dict) -> str:
    return " / ".join(f"{base[k] / v:.2f}x" if k in base and v else "-" for k, v in lat.items())


def large_batch(metrics: dict) -> str:
    """The latency key of the largest batch measured ("batch64"; "batch32" for a text run)."""
    ref = next(e for e in metrics["models"] if e["name"] == metrics["reference"])
    keys = [k for k in ref.get("latency_ms", {}) if k.startswith("batch") and k[5:].isdigit()]
    return max(keys, key=lambda k: int(k[5:]), default="batch64")


def comparison_rows(metrics: dict) -> list[dict]:
    """The figures of the comparison table (each model in the runtime it ships for), relative to the dense
    reference in ONNX Runtime fp32."""
    ref = next(e for e in metrics["models"] if e["name"] == metrics["reference"])
    base = _baseline_latency(ref)
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
            "runtime": describe(e.get("runtime_by_batch", {}), e.get("runtime", "onnxruntime"), short=True),
            "b1": f"{lat.get('batch1', float('nan')):.2f}",
            "b64": f"{lat.get(big, float('nan')):.1f}",
            "speedup": _speedup(lat, base),
            "p": f"{e['decision']['probability']:.2f}" if e.get("decision") else "ref" if e is ref else "",
            "epochs": "" if e.get("epochs") is None else f"{e['epochs']:.1f}",
        })
    return rows


COLUMNS = [("name", "model"), ("accuracy", "test acc %"), ("delta", "Δ vs ref"), ("val", "val acc %"),
           ("p", "P(within)"), ("size", "package"), ("smaller", "× smaller"), ("params", "params"),
           ("nonzero", "nonzeros"), ("macs", "MACs"), ("runtime", "runtime b1 / b64"), ("b1", "ms b1"),
           ("b64", "ms b64"), ("speedup", "speed-up b1 / b64"), ("epochs", "epochs")]


def decision_lines(metrics: dict) -> list[str]:
    """The decision, its uncertainty, the reference choice and its warnings, and the measuring conditions."""
    lines = []
    for w in (metrics.get("reference_choice") or {}).get("warnings", []):
        lines.append(f"Warning: {w}.")
    d = metrics.get("decision")
    if d:
        lines.append(f"Decision: {d['summary']}. P(within) is the probability, from a paired comparison on the same "
                     f"validation examples, that a model loses at most {d['budget_points']:g} point(s); a candidate "
                     f"ships when it reaches {d['confidence']:g} (docs/decision.md).")
    m = (metrics.get("conditions") or {}).get("machine")
    if m:
        v = m.get("versions", {})
        lines.append(f"Measured on {m['cpu']} ({m['logical_cores']} logical cores, {m['threads']} threads), "
                     + ", ".join(f"{k} {v[k]}" for k in ("onnxruntime", "torch", "python") if k in v)
                     + "; latency p50 (p95 in metrics.json), batch sizes "
                     f"{metrics['conditions'].get('latency', {}).get('batch_sizes')}.")
    return lines


def runtime_rows(metrics: dict) -> list[dict]:
    """Every model in every runtime it was measured in: test and validation accuracy, latency per batch size and
    speed-up against the dense reference in ONNX Runtime. ``ships`` marks the runtime each model ships for."""
    ref = next(e for e in metrics["models"] if e["name"] == metrics["reference"])
    base = _baseline_latency(ref)
    rows = []
    for e in metrics["models"]:
        for rt, f in e.get("runtimes", {}).items():
            lat = f.get("latency_ms", {})
            rows.append({"name": e["name"] + (" *" if e["name"] == metrics["selected"] else ""), "runtime": rt,
                         "ships": ships_at(e.get("runtime_by_batch", {}), e.get("runtime"), rt),
                         "accuracy": f"{100 * f['accuracy']:.2f}", "val": f"{100 * f['val_accuracy']:.2f}",
                         "latency": " / ".join(f"{v:.3f}" for v in lat.values()), "speedup": _speedup(lat, base)})
    return rows


RUNTIME_COLUMNS = [("name", "model"), ("runtime", "runtime"), ("ships", "ships in it"), ("accuracy", "test acc %"),
                   ("val", "val acc %"), ("latency", "ms per batch"), ("speedup", "× dense (ONNX Runtime)")]


def refit_summary(metrics: dict) -> str:
    """One paragraph on the refit (``refit: true``): what was trained again on which examples and what ships;
    "" for a run without it."""
    r = metrics.get("refit")
    if not r:
        return ""
    if r.get("skipped"):
        return f"Refit: skipped ({r['skipped']}); model.slim is the first fit's `{r['source']}`."
    first = {e["name"]: e for e in metrics["models"]}
    by = {e["name"]: e for e in r["models"]}
    ship, ref = by[r["shipped"]], by[r["reference"]]
    scale = r.get("recovery_scale", 1.0)  # absent in metrics written before it existed
    made = "" if ship is ref else (f" and `{r['source']}` made again from it (its recoveries on training + validation, "
                                   f"as many examples as the first fit's: epochs x {scale:g})")
    also = "" if ship is ref else (f"; `{ref['name']}` {100 * ref['accuracy']:.2f} % (the first fit's "
                                   f"{100 * first[metrics['reference']]['accuracy']:.2f} %)")
    return (f"Refit: after the decision, `{metrics['reference']}` was trained again on the {r['train_examples']} "
            f"training + validation examples ({r['epochs']:g} epochs, where the first fit kept its pass){made}. "
            f"Shipped as model.slim: `{ship['name']}`, {100 * ship['accuracy']:.2f} % on test (the first fit's "
            f"`{r['source']}`: {100 * first[r['source']]['accuracy']:.2f} %){also}. The refit models have no "
            "validation figures: they trained on those examples.")


def refit_rows(metrics: dict) -> list[dict]:
    """The refit models' figures, against the refit reference in ONNX Runtime fp32 (measured in the same
    interleaved round)."""
    r = metrics.get("refit") or {}
    if not r.get("models"):
        return []
    ref = next(e for e in r["models"] if e["name"] == r["reference"])
    base, big = _baseline_latency(ref), large_batch(metrics)
    return [{"name": e["name"] + (" *" if e["name"] == r["shipped"] else ""),
             "accuracy": f"{100 * e['accuracy']:.2f}", "delta": f"{100 * (e['accuracy'] - ref['accuracy']):+.2f}",
             "size": _mb(e["size_bytes"]), "smaller": f"{ref['size_bytes'] / e['size_bytes']:.2f}x",
             "runtime": describe(e.get("runtime_by_batch", {}), e.get("runtime", "onnxruntime"), short=True),
             "b1": f"{e['latency_ms'].get('batch1', float('nan')):.2f}",
             "b64": f"{e['latency_ms'].get(big, float('nan')):.1f}", "speedup": _speedup(e["latency_ms"], base)}
            for e in r["models"]]


def refit_columns(metrics: dict) -> list[tuple[str, str]]:
    keep = ("name", "accuracy", "delta", "size", "smaller", "runtime", "b1", "b64", "speedup")
    return [(k, h) for k, h in columns(metrics) if k in keep]


def _table(columns: list[tuple[str, str]], rows: list[dict]) -> list[str]:
    return (["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
            + ["| " + " | ".join(r[k] for k, _ in columns) + " |" for r in rows])


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
        "its main runtime (the one its largest batch size ships for, below) on the CPU; size is the package file "
        "on disk; "
        f"latency is the median of repeated interleaved runs after warm-up ({metrics['threads']} threads); "
        "speed-ups are against the dense model in ONNX Runtime fp32. `*` marks the shipped model (the smallest "
        f"package judged within {metrics['accuracy_budget_points']} point(s) of `{metrics['reference']}` on "
        "validation data). The full report with plots: report.html.",
        "",
        *_table(columns(metrics), comparison_rows(metrics)),
        "",
    ]
    lines += decision_lines(metrics)
    lines.append("")
    if metrics.get("refit"):
        lines += ["## Refit on training + validation", "", refit_summary(metrics), ""]
        if refit_rows(metrics):
            lines += [*_table(refit_columns(metrics), refit_rows(metrics)), ""]
    rt_rows = runtime_rows(metrics)
    if rt_rows:
        from slimship.evaluate.runtime_choice import ACCURACY_TOLERANCE, MARGIN

        lines += ["## Every model in every runtime", "",
                  f"Batch sizes {', '.join(k.removeprefix('batch') for k in ref['latency_ms'])}. At each batch size a "
                  "model ships for the runtime with the lowest latency there (another runtime must be at least "
                  f"{100 * MARGIN:.0f} % faster than ONNX Runtime to replace it, and within "
                  f"{100 * ACCURACY_TOLERANCE:.1f} points of validation accuracy of the model's best runtime; "
                  "docs/runtimes.md); `ships in it` names the batch sizes where it does, `yes` for all of them. "
                  "OpenVINO runs float layers in f32 and quantized layers in int8.", "",
                  *_table(RUNTIME_COLUMNS, rt_rows), ""]
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
