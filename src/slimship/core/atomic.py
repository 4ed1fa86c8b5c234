"""Atomic file writes: a file appears complete or not at all (the brief's "nothing half-written").

The one atomic writer of the project. The bytes go to a hidden temporary file ``.{name}.tmp-{pid}-{random}``
created exclusively (``O_EXCL``) in the target's own folder, so the final ``os.replace`` is a rename on one
file system, never a copy. The file is fsynced before the rename and the folder, best effort, after it (which
makes the rename itself durable on POSIX). On any exception the temporary file is removed and the target is
untouched; a writer killed outright (SIGKILL, power loss) can leave the hidden file behind, which is safe to
delete. Readers of a folder skip hidden names.

Two ways to fill the file::

    write_atomically("out/metrics.json", lambda tmp: tmp.write_text(text))     # by path (any library)
    n = write_stream_atomically("out/model.slim", lambda f: f.write(data))     # into the open binary file

Both take ``verify(tmp)``, called on the complete, synced temporary file before the rename: whatever it raises
aborts the write.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import IO, Callable, TypeVar

from slimship.core.errors import SlimshipError

T = TypeVar("T")


def temp_name(name: str) -> str:
    """The hidden temporary name a file called ``name`` is written under before it is renamed."""
    return f".{name[:200]}.tmp-{os.getpid()}-{secrets.token_hex(4)}"


def write_atomically(
    target: str | os.PathLike,
    write: Callable[[Path], object],
    *,
    verify: Callable[[Path], object] | None = None,
    error: type[SlimshipError] = SlimshipError,
) -> None:
    """``write(tmp)`` fills a hidden temporary file next to ``target`` by its path (it may reopen or truncate
    it); the file is fsynced, checked by ``verify(tmp)`` if given, and renamed over ``target``.

    Missing parent folders are created. Raises ``error`` (a SlimshipError subclass) when the folder cannot be
    created, the temporary file cannot be created there, a write is refused for lack of permission, or
    ``target`` is a folder; anything else (a full disk, whatever ``write`` or ``verify`` raises) propagates
    as it is, after the temporary file was removed.
    """

    def fill(tmp: Path, f: IO[bytes]) -> None:
        f.close()  # the callback writes by path; the file is reopened for the fsync
        write(tmp)
        with open(tmp, "rb+") as g:
            _fsync(g.fileno())

    _commit(target, fill, verify, error)


def write_stream_atomically(
    target: str | os.PathLike,
    fill: Callable[[IO[bytes]], T],
    *,
    verify: Callable[[Path], object] | None = None,
    error: type[SlimshipError] = SlimshipError,
) -> T:
    """Like :func:`write_atomically`, but ``fill(f)`` writes into the open binary temporary file; returns what
    ``fill`` returns."""

    def body(tmp: Path, f: IO[bytes]) -> T:
        with f:
            result = fill(f)
            f.flush()
            _fsync(f.fileno())
        return result

    return _commit(target, body, verify, error)


def write_bytes_atomically(
    target: str | os.PathLike, data: bytes, *, error: type[SlimshipError] = SlimshipError
) -> None:
    write_stream_atomically(target, lambda f: f.write(data), error=error)


def write_text_atomically(target: str | os.PathLike, text: str) -> None:
    write_atomically(target, lambda tmp: tmp.write_text(text))


def _commit(
    target: str | os.PathLike,
    body: Callable[[Path, IO[bytes]], T],
    verify: Callable[[Path], object] | None,
    error: type[SlimshipError],
) -> T:
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise error(f"cannot create the folder {target.parent} ({e.strerror or e}): check the path") from None
    if target.is_dir():
        raise error(f"{target} is a folder: give a file name")
    tmp = target.with_name(temp_name(target.name))
    try:
        # O_EXCL: never write into a file some other writer created under the same (random) name
        f = open(tmp, "xb")
    except OSError as e:  # nothing was written yet: the folder cannot take a new file (permissions, read-only)
        raise _cannot_write(error, target, e) from None
    try:
        result = body(tmp, f)
        if verify is not None:
            verify(tmp)
        os.replace(tmp, target)
    except PermissionError as e:
        f.close()
        _remove(tmp)
        raise _cannot_write(error, target, e) from None
    except BaseException:
        f.close()
        _remove(tmp)
        raise
    _fsync_dir(target.parent)
    return result


def _cannot_write(error: type[SlimshipError], target: Path, e: OSError) -> SlimshipError:
    return error(f"cannot write {target} ({e.strerror or e}): check the folder and its permissions")


def _fsync(fd: int) -> None:
    os.fsync(fd)


def fsync_dir(directory: Path) -> None:
    """Make the renames and removals in ``directory`` durable (best effort)."""
    _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable on POSIX; not possible (nor needed) everywhere, so best effort.
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
