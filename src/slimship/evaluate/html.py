"""The run report as one self-contained HTML file: inline CSS and SVG, no script or font from anywhere else, so
it opens offline and can be mailed as one file.

:func:`render_html` takes the run's metrics (metrics.json) and, optionally, per-layer rows of the shipped and the
reference package (``slimship.package.layer_bytes``, grouped by :func:`layer_rows`); the API's
``write_html_report`` gathers both from a run folder.
"""

from __future__ import annotations

import math
from html import escape

from slimship.evaluate import svg

CSS = """
body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1180px;color:#222;background:#fafafa;padding:0 16px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:17px;margin-top:30px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#666;margin-top:0} .box{background:#fff;border:1px solid #ddd;border-radius:6px;padding:12px 16px}
.ship{border-left:6px solid #1a9641} .warn{border-left:6px solid #d7191c;background:#fff6f6}
table{border-collapse:collapse;background:#fff;font-size:12.5px;margin:8px 0}
th,td{border:1px solid #ddd;padding:4px 7px;text-align:right} th{background:#f0f0f0} td:first-child,th:first-child{text-align:left}
tr.shipped td{background:#eaf6ec;font-weight:600} tr.reference td{background:#eef3fb}
.plots{display:flex;flex-wrap:wrap;gap:14px} .plots svg{background:#fff;border:1px solid #ddd;border-radius:4px}
pre{background:#fff;border:1px solid #ddd;padding:10px;font-size:12px;overflow:auto;max-height:520px}
.yes{color:#1a9641;font-weight:600} .no{color:#d7191c;font-weight:600} small{color:#666}
"""


def _pct(v, digits: int = 2) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.{digits}f}"


def _mb(n) -> str:
    return "–" if not n else f"{n / 1e6:.2f} MB"


def _role(e: dict, metrics: dict) -> str:
    if e["name"] == metrics["selected"]:
        return "shipped"
    if e["name"] == metrics["reference"]:
        return "reference"
    return "compressed" if e.get("compressed") else "other"


def _ci(e: dict) -> tuple[float | None, float | None]:
    ci = (e.get("test") or {}).get("accuracy_ci95") or [None, None]
    return (100 * ci[0] if ci[0] is not None else None, 100 * ci[1] if ci[1] is not None else None)


def pareto_plots(metrics: dict) -> list[str]:
    """Accuracy (test, 95 % interval) against package bytes and against latency at each batch size; the budget
    drawn at the reference's test accuracy minus the budget."""
    models = metrics["models"]
    ref = next(e for e in models if e["name"] == metrics["reference"])
    b = metrics["accuracy_budget_points"]
    budget_y = 100 * ref["accuracy"] - b
    label = f"budget: {metrics['reference']} − {b:g} pt"

    def points(x_of) -> list[svg.Point]:
        out = []
        for e in models:
            lo, hi = _ci(e)
            out.append(svg.Point(e["name"], x_of(e), 100 * e["accuracy"], lo, hi, _role(e, metrics)))
        return out

    plots = [svg.scatter(points(lambda e: e["size_bytes"]), title="Accuracy vs package size", log_x=True,
                         x_label="package bytes (log scale)", y_label="test accuracy %", budget_y=budget_y,
                         budget_label=label, x_format=_bytes_label)]
    for key in sorted(ref.get("latency_ms", {}), key=lambda k: int(k.removeprefix("batch"))):
        plots.append(svg.scatter(points(lambda e, k=key: e.get("latency_ms", {}).get(k, float("nan"))),
                                 title=f"Accuracy vs latency, {key.replace('batch', 'batch ')} (p50)", log_x=True,
                                 x_label="ms per call, in the runtime each ships for (log scale)", y_label="test accuracy %",
                                 budget_y=budget_y, budget_label=label, x_format=lambda v: f"{v:g}"))
    return plots


def _bytes_label(v: float) -> str:
    return f"{v / 1e6:g} MB" if v >= 1e5 else f"{v / 1e3:g} kB"


