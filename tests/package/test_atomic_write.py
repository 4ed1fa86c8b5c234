"""The one atomic writer (slimship.core.atomic), as packages and the local store use it: complete or absent,
never a temporary file left behind, and a folder that cannot be written reported in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from slimship.core import atomic
from slimship.core.atomic import write_atomically, write_bytes_atomically, write_stream_atomically
from slimship.core.errors import PackageError, SlimshipError


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_stream_and_path_writers_replace_the_target_and_sync_file_and_folder(tmp_path, monkeypatch):
    synced: list[object] = []
    monkeypatch.setattr(atomic, "_fsync", lambda fd: synced.append("file"))
    monkeypatch.setattr(atomic, "_fsync_dir", lambda d: synced.append(d))
    target = tmp_path / "sub" / "a.bin"  # missing folders are created
    assert write_stream_atomically(target, lambda f: f.write(b"one")) == 3
    assert target.read_bytes() == b"one" and synced == ["file", target.parent]
    write_atomically(target, lambda tmp: tmp.write_bytes(b"two"))  # by path, over the old file
    assert target.read_bytes() == b"two" and synced[2:] == ["file", target.parent]
    assert _names(target.parent) == ["a.bin"]


@pytest.mark.parametrize("failure", ["fill", "verify", "replace"])
def test_any_failure_keeps_the_old_file_and_removes_the_temporary_one(tmp_path, monkeypatch, failure):
    target = tmp_path / "m.slim"
    target.write_bytes(b"old")
    seen: list[str] = []

    def boom(*args):
        seen.extend(n for n in _names(tmp_path) if n.startswith(".m.slim.tmp-"))
        raise OSError(28, "No space left on device")

    if failure == "replace":
        monkeypatch.setattr(atomic.os, "replace", boom)

    def fill(f):
        f.write(b"new")
        if failure == "fill":
            boom()

    with pytest.raises(OSError, match="No space"):  # not a permission problem: propagates as it is
        write_stream_atomically(target, fill, verify=boom if failure == "verify" else None)
    assert len(seen) == 1 and target.read_bytes() == b"old" and _names(tmp_path) == ["m.slim"]


def test_permission_problems_are_one_line_errors_of_the_callers_type(tmp_path, monkeypatch):
    def denied(tmp):
        raise PermissionError(13, "Permission denied")

    with pytest.raises(SlimshipError, match=r"cannot write .*a\.txt \(Permission denied\): check the folder"):
        write_atomically(tmp_path / "a.txt", denied)
    with pytest.raises(PackageError, match="cannot write"):
        write_atomically(tmp_path / "a.txt", denied, error=PackageError)
    assert _names(tmp_path) == []

    (tmp_path / "file").write_text("x")
    with pytest.raises(PackageError, match="cannot create the folder"):
        write_bytes_atomically(tmp_path / "file" / "b.bin", b"", error=PackageError)
    with pytest.raises(SlimshipError, match="is a folder"):
        write_bytes_atomically(tmp_path, b"")


def test_the_temporary_file_is_created_exclusively(tmp_path, monkeypatch):
    taken = tmp_path / ".a.bin.tmp-taken"
    taken.write_bytes(b"someone else's")
    monkeypatch.setattr(atomic, "temp_name", lambda name: taken.name)
    with pytest.raises(SlimshipError, match="cannot write"):
        write_bytes_atomically(tmp_path / "a.bin", b"mine")
    assert taken.read_bytes() == b"someone else's" and not (tmp_path / "a.bin").exists()


def test_a_local_store_writes_through_the_atomic_writer(tmp_path, monkeypatch):
    from slimship.package.store.backend import _LocalBackend

    written: list[Path] = []
    real = atomic.write_stream_atomically

    def spy(target, *args, **kwargs):
        written.append(Path(target))
        return real(target, *args, **kwargs)

    monkeypatch.setattr(atomic, "write_stream_atomically", spy)
    _LocalBackend(tmp_path).write("blobs/sha256/ab/cd", b"data")
    assert written == [tmp_path / "blobs/sha256/ab/cd"] and (tmp_path / "blobs/sha256/ab/cd").read_bytes() == b"data"
    assert _names(tmp_path / "blobs/sha256/ab") == ["cd"]
