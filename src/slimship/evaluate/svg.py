"""Plots as inline SVG strings (no JavaScript, no network, no plotting library): a scatter plot with error bars,
its Pareto front and a budget line; a forest plot of intervals; a heatmap; horizontal bars.

Colours are fixed (``COLORS``) so a report always looks the same and a test can find the marks in a screenshot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

COLORS = {
    "reference": "#1f5fbf",  # blue
    "compressed": "#e07b00",  # orange
    "shipped": "#1a9641",  # green
    "other": "#7f7f7f",  # grey
    "budget": "#d7191c",  # red
    "front": "#e07b00",
    "grid": "#e6e6e6",
    "axis": "#444444",
}
FONT = "font-family='system-ui, sans-serif' font-size='11'"


@dataclass(frozen=True)
class Point:
    label: str
    x: float
    y: float
    y_lo: float | None = None  # error bar (same units as y)
    y_hi: float | None = None
    role: str = "other"  # reference | compressed | shipped | other


def _finite(*v) -> bool:
    return all(isinstance(x, (int, float)) and math.isfinite(x) for x in v)


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi]."""
    if not _finite(lo, hi) or hi <= lo:
        return [lo] if _finite(lo) else []
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step - 1e-9) * step
    return [round(start + i * step, 10) for i in range(int((hi - start) / step + 1e-9) + 1)]


