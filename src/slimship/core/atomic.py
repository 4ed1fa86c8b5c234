"""Atomic file writes: a file appears complete or not at all (the brief's "nothing half-written")."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Callable

from slimship.core.errors import SlimshipError


def write_atomically(target: str | os.PathLike, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` fills a hidden temporary file next to ``target``, which is fsynced and renamed over
    ``target``; the temporary file is removed if anything fails (the target is then untouched)."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SlimshipError(f"cannot create the folder {target.parent} ({e.strerror or e}): check the path") from None
    if target.is_dir():
        raise SlimshipError(f"{target} is a folder: give a file name")
    tmp = target.with_name(f".{target.name[:200]}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except PermissionError as e:
        _remove(tmp)
        raise SlimshipError(f"cannot write {target} ({e.strerror or e}): check the folder's permissions") from None
    except BaseException:
        _remove(tmp)
        raise


def write_bytes_atomically(target: str | os.PathLike, data: bytes) -> None:
    write_atomically(target, lambda tmp: tmp.write_bytes(data))


def write_text_atomically(target: str | os.PathLike, text: str) -> None:
    write_atomically(target, lambda tmp: tmp.write_text(text))


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
