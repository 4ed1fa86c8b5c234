"""The comparison table printed at the end of a run."""

from __future__ import annotations


def print_table(metrics: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from slimship.evaluate.report import (RUNTIME_COLUMNS, columns, comparison_rows, decision_lines, large_batch,
                                          refit_columns, refit_rows, refit_summary, runtime_rows)
    from slimship.evaluate.runtime_choice import describe

    c = Console(width=max(160, Console().width))
    for title, cols, rows in [
        (f"slimship: {metrics['recipe']} (test accuracy, package bytes, CPU latency in the runtime each ships for)",
         columns(metrics), comparison_rows(metrics)),
        ("every model in every runtime", RUNTIME_COLUMNS, runtime_rows(metrics)),
        ("refit on training + validation (test accuracy; speed-ups against the refit fine-tune)",
         refit_columns(metrics), refit_rows(metrics)),
    ]:
        if not rows:
            continue
        t = Table(title=title)
        for _, h in cols:
            t.add_column(h, justify="left" if h in ("model", "runtime") else "right")
        for r in rows:
            t.add_row(*(r[k] for k, _ in cols))
        c.print(t)
    ref = next(e for e in metrics["models"] if e["name"] == metrics["reference"])
    sc = next((e for e in metrics["models"] if e["name"] == "scratch"), None)
    if sc:
        c.print(f"transfer vs scratch: {100 * ref['accuracy']:.2f} % vs {100 * sc['accuracy']:.2f} % "
                f"({100 * (ref['accuracy'] - sc['accuracy']):+.2f} points)")
    pt = ref.get("pytorch_eager_latency_ms")
    if pt:
        big = large_batch(metrics)
        c.print(f"dense in PyTorch eager: {pt.get('batch1', 0):.2f} ms (b1), {pt.get(big, 0):.1f} ms (b{big[5:]})")
    for line in decision_lines(metrics):
        c.print(line, highlight=False, markup=False)
    win = next(e for e in metrics["models"] if e["name"] == metrics["selected"])
    refit = metrics.get("refit") or {}
    if refit:
        c.print(refit_summary(metrics), highlight=False, markup=False)
    if refit.get("models"):  # model.slim is the refit shipped model, compared with the refit reference
        by = {e["name"]: e for e in refit["models"]}
        win, ref = by[refit["shipped"]], by[refit["reference"]]
    c.print(f"shipped: {metrics['package']} = {win['name']}: {100 * win['accuracy']:.2f} % "
            f"({100 * (win['accuracy'] - ref['accuracy']):+.2f} vs dense), {win['size_bytes']:,} bytes "
            f"({ref['size_bytes'] / win['size_bytes']:.2f}x smaller), runs in "
            f"{describe(win.get('runtime_by_batch', {}), win.get('runtime', 'onnxruntime'))}")
