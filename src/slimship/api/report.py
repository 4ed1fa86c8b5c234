"""``write_html_report(DIR)``: the self-contained HTML report of a run folder (``slimship report``, and the last
step of ``run``). Reads DIR/metrics.json and the shipped and reference packages (per-layer bytes)."""

from __future__ import annotations

import json
from pathlib import Path

from slimship.core.atomic import write_text_atomically
from slimship.core.errors import PackageError, SlimshipError


def _package_path(out: Path, entry: dict) -> Path | None:
    """The package of a metrics entry: its recorded path, else the same name under OUT/packages (a moved folder)."""
    recorded = Path(entry.get("package") or "")
    for p in (recorded, out / "packages" / recorded.name):
        if p.name and p.is_file():
            return p
    return None


def load_metrics(out: str | Path) -> dict:
    """DIR/metrics.json, or a one-line SlimshipError that says what to do."""
    path = Path(out) / "metrics.json"
    if not path.is_file():
        raise SlimshipError(f"{path} not found: pass the --out folder of a finished `slimship run`")
    try:
        metrics = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SlimshipError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}): re-run the recipe") from None
    if not isinstance(metrics, dict) or "models" not in metrics or "selected" not in metrics:
        raise SlimshipError(f"{path} is not a slimship run's metrics (no models / selected): pass a run folder")
    return metrics


def write_html_report(out: str | Path, target: str | Path | None = None) -> Path:
    """Write the HTML report of the run in ``out`` to ``target`` (default OUT/report.html); returns its path."""
    import yaml

    from slimship.evaluate.html import layer_rows, render_html
    from slimship.package.layer_bytes import layer_bytes

    out = Path(out)
    metrics = load_metrics(out)
    layers = {}
    for name in dict.fromkeys([metrics["selected"], metrics["reference"]]):
        entry = next((e for e in metrics["models"] if e["name"] == name), None)
        path = _package_path(out, entry) if entry else None
        if path is None:
            continue
        try:
            layers[name] = layer_rows(layer_bytes(path))
        except PackageError:
            continue  # a damaged package: the report is still written, without its layers
    spec = metrics.get("recipe_spec")
    recipe_yaml = yaml.safe_dump(spec, sort_keys=False, width=110) if spec else ""
    target = Path(target) if target else out / "report.html"
    write_text_atomically(target, render_html(metrics, layers, recipe_yaml))
    return target
