"""``--time`` values: seconds (``3600``), or a number with a unit (``45m``, ``1.5h``, ``1h30m``, ``90s``)."""

from __future__ import annotations

import re

from slimship.core.errors import SlimshipError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")


def parse_duration(text: str) -> float:
    """Seconds in ``text``; raises SlimshipError when it is not a duration."""
    s = str(text).strip().lower().replace(" ", "")
    parts = _PART.findall(s)
    if not s or "".join(n + u for n, u in parts) != s or (len(parts) > 1 and any(not u for _, u in parts)):
        raise SlimshipError(f"--time {text!r} is not a duration: give seconds (3600) or e.g. 45m, 1.5h, 1h30m")
    total = sum(float(n) * _UNITS[u or "s"] for n, u in parts)
    if total <= 0:
        raise SlimshipError(f"--time {text!r} must be more than zero")
    return total
