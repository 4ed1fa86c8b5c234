"""metrics.json as people read it: indented objects, but a list of numbers (a confusion-matrix row, an interval,
a per-class accuracy) on one line, so a 10-class confusion matrix is 10 lines, not 120."""

from __future__ import annotations

import json
import math


def _scalar(v) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def _clean(v):
    """NaN/inf are not JSON: written as null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def dumps(obj, indent: int = 2, default=str) -> str:
    """``json.dumps(obj, indent=indent)``, except that lists of scalars stay on one line."""

    def enc(v, level: int) -> str:
        pad, inner = " " * (indent * level), " " * (indent * (level + 1))
        if isinstance(v, dict):
            if not v:
                return "{}"
            items = [f"{inner}{json.dumps(str(k))}: {enc(x, level + 1)}" for k, x in v.items()]
            return "{\n" + ",\n".join(items) + "\n" + pad + "}"
        if isinstance(v, (list, tuple)):
            if all(_scalar(x) for x in v):
                return "[" + ", ".join(json.dumps(_clean(x)) for x in v) + "]"
            if not v:
                return "[]"
            return "[\n" + ",\n".join(inner + enc(x, level + 1) for x in v) + "\n" + pad + "]"
        if _scalar(v):
            return json.dumps(_clean(v))
        if hasattr(v, "item") and getattr(v, "ndim", None) == 0:  # a numpy scalar
            return enc(v.item(), level)
        if hasattr(v, "tolist"):  # a numpy array
            return enc(v.tolist(), level)
        return json.dumps(default(v))

    return enc(obj, 0)
