"""How many threads a runtime may use (one place, so every runtime agrees)."""

from __future__ import annotations

import os


def cpu_threads() -> int:
    """Threads a runtime may use: ``SLIMSHIP_THREADS`` if set, else every core."""
    return int(os.environ.get("SLIMSHIP_THREADS", os.cpu_count() or 1))
