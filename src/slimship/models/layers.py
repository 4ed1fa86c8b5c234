"""Building blocks that structural edits put into a model, so a model rebuilds from its recorded edits
(:mod:`slimship.models.rebuild`) without the compression code that made them."""

from __future__ import annotations


def make_lowrank(kind: str, in_f: int, rank: int, out_f: int, bias: bool):
    """A factored layer: two smaller layers (``[r, in]`` then ``[out, r]``) in place of one ``[out, in]``.

    ``kind`` is "conv" (two 1×1 convolutions) or "linear". The module carries ``lowrank`` (its sizes), which is
    what :func:`slimship.models.rebuild.structure` records.
    """
    from torch import nn

    class LowRank(nn.Sequential):
        lowrank = {"kind": kind, "in": in_f, "rank": rank, "out": out_f, "bias": bias}

    if kind == "conv":
        return LowRank(nn.Conv2d(in_f, rank, 1, bias=False), nn.Conv2d(rank, out_f, 1, bias=bias))
    return LowRank(nn.Linear(in_f, rank, bias=False), nn.Linear(rank, out_f, bias=bias))


def keep_linear_(m, index, dim: int) -> None:
    """Keep rows (``dim=0``: outputs) or columns (``dim=1``: inputs) ``index`` of the ``nn.Linear`` ``m``, in
    place: its weight (and, for outputs, its bias) really shrink, and its size attributes follow."""
    import torch
    from torch import nn

    index = torch.as_tensor(index, dtype=torch.long, device=m.weight.device)
    with torch.no_grad():
        m.weight = nn.Parameter(m.weight.index_select(dim, index).clone(), requires_grad=m.weight.requires_grad)
        if dim == 0 and m.bias is not None:
            m.bias = nn.Parameter(m.bias.index_select(0, index).clone(), requires_grad=m.bias.requires_grad)
    m.out_features, m.in_features = m.weight.shape