def log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks between ``lo`` and ``hi`` (both > 0)."""
    out = []
    for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        for m in (1, 2, 5):
            v = m * 10 ** e
            if lo <= v <= hi:
                out.append(v)
    return out or [lo, hi]


def pareto_front(points: list[Point]) -> list[Point]:
    """Points no other point beats on both axes (smaller x and higher y), sorted by x."""
    pts = sorted((p for p in points if _finite(p.x, p.y)), key=lambda p: (p.x, -p.y))
    front, best = [], -math.inf
    for p in pts:
        if p.y > best:
            front.append(p)
            best = p.y
    return front


def scatter(points: list[Point], *, title: str, x_label: str, y_label: str, log_x: bool = False,
            budget_y: float | None = None, budget_label: str = "", x_format=lambda v: f"{v:g}",
            width: int = 560, height: int = 360) -> str:
    """A scatter plot: one dot per point (error bar when given, colour by role, label beside it), the Pareto
    front as a step line, and ``budget_y`` as a dashed red line."""
    pts = [p for p in points if _finite(p.x, p.y) and (not log_x or p.x > 0)]
    left, right, top, bottom = 62, 20, 30, 48
    pw, ph = width - left - right, height - top - bottom
    if not pts:
        return _empty(title, width, height)
    xs = [p.x for p in pts]
    ys = [v for p in pts for v in (p.y, p.y_lo, p.y_hi) if _finite(v)] + ([budget_y] if _finite(budget_y) else [])
    x0, x1 = min(xs), max(xs)
    if log_x:
        x0, x1 = x0 / 1.6, x1 * 1.6
        fx = lambda v: left + pw * (math.log(v) - math.log(x0)) / (math.log(x1) - math.log(x0))  # noqa: E731
        xt = log_ticks(x0, x1)
    else:
        pad = (x1 - x0) * 0.12 or abs(x0) * 0.2 or 1.0
        x0, x1 = max(0.0, x0 - pad) if x0 >= 0 else x0 - pad, x1 + pad
        fx = lambda v: left + pw * (v - x0) / (x1 - x0)  # noqa: E731
        xt = nice_ticks(x0, x1)
    y0, y1 = min(ys), max(ys)
    ypad = (y1 - y0) * 0.12 or 1.0
    y0, y1 = y0 - ypad, y1 + ypad
    fy = lambda v: top + ph * (1 - (v - y0) / (y1 - y0))  # noqa: E731
    out = [_open(width, height, title)]
    for t in nice_ticks(y0, y1):
        out.append(f"<line x1='{left}' x2='{left + pw}' y1='{fy(t):.1f}' y2='{fy(t):.1f}' stroke='{COLORS['grid']}'/>"
                   f"<text x='{left - 6}' y='{fy(t) + 4:.1f}' text-anchor='end' {FONT}>{t:g}</text>")
    for t in xt:
        if x0 <= t <= x1:
            out.append(f"<line x1='{fx(t):.1f}' x2='{fx(t):.1f}' y1='{top}' y2='{top + ph}' stroke='{COLORS['grid']}'/>"
                       f"<text x='{fx(t):.1f}' y='{top + ph + 16}' text-anchor='middle' {FONT}>{escape(x_format(t))}</text>")
    out.append(f"<rect x='{left}' y='{top}' width='{pw}' height='{ph}' fill='none' stroke='{COLORS['axis']}'/>")
    out.append(f"<text x='{left + pw / 2}' y='{height - 8}' text-anchor='middle' {FONT}>{escape(x_label)}</text>"
               f"<text transform='translate(14 {top + ph / 2}) rotate(-90)' text-anchor='middle' {FONT}>"
               f"{escape(y_label)}</text>")
    if _finite(budget_y) and y0 <= budget_y <= y1:
        out.append(f"<line class='budget' x1='{left}' x2='{left + pw}' y1='{fy(budget_y):.1f}' y2='{fy(budget_y):.1f}' "
                   f"stroke='{COLORS['budget']}' stroke-width='2' stroke-dasharray='6 4'/>"
                   f"<text x='{left + pw - 4}' y='{fy(budget_y) - 5:.1f}' text-anchor='end' fill='{COLORS['budget']}' "
                   f"{FONT}>{escape(budget_label)}</text>")
    front = pareto_front(pts)
    if len(front) > 1:
        path = [f"M{fx(front[0].x):.1f},{fy(front[0].y):.1f}"]
        for a, b in zip(front, front[1:]):
            path.append(f"H{fx(b.x):.1f}V{fy(b.y):.1f}")
        out.append(f"<path class='front' d='{''.join(path)}' fill='none' stroke='{COLORS['front']}' "
                   f"stroke-opacity='0.55' stroke-width='1.5'/>")
    for p in sorted(pts, key=lambda p: p.role == "shipped"):
        c = COLORS.get(p.role, COLORS["other"])
        cx, cy = fx(p.x), fy(p.y)
        if _finite(p.y_lo, p.y_hi):
            out.append(f"<line x1='{cx:.1f}' x2='{cx:.1f}' y1='{fy(p.y_lo):.1f}' y2='{fy(p.y_hi):.1f}' stroke='{c}' "
                       f"stroke-width='1.5'/>")
        r = 7 if p.role == "shipped" else 5
        out.append(f"<circle class='mark {p.role}' cx='{cx:.1f}' cy='{cy:.1f}' r='{r}' fill='{c}'>"
                   f"<title>{escape(p.label)}: {x_format(p.x)}, {p.y:.2f}</title></circle>"
                   f"<text x='{cx + 8:.1f}' y='{cy - 6:.1f}' {FONT}>{escape(p.label)}</text>")
    out.append("</svg>")
    return "".join(out)


def forest(rows: list[tuple[str, float, float, float, str]], *, title: str, budget: float, x_label: str,
           width: int = 560) -> str:
    """One row per (label, estimate, low, high, role): a dot with its interval; the budget as a dashed red
    vertical line at ``-budget`` and zero as a grey one."""
    rows = [r for r in rows if _finite(r[1], r[2], r[3])]
    if not rows:
        return _empty(title, width, 120)
    left, right, top = 150, 20, 44
    height = top + 26 * len(rows) + 44
    pw = width - left - right
    vals = [v for r in rows for v in r[1:4]] + [-budget, 0.0]
    x0, x1 = min(vals), max(vals)
    pad = (x1 - x0) * 0.08 or 1.0
    x0, x1 = x0 - pad, x1 + pad
    fx = lambda v: left + pw * (v - x0) / (x1 - x0)  # noqa: E731
    bottom = top + 26 * len(rows)
    out = [_open(width, height, title)]
    for t in nice_ticks(x0, x1):
        out.append(f"<line x1='{fx(t):.1f}' x2='{fx(t):.1f}' y1='{top}' y2='{bottom}' stroke='{COLORS['grid']}'/>"
                   f"<text x='{fx(t):.1f}' y='{bottom + 16}' text-anchor='middle' {FONT}>{t:g}</text>")
    out.append(f"<line x1='{fx(0):.1f}' x2='{fx(0):.1f}' y1='{top}' y2='{bottom}' stroke='{COLORS['axis']}'/>"
               f"<line class='budget' x1='{fx(-budget):.1f}' x2='{fx(-budget):.1f}' y1='{top}' y2='{bottom}' "
               f"stroke='{COLORS['budget']}' stroke-width='2' stroke-dasharray='6 4'/>"
               f"<text x='{fx(-budget) - 4:.1f}' y='{top - 4}' text-anchor='end' fill='{COLORS['budget']}' {FONT}>"
               f"budget −{budget:g}</text>"
               f"<text x='{left + pw / 2}' y='{height - 8}' text-anchor='middle' {FONT}>{escape(x_label)}</text>")
    for i, (label, est, lo, hi, role) in enumerate(rows):
        y = top + 26 * i + 13
        c = COLORS.get(role, COLORS["other"])
        out.append(f"<text x='{left - 8}' y='{y + 4}' text-anchor='end' {FONT}>{escape(label)}</text>"
                   f"<line x1='{fx(lo):.1f}' x2='{fx(hi):.1f}' y1='{y}' y2='{y}' stroke='{c}' stroke-width='3'/>"
                   f"<circle class='mark {role}' cx='{fx(est):.1f}' cy='{y}' r='5' fill='{c}'/>")
    out.append("</svg>")
    return "".join(out)


def heatmap(matrix: list[list[int]], labels: list[str], *, title: str, cell: int = 34) -> str:
    """A confusion matrix: rows true class, columns predicted; cell shade by the row's share, counts written."""
    k = len(matrix)
    if k == 0:
        return _empty(title, 300, 120)
    left, top = 110, 40
    width, height = max(left + cell * k + 20, 8 * len(title) + 16), top + cell * k + 80
    out = [_open(width, height, title)]
    for i, row in enumerate(matrix):
        total = sum(row) or 1
        out.append(f"<text x='{left - 6}' y='{top + cell * i + cell / 2 + 4}' text-anchor='end' {FONT}>"
                   f"{escape(labels[i] if i < len(labels) else str(i))}</text>")
        for j, v in enumerate(row):
            share = v / total
            diag = i == j
            base = (31, 95, 191) if diag else (215, 25, 28)
            rgb = tuple(round(255 - (255 - c) * min(1.0, share * (1 if diag else 4))) for c in base)
            out.append(f"<rect class='cell' x='{left + cell * j}' y='{top + cell * i}' width='{cell}' height='{cell}' "
                       f"fill='rgb{rgb}' stroke='#ffffff'><title>true {i}, predicted {j}: {v}</title></rect>")
            if v:
                dark = share * (1 if diag else 4) > 0.55
                out.append(f"<text x='{left + cell * j + cell / 2}' y='{top + cell * i + cell / 2 + 4}' "
                           f"text-anchor='middle' fill='{'#ffffff' if dark else '#222222'}' font-size='10' "
                           f"font-family='system-ui, sans-serif'>{v}</text>")
    for j in range(k):
        x = left + cell * j + cell / 2
        out.append(f"<text transform='translate({x + 4} {top + cell * k + 8}) rotate(50)' {FONT}>"
                   f"{escape(labels[j] if j < len(labels) else str(j))}</text>")
    out.append("</svg>")
    return "".join(out)


