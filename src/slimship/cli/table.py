"""The comparison table printed at the end of a run."""

from __future__ import annotations


def print_table(metrics: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from slimship.evaluate.report import COLUMNS, large_batch, columns, comparison_rows

    t = Table(title=f"slimship: {metrics['recipe']} (test accuracy, package bytes, ONNX Runtime CPU latency)")
    for _, h in columns(metrics):
        t.add_column(h, justify="left" if h == "model" else "right")
    for r in comparison_rows(metrics):
        t.add_row(*(r[k] for k, _ in COLUMNS))
    c = Console(width=max(160, Console().width))
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
    win = next(e for e in metrics["models"] if e["name"] == metrics["selected"])
    c.print(f"shipped: {metrics['package']} = {win['name']}: {100 * win['accuracy']:.2f} % "
            f"({100 * (win['accuracy'] - ref['accuracy']):+.2f} vs dense), {win['size_bytes']:,} bytes "
            f"({ref['size_bytes'] / win['size_bytes']:.2f}x smaller)")
