"""Per-layer sensitivity: what each layer costs in validation accuracy under a method, and the allocation
of one global target (sparsity) across layers from those costs instead of one number for all.

The measurement perturbs one layer at a time (the rest untouched), evaluates on a validation subset, and
restores the layer. The allocation is greedy: repeatedly take the layer step (to its next sparsity level)
with the smallest accuracy cost per weight removed, until the global target is met.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from torch import nn


def prune_sensitivity(layers: dict[str, nn.Module], levels: list[float],
                      evaluate: Callable[[], float]) -> tuple[float, dict[str, dict[float, float]]]:
    """Accuracy drop (0-1) of magnitude-pruning each layer alone at each level; returns (baseline, table)."""
    import torch

    base = evaluate()
    table: dict[str, dict[float, float]] = {}
    for name, m in layers.items():
        saved = m.weight.detach().clone()
        flat = saved.abs().flatten()
        table[name] = {}
        for s in levels:
            k = int(round(s * flat.numel()))
            if k <= 0:
                table[name][s] = 0.0
                continue
            thr = flat.kthvalue(k).values
            with torch.no_grad():
                m.weight.mul_(saved.abs() > thr)
            table[name][s] = max(0.0, base - evaluate())
            with torch.no_grad():
                m.weight.copy_(saved)
    return base, table


def allocate_sparsity(table: dict[str, dict[float, float]], sizes: dict[str, int], target: float) -> dict[str, float]:
    """Per-layer sparsities whose weighted mean reaches ``target`` at the least summed measured cost."""
    total = sum(sizes.values())
    need = target * total
    cur = {n: 0.0 for n in table}
    removed = 0.0
    while removed < need - 1e-9:
        best = None
        for n, costs in table.items():
            nxt = [s for s in sorted(costs) if s > cur[n]]
            if not nxt:
                continue
            s = nxt[0]
            gain = (s - cur[n]) * sizes[n]
            cost = costs[s] - _cost_at(costs, cur[n])
            score = cost / gain
            if best is None or score < best[0]:
                best = (score, n, s, gain)
        if best is None:
            break  # every layer at its cap: the target cannot be met within the levels
        _, n, s, gain = best
        if removed + gain > need:  # last step: go only as far as the target needs (linear in between)
            s = cur[n] + (need - removed) / sizes[n]
            gain = need - removed
        cur[n] = round(s, 6)
        removed += gain
    return cur


def _cost_at(costs: dict[float, float], s: float) -> float:
    """Measured cost at sparsity ``s``, linearly interpolated between measured levels (0 at 0)."""
    pts = [(0.0, 0.0)] + sorted(costs.items())
    for (s0, c0), (s1, c1) in zip(pts, pts[1:]):
        if s0 <= s <= s1:
            return c0 + (c1 - c0) * (s - s0) / max(s1 - s0, 1e-12)
    return pts[-1][1]
