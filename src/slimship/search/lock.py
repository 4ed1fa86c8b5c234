"""A lock between processes sharing a run folder: the first worker transfers the model, the others wait for it
and then read the stage cache instead of training the same model again."""

from __future__ import annotations

import contextlib
from pathlib import Path


@contextlib.contextmanager
def folder_lock(path: Path):
    """Hold an exclusive lock on ``path`` (created) while the block runs; a no-op where ``fcntl`` is missing."""
    try:
        import fcntl
    except ImportError:  # not POSIX: workers may repeat the transfer, which the cache then shares
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
