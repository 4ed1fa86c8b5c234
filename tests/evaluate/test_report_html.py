"""The HTML report: self-contained, and drawn for real in headless Chromium (screenshot pixels, loaded resources)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from slimship.evaluate import svg
from slimship.evaluate.html import render_html

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def sample_metrics() -> dict:
    """A run's metrics as `run` writes them: reference, probe, two candidates (one shipped), a 3-class task."""

    def model(name, acc, val, size, b1, compressed, kind="compressed", decision=None):
        conf = [[30, 2, 1], [3, 28, 2], [1, 2, 31]]
        return {"name": name, "kind": kind, "accuracy": acc, "val_accuracy": val, "size_bytes": size, "params": 3_400_000,
                "nonzero_params": 3_000_000, "macs": 200_000_000, "compressed": compressed, "package": "",
                "latency_ms": {"batch1": b1, "batch64": 40 * b1}, "latency_p95_ms": {"batch1": 1.3 * b1, "batch64": 52 * b1},
                "memory": {"peak_rss_mb": 80.0, "model_mb": 30.0, "baseline_mb": 50.0}, "epochs": 3.0,
                "test": {"n": 100, "accuracy": acc, "accuracy_ci95": [acc - 0.05, acc + 0.04], "macro_f1": acc - 0.01,
                         "per_class_accuracy": [0.9, 0.85, 0.91], "confusion": conf},
                **({"decision": decision} if decision else {})}

    def j(d, lo, hi, p, ok):
        return {"n": 200, "difference_points": d, "interval_points": [lo, hi], "level": 0.9, "probability": p,
                "within_budget": ok, "candidate_only": 3, "reference_only": 4, "agreement": 0.95}

    return {
        "recipe": "sample", "reference": "finetuned", "selected": "small", "accuracy_budget_points": 1.0,
        "dataset": {"source": "x.npz", "sizes": {"train": 800, "val": 200, "test": 100}, "num_classes": 3,
                    "image_size": 64, "class_names": ["top", "middle", "bottom"]},
        "decision": {"summary": "shipped small: within budget", "rule": "paired", "confidence": 0.5},
        "reference_choice": {"reference": "finetuned", "val_accuracy": {"probe": 0.8, "finetuned": 0.9},
                             "warnings": []},
        "conditions": {"machine": {"cpu": "Test CPU", "logical_cores": 2, "threads": 2, "os": "Linux",
                                   "versions": {"onnxruntime": "1"}}, "latency": {"statistic": "p50"}},
        "recipe_spec": {"name": "sample"},
        "models": [
            model("probe", 0.80, 0.80, 12_500_000, 1.1, False, "probe", j(-10, -14, -6, 0.0, False)),
            model("finetuned", 0.90, 0.90, 12_500_000, 1.2, False, "finetune"),
            model("int8", 0.895, 0.90, 2_900_000, 0.7, True, decision=j(0.0, -1.8, 1.7, 0.8, True)),
            model("small", 0.893, 0.895, 1_100_000, 1.0, True, decision=j(-0.5, -2.1, 1.1, 0.65, True)),
        ],
    }


def sample_layers() -> dict:
    rows = [{"layer": f"blocks.{i}.conv", "params": 1000 * (i + 1), "nonzeros": 500 * (i + 1), "stored_bytes": 900 * (i + 1),
             "compressed_bytes": 600 * (i + 1), "encoding": "shared", "bits_per_weight": 4.8} for i in range(6)]
    return {"small": rows, "finetuned": [{**r, "nonzeros": r["params"], "encoding": "raw", "bits_per_weight": 32.0,
                                          "compressed_bytes": 4 * r["params"]} for r in rows]}


def test_report_is_self_contained_and_complete():
    html = render_html(sample_metrics(), sample_layers(), "name: sample\n")
    assert html.count("<svg class='plot'") >= 6  # size, two latencies, forest, confusion, layer bars (×2)
    for needed in ("★ shipped", "budget", "Confusion matrix of small", "Test CPU", "P(Δ ≥ −1)", "blocks.5.conv",
                   "name: sample", "0.65"):
        assert needed in html, needed
    # nothing to fetch: no scripts, stylesheets, images or fonts from elsewhere
    for attr in ("src=", "href=", "@import", "url("):
        assert attr not in html, attr


def test_pareto_front_and_ticks():
    pts = [svg.Point("a", 1, 90), svg.Point("b", 2, 95), svg.Point("c", 3, 94), svg.Point("d", 0.5, 80)]
    assert [p.label for p in svg.pareto_front(pts)] == ["d", "a", "b"]
    assert svg.nice_ticks(0, 10) == [0, 2, 4, 6, 8, 10]
    assert svg.log_ticks(0.9e6, 13e6) == [1e6, 2e6, 5e6, 1e7]


