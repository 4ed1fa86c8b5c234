"""Files slimship writes where the user says (``pull -o``, ``export --onnx/--safetensors``): never over a file it
did not make unless asked (``--force``), and never over anything but a regular file.

Writes stay atomic (:mod:`slimship.core.atomic`); :func:`may_replace` is their ``verify`` hook, called on the
finished temporary file just before it would replace the target.
"""

from __future__ import annotations

import filecmp
import os
import stat
from pathlib import Path

from slimship.core.errors import PackageError


def check_target(target: str | os.PathLike[str]) -> None:
    """Refuse ``target`` early when it exists and is not a regular file: a device, FIFO or socket is never
    replaced (as root, an atomic rename would put a plain file where /dev/null was)."""
    try:
        mode = os.stat(target).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as e:
        raise PackageError(f"cannot use {target} ({e.strerror or e}): choose another path") from None
    if stat.S_ISDIR(mode):
        raise PackageError(f"{target} is a folder: give a file name")
    if not stat.S_ISREG(mode):
        raise PackageError(f"{target} is not a regular file (a device, FIFO or socket): choose another path")


def may_replace(target: str | os.PathLike[str], new: Path, force: bool) -> None:
    """Let the finished file ``new`` replace ``target`` only if ``target`` does not exist, holds the same bytes,
    or ``force`` is set; raise PackageError otherwise (``new`` is then removed by the atomic writer)."""
    check_target(target)
    if force or not os.path.exists(target) or filecmp.cmp(target, new, shallow=False):
        return
    raise PackageError(f"{target} already exists and holds something else: pass --force to replace it, or choose "
                       "another path")