def comparison_table(metrics: dict) -> str:
    models = metrics["models"]
    ref = next(e for e in models if e["name"] == metrics["reference"])
    batches = sorted(ref.get("latency_ms", {}), key=lambda k: int(k.removeprefix("batch")))
    head = ["model", "kind", "test acc % (95 % CI)", "Δ test", "val acc %", "Δ val", "macro-F1", "package",
            "× smaller", "params", "nonzeros", "MACs", *[f"ms {k.replace('batch', 'b')} p50 / p95" for k in batches],
            "peak MB (model)", "epochs"]
    rows = []
    for e in models:
        role = _role(e, metrics)
        lo, hi = _ci(e)
        mem = e.get("memory") or {}
        lat = [f"{e['latency_ms'].get(k, float('nan')):.2f} / {e.get('latency_p95_ms', {}).get(k, float('nan')):.2f}"
               for k in batches]
        mark = " ★ shipped" if role == "shipped" else (" (reference)" if e["name"] == metrics["reference"] else "")
        cells = [escape(e["name"]) + mark, escape(e.get("kind", "")),
                 f"{_pct(e['accuracy'])} <small>({lo:.1f}–{hi:.1f})</small>" if lo is not None else _pct(e["accuracy"]),
                 f"{100 * (e['accuracy'] - ref['accuracy']):+.2f}", _pct(e["val_accuracy"]),
                 f"{100 * (e['val_accuracy'] - ref['val_accuracy']):+.2f}",
                 f"{(e.get('test') or {}).get('macro_f1', float('nan')):.4f}", _mb(e["size_bytes"]),
                 f"{ref['size_bytes'] / e['size_bytes']:.2f}×" if e["size_bytes"] else "–",
                 f"{e['params'] / 1e6:.2f} M", f"{e['nonzero_params'] / 1e6:.2f} M", f"{e['macs'] / 1e6:.1f} M", *lat,
                 f"{mem['peak_rss_mb']:.0f} ({mem['model_mb']:.0f})" if "peak_rss_mb" in mem else "–",
                 "–" if e.get("epochs") is None else f"{e['epochs']:.2f}"]
        rows.append((role, cells))
    return _table(head, rows)