_PROBE = """<script>window.addEventListener('load', () => {
  document.body.dataset.resources = JSON.stringify(performance.getEntriesByType('resource').map(e => e.name));
  document.body.dataset.boxes = JSON.stringify([...document.querySelectorAll('svg.plot')].map(s => {
    const r = s.getBoundingClientRect(); return [s.getAttribute('aria-label'), r.x, r.y + scrollY, r.width, r.height]; }));
});</script>"""


def _chromium(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp / 'profile'}",
             "--force-device-scale-factor=1", "--hide-scrollbars", "--window-size=1280,7000"]  # same layout both runs
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)


def render_in_browser(html: str, tmp: Path) -> tuple[dict, list[tuple], np.ndarray]:
    """Open ``html`` (plus a probe script) in headless Chromium: (resources it loaded, plot boxes, screenshot)."""
    from PIL import Image

    page = tmp / "report.html"
    page.write_text(html.replace("</body>", _PROBE + "</body>"))
    dom = _chromium(["--dump-dom", page.as_uri()], tmp)
    assert dom.returncode == 0, dom.stderr[-2000:]
    import re

    body = re.search(r"<body([^>]*)>", dom.stdout).group(1)
    attrs = {k: json.loads(v.replace("&quot;", '"').replace("&amp;", "&"))
             for k, v in re.findall(r'data-(\w+)="([^"]*)"', body)}
    shot = tmp / "shot.png"
    p = _chromium([f"--screenshot={shot}", page.as_uri()], tmp)
    assert p.returncode == 0 and shot.exists(), p.stderr[-2000:]
    return attrs, attrs["boxes"], np.asarray(Image.open(shot).convert("RGB")).astype(int)


def _near(img: np.ndarray, hex_color: str, tol: int = 40) -> int:
    rgb = np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(img - rgb).sum(-1) < tol).sum())


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/setup.sh installs the Debian package)")
def test_report_renders_in_chromium(tmp_path):
    html = render_html(sample_metrics(), sample_layers(), "name: sample\n")
    attrs, boxes, img = render_in_browser(html, tmp_path)
    assert attrs["resources"] == []  # nothing loaded from anywhere (a failed fetch is listed too)
    assert len(boxes) >= 6
    for label, x, y, w, h in boxes:
        crop = img[int(y) + 2:int(y + h) - 2, int(x) + 2:int(x + w) - 2]
        assert crop.size, f"{label}: outside the screenshot"
        inked = (crop.sum(-1) < 600).mean()  # anything clearly darker than white: axes, text, marks
        assert inked > 0.01, f"{label}: blank ({inked:.3f} inked)"
        colours = sum(_near(crop, c) for k, c in svg.COLORS.items() if k in ("reference", "compressed", "shipped", "other"))
        assert colours > 40, f"{label}: no marks drawn ({colours} coloured pixels)"
    # the scatter plots draw the budget line, and the shipped model in its colour
    scatters = [b for b in boxes if b[0].startswith("Accuracy vs")]
    assert len(scatters) == 3
    for label, x, y, w, h in scatters:
        crop = img[int(y):int(y + h), int(x):int(x + w)]
        assert _near(crop, svg.COLORS["budget"]) > 100, f"{label}: no budget line"
        assert _near(crop, svg.COLORS["shipped"]) > 60, f"{label}: shipped model not marked"


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/setup.sh installs the Debian package)")
def test_browser_check_catches_blank_plots_and_external_loads(tmp_path):
    """The checks above can fail: a report with an external image and an empty plot is caught."""
    html = render_html(sample_metrics(), sample_layers(), "")
    start = html.index("<svg class='plot'")
    end = html.index("</svg>", start) + len("</svg>")
    blank = html[:start] + svg._empty("Accuracy vs nothing", 560, 360).replace("no data", "") + html[end:]
    bad = blank.replace("<h1>", "<img src='http://example.invalid/logo.png'><h1>", 1)
    attrs, boxes, img = render_in_browser(bad, tmp_path)
    assert attrs["resources"] == ["http://example.invalid/logo.png"]
    label, x, y, w, h = boxes[0]
    crop = img[int(y) + 2:int(y + h) - 2, int(x) + 2:int(x + w) - 2]
    assert sum(_near(crop, c) for c in (svg.COLORS["shipped"], svg.COLORS["compressed"], svg.COLORS["reference"])) <= 40