def bars(rows: list[tuple[str, list[float]]], series: list[tuple[str, str]], *, title: str, x_label: str,
         width: int = 560) -> str:
    """Horizontal grouped bars: ``rows`` of (label, one value per series); ``series`` of (name, colour)."""
    rows = [r for r in rows if any(_finite(v) and v > 0 for v in r[1])]
    if not rows:
        return _empty(title, width, 120)
    left, right, top = 170, 70, 44
    bh = 8 * len(series) + 6
    height = top + bh * len(rows) + 40
    pw = width - left - right
    vmax = max(v for r in rows for v in r[1] if _finite(v))
    out = [_open(width, height, title)]
    for k, (name, color) in enumerate(series):
        out.append(f"<rect x='{left + 110 * k}' y='{top - 18}' width='10' height='10' fill='{color}'/>"
                   f"<text x='{left + 110 * k + 14}' y='{top - 9}' {FONT}>{escape(name)}</text>")
    for i, (label, vals) in enumerate(rows):
        y = top + bh * i
        out.append(f"<text x='{left - 6}' y='{y + bh / 2 + 3}' text-anchor='end' {FONT}>{escape(label[-28:])}</text>")
        for k, v in enumerate(vals):
            if _finite(v) and v > 0:
                w = max(1.0, pw * v / vmax)
                out.append(f"<rect class='bar' x='{left}' y='{y + 8 * k}' width='{w:.1f}' height='7' "
                           f"fill='{series[k][1]}'><title>{escape(label)}: {v:,.0f}</title></rect>")
    out.append(f"<text x='{left + pw / 2}' y='{height - 8}' text-anchor='middle' {FONT}>{escape(x_label)}</text>")
    out.append("</svg>")
    return "".join(out)


def _open(width: int, height: int, title: str) -> str:
    return (f"<svg class='plot' xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
            f"viewBox='0 0 {width} {height}' role='img' aria-label='{escape(title)}'>"
            f"<rect width='{width}' height='{height}' fill='#ffffff'/>"
            f"<text x='8' y='18' font-family='system-ui, sans-serif' font-size='13' font-weight='600'>"
            f"{escape(title)}</text>")


def _empty(title: str, width: int, height: int) -> str:
    return _open(width, height, title) + f"<text x='{width / 2}' y='{height / 2}' text-anchor='middle' {FONT}>no data</text></svg>"