def _table(head: list[str], rows: list[tuple[str, list[str]]]) -> str:
    h = "".join(f"<th>{c}</th>" for c in head)
    body = "".join(f"<tr class='{cls}'>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>" for cls, cells in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def decision_section(metrics: dict) -> str:
    d = metrics.get("decision") or {}
    b = metrics["accuracy_budget_points"]
    parts = [f"<div class='box ship'><b>{escape(d.get('summary', 'shipped ' + metrics['selected']))}</b><br>"
             f"<small>Rule: {escape(d.get('rule', 'smallest package within budget on validation'))}; "
             f"confidence needed {d.get('confidence', '–')}.</small></div>"]
    choice = metrics.get("reference_choice") or {}
    for w in choice.get("warnings", []):
        parts.append(f"<div class='box warn'>⚠ {escape(w)}</div>")
    if choice.get("val_accuracy"):
        parts.append("<p>Reference: <b>" + escape(choice["reference"]) + "</b>, the best transferred model on "
                     "validation (" + ", ".join(f"{escape(k)} {_pct(v)} %" for k, v in choice["val_accuracy"].items())
                     + ").</p>")
    rows, forest_rows = [], []
    for e in metrics["models"]:
        j = e.get("decision")
        if not j:
            continue
        lo, hi = j["interval_points"]
        role = _role(e, metrics)
        verdict = "<span class='yes'>within</span>" if j["within_budget"] else "<span class='no'>outside</span>"
        rows.append((role, [escape(e["name"]) + (" ★" if role == "shipped" else ""),
                            "yes" if e.get("compressed") else "no (not a candidate)",
                            f"{j['difference_points']:+.2f}", f"{lo:+.2f} to {hi:+.2f}",
                            f"{j['candidate_only']} / {j['reference_only']}",
                            "–" if j.get("agreement") is None else f"{100 * j['agreement']:.1f} %",
                            f"{j['probability']:.2f}", verdict,
                            f"{100 * (e['accuracy'] - _ref(metrics)['accuracy']):+.2f}"]))
        forest_rows.append((e["name"], j["difference_points"], lo, hi, role))
    if rows:
        n = next(e["decision"]["n"] for e in metrics["models"] if e.get("decision"))
        level = next(e["decision"]["level"] for e in metrics["models"] if e.get("decision"))
        parts.append(_table(["model", "may ship", "Δ val (points)", f"{100 * level:.0f} % interval",
                             "only it right / only ref right", "agreement", f"P(Δ ≥ −{b:g})", "verdict",
                             "Δ test (held out)"], rows))
        parts.append("<div class='plots'>" + svg.forest(
            forest_rows, title=f"Accuracy difference vs {metrics['reference']} on {n} validation images",
            budget=b, x_label=f"points (dot: observed; bar: {100 * level:.0f} % interval)") + "</div>")
    return "".join(parts)


def _refit_head(metrics: dict) -> str:
    """The header's word on the refit: model.slim is the refit shipped model (api/refit.py)."""
    r = metrics.get("refit") or {}
    ship = next((e for e in r.get("models", []) if e["name"] == r.get("shipped")), None)
    if ship is None:
        return ""
    return (f" Then refit on training + validation: model.slim is <b>{escape(ship['name'])}</b>, "
            f"{_pct(ship['accuracy'])} % on test.")


def refit_section(metrics: dict) -> str:
    """What ``refit: true`` trained again and its test figures (evaluate/report.py's rows)."""
    from slimship.evaluate.report import refit_columns, refit_rows, refit_summary

    cols = refit_columns(metrics)
    rows = [("shipped" if r["name"].endswith(" *") else "", [escape(r[k]) for k, _ in cols])
            for r in refit_rows(metrics)]
    return f"<p>{escape(refit_summary(metrics))}</p>" + (_table([h for _, h in cols], rows) if rows else "")


def _ref(metrics: dict) -> dict:
    return next(e for e in metrics["models"] if e["name"] == metrics["reference"])


def confusion_section(metrics: dict) -> str:
    shipped = next(e for e in metrics["models"] if e["name"] == metrics["selected"])
    ref = _ref(metrics)
    names = metrics["dataset"].get("class_names") or []
    t = shipped.get("test") or {}
    if not t.get("confusion"):
        return "<p>No test split.</p>"
    plot = svg.heatmap(t["confusion"], names, title=f"Confusion matrix of {shipped['name']} (test; rows: true class)")
    rows = []
    rt = (ref.get("test") or {}).get("per_class_accuracy") or []
    for i, v in enumerate(t.get("per_class_accuracy", [])):
        r = rt[i] if i < len(rt) else None
        rows.append(("", [escape(names[i] if i < len(names) else str(i)), _pct(v), _pct(r),
                          "–" if v is None or r is None else f"{100 * (v - r):+.2f}"]))
    table = _table(["class", f"{escape(shipped['name'])} %", f"{escape(ref['name'])} %", "Δ"], rows)
    return f"<div class='plots'>{plot}<div>{table}</div></div>"


def layer_section(layers: dict[str, list[dict]], metrics: dict) -> str:
    if not layers:
        return "<p>Per-layer figures need the packages (packages/*.slim) in the run folder.</p>"
    shipped = metrics["selected"]
    names = list(layers)  # the shipped model first, then the reference
    plots = []
    for n in names:
        top = sorted(layers[n], key=lambda r: -r["compressed_bytes"])[:20]
        color = svg.COLORS["shipped" if n == shipped else "reference"]
        plots.append(svg.bars([(r["layer"], [r["compressed_bytes"]]) for r in top], [(n, color)],
                              title=f"Bytes per layer of {n} (largest 20, compressed estimate)", x_label="bytes"))
    rows = [("", [escape(r["layer"]), f"{r['params']:,}", f"{100 * (1 - r['nonzeros'] / r['params']):.1f} %"
                  if r["params"] else "–", escape(r["encoding"]), f"{r['bits_per_weight']:.2f}",
                  f"{r['stored_bytes']:,}", f"{r['compressed_bytes']:,}"])
            for r in sorted(layers[names[0]], key=lambda r: -r["compressed_bytes"])]
    table = _table(["layer", "params", "sparsity", "encoding", "bits / weight", "stored bytes", "compressed (est.)"], rows)
    return (f"<div class='plots'>{''.join(plots)}</div><p>Every layer of <b>{escape(names[0])}</b> "
            f"(bits per weight: compressed estimate × 8 / parameters):</p>{table}")


def layer_rows(tensors) -> list[dict]:
    """Per-layer totals of ``slimship.package.layer_bytes`` rows (``TensorBytes``), in graph order."""
    out: dict[str, dict] = {}
    for t in tensors:
        key = t.layer or t.name
        r = out.setdefault(key, {"layer": key, "params": 0, "nonzeros": 0, "stored_bytes": 0, "compressed_bytes": 0,
                                 "encodings": set()})
        r["params"] += t.params
        r["nonzeros"] += t.nonzeros
        r["stored_bytes"] += t.stored_bytes
        r["compressed_bytes"] += t.compressed_bytes
        r["encodings"].add(t.encoding)
    rows = []
    for r in out.values():
        enc = r.pop("encodings")
        rows.append({**r, "encoding": "+".join(sorted(enc)),
                     "bits_per_weight": 8 * r["compressed_bytes"] / r["params"] if r["params"] else 0.0})
    return rows


def conditions_section(metrics: dict) -> str:
    c = metrics.get("conditions") or {}
    m = c.get("machine") or {}
    if not m:
        return "<p>Not recorded (a run from an older slimship).</p>"
    rows = [("", ["CPU", escape(str(m.get("cpu")))]), ("", ["logical cores / threads used", f"{m.get('logical_cores')} / {m.get('threads')}"]),
            ("", ["OS", escape(str(m.get("os")))]),
            ("", ["versions", escape(", ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items()))])]
    for what in ("accuracy", "latency", "memory", "size"):
        if what in c:
            rows.append(("", [what, escape("; ".join(f"{k}: {v}" for k, v in c[what].items()))]))
    return _table(["condition", "value"], rows)


def render_html(metrics: dict, layers: dict[str, list[dict]] | None = None, recipe_yaml: str = "") -> str:
    """The whole report as one HTML document (see the module docstring)."""
    ds = metrics["dataset"]
    sizes = ds.get("sizes", {})
    shipped = next(e for e in metrics["models"] if e["name"] == metrics["selected"])
    ref = _ref(metrics)
    title = f"slimship report: {escape(str(metrics.get('recipe', 'run')))}"
    head = (f"<p class='sub'>Data <code>{escape(str(ds.get('source')))}</code>: {sizes.get('train')} train / "
            f"{sizes.get('val')} validation / {sizes.get('test')} test images, {ds.get('num_classes')} classes"
            f"{', at ' + str(ds['image_size']) + ' px' if ds.get('image_size') else ''}. Shipped "
            f"<b>{escape(shipped['name'])}</b>: {_pct(shipped['accuracy'])} % on test "
            f"({100 * (shipped['accuracy'] - ref['accuracy']):+.2f} vs {escape(ref['name'])}), "
            f"{_mb(shipped['size_bytes'])} ({ref['size_bytes'] / max(1, shipped['size_bytes']):.2f}× smaller)."
            f"{_refit_head(metrics)}</p>")
    sections = [
        ("The decision and its uncertainty", decision_section(metrics)),
        *([("Refit on training + validation", refit_section(metrics))] if metrics.get("refit") else []),
        ("Trade-offs", "<p>Test accuracy with its 95 % interval; the dashed red line is the budget; the orange step "
                       "line links the models no other beats on both axes.</p><div class='plots'>"
                       + "".join(pareto_plots(metrics)) + "</div>"),
        ("Every model", comparison_table(metrics)),
        ("Where the shipped model errs", confusion_section(metrics)),
        ("Per layer: bytes, sparsity, bits", layer_section(layers or {}, metrics)),
        ("Conditions of every figure", conditions_section(metrics)),
        ("Recipe", f"<pre>{escape(recipe_yaml) or 'not recorded'}</pre>"),
    ]
    body = "".join(f"<h2>{h}</h2>{s}" for h, s in sections)
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{title}</title>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{CSS}</style></head>"
            f"<body><h1>{title}</h1>{head}{body}</body></html>\n")
