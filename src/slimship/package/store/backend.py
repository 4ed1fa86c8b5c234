"""Storage access: a local folder (standard library, atomic renames) or any fsspec URL (imported on use)."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
from pathlib import Path
from urllib.parse import unquote, urlparse

from slimship.core.atomic import temp_name, write_bytes_atomically
from slimship.core.errors import PackageError

# A single PUT of a whole object is atomic on these (readers see no object or the complete one), so a
# temp-name-then-rename (a copy plus a delete on object stores) would only add requests.
_ATOMIC_PUT_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "memory"})


def storage_options_from_env(url: str | os.PathLike[str]) -> dict | None:
    """fsspec options taken from the environment, for the CLI: ``SLIMSHIP_S3_ENDPOINT`` sets the
    endpoint of ``s3://`` stores (MinIO, moto, a local gateway). None where nothing applies."""
    endpoint = os.environ.get("SLIMSHIP_S3_ENDPOINT")
    if endpoint and _scheme(os.fspath(url)) in ("s3", "s3a"):
        return {"client_kwargs": {"endpoint_url": endpoint}}
    return None


class _Missing(Exception):
    """Internal: the key does not exist in the store."""


class _LocalBackend:
    """A store in a local folder, standard library only. Writes go through :mod:`slimship.core.atomic` (a
    hidden temporary file in the target's folder, fsynced and renamed over the target), so readers see all
    or nothing."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def root_exists(self) -> bool:
        return self.root.is_dir()

    def read(self, key: str) -> bytes:
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError:
            raise _Missing(key) from None

    def size(self, key: str) -> int | None:
        try:
            st = os.stat(self.root / key)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return st.st_size if stat.S_ISREG(st.st_mode) else None

    def write(self, key: str, data: bytes) -> None:
        write_bytes_atomically(self.root / key, data, error=PackageError)

    def create(self, key: str, data: bytes) -> bool:
        """Write ``key`` only if it does not exist; False (nothing written) if it does. Atomic against
        concurrent creators, also in other processes: the bytes go to a temporary file that is then hard-linked
        to the key, which fails if the key exists (on file systems without hard links: an O_EXCL create)."""
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(temp_name(target.name))
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, target)
            return True
        except FileExistsError:
            return False
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK, errno.EXDEV):
                raise
            return _create_exclusive(target, data)  # no hard links here
        finally:
            tmp.unlink(missing_ok=True)

    def digest(self, key: str) -> str:
        """SHA-256 of ``key``'s bytes, read in chunks."""
        h = hashlib.sha256()
        try:
            with open(self.root / key, "rb") as f:
                while chunk := f.read(2**20):
                    h.update(chunk)
        except FileNotFoundError:
            raise _Missing(key) from None
        return h.hexdigest()

    def list(self, key: str) -> list[str]:
        try:
            names = os.listdir(self.root / key)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(n for n in names if not n.startswith("."))  # hidden = temporary files

    def sizes(self, key: str) -> dict[str, int]:
        out = {}
        for folder, _, files in os.walk(self.root / key):
            for f in files:
                if not f.startswith("."):
                    path = Path(folder) / f
                    out[path.relative_to(self.root).as_posix()] = path.stat().st_size
        return out


class _FsspecBackend:
    """A store under an fsspec URL. On object stores one ``pipe_file`` (one PUT) is atomic; on other
    file systems (sftp, smb...) a temporary name is written and moved over the target."""

    def __init__(self, url: str, storage_options: dict) -> None:
        try:
            import fsspec
        except ImportError:
            raise PackageError(
                f"store {url} needs the fsspec package: pip install fsspec (plus s3fs for s3:// URLs), "
                "or use a local folder"
            ) from None
        try:
            self.fs, root = fsspec.core.url_to_fs(url, **storage_options)
        except ImportError as e:
            raise PackageError(f"store {url} needs another package ({' '.join(str(e).split())}): install it with pip") from None
        except (ValueError, TypeError) as e:
            raise PackageError(f"store {url} cannot be opened ({' '.join(str(e).split())}): use a folder or an fsspec URL such as s3://bucket/prefix") from None
        self.root = root.rstrip("/")
        protocols = self.fs.protocol if isinstance(self.fs.protocol, (tuple, list)) else (self.fs.protocol,)
        self.atomic_put = any(p in _ATOMIC_PUT_PROTOCOLS for p in protocols)

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}" if key else self.root

    def root_exists(self) -> bool:
        return bool(self.fs.exists(self.root))

    def read(self, key: str) -> bytes:
        try:
            return self.fs.cat_file(self._path(key))
        except FileNotFoundError:
            raise _Missing(key) from None

    def size(self, key: str) -> int | None:
        try:
            info = self.fs.info(self._path(key))
        except FileNotFoundError:
            return None
        return int(info["size"]) if info.get("type") == "file" else None

    def write(self, key: str, data: bytes) -> None:
        path = self._path(key)
        if self.atomic_put:
            self.fs.pipe_file(path, data)
            return
        parent, _, leaf = path.rpartition("/")
        self.fs.makedirs(parent, exist_ok=True)
        tmp = f"{parent}/{temp_name(leaf)}"
        self.fs.pipe_file(tmp, data)
        self.fs.mv(tmp, path)

    def create(self, key: str, data: bytes) -> bool:
        """Write ``key`` only if it does not exist; False (nothing written) if it does. On S3 (and the memory
        file system) this is one conditional PUT (``If-None-Match: *``), atomic against concurrent creators; on
        file systems without conditional writes fsspec checks, then writes."""
        path = self._path(key)
        if not self.atomic_put:
            self.fs.makedirs(path.rpartition("/")[0], exist_ok=True)
        try:
            self.fs.pipe_file(path, data, mode="create")
        except FileExistsError:
            return False
        return True

    def digest(self, key: str) -> str:
        """SHA-256 of ``key``'s bytes, read in chunks."""
        h = hashlib.sha256()
        try:
            with self.fs.open(self._path(key), "rb") as f:
                while chunk := f.read(2**20):
                    h.update(chunk)
        except FileNotFoundError:
            raise _Missing(key) from None
        return h.hexdigest()

    def list(self, key: str) -> list[str]:
        path = self._path(key)
        self.fs.invalidate_cache(path)  # listings are cached per instance; another process may have pushed
        try:
            entries = self.fs.ls(path, detail=False)
        except (FileNotFoundError, NotADirectoryError):
            return []
        # Some object stores list a prefix's own "folder" marker among its children.
        children = [str(e).rstrip("/") for e in entries if str(e).strip("/") != path.strip("/")]
        names = {c.rsplit("/", 1)[-1] for c in children}
        return sorted(n for n in names if n and not n.startswith("."))  # hidden = temporary files

    def sizes(self, key: str) -> dict[str, int]:
        path = self._path(key)
        self.fs.invalidate_cache(path)
        try:
            found = self.fs.find(path, detail=True)
        except FileNotFoundError:
            return {}
        prefix = self.root + "/"
        return {
            str(p)[len(prefix):] if str(p).startswith(prefix) else str(p): int(i.get("size") or 0)
            for p, i in found.items()
            if not str(p).rsplit("/", 1)[-1].startswith(".")
        }


def _create_exclusive(target: Path, data: bytes) -> bool:
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return True


def _open_backend(url: str, storage_options: dict) -> _LocalBackend | _FsspecBackend:
    scheme = _scheme(url)
    if scheme is None:
        return _LocalBackend(Path(url))
    if scheme == "file":
        # The local backend renames atomically; fsspec's LocalFileSystem writes in place.
        parsed = urlparse(url)
        if parsed.netloc not in ("", "localhost"):
            raise PackageError(f"store {url} names a remote host in a file:// URL: use file:///absolute/path")
        return _LocalBackend(Path(unquote(parsed.path)))
    return _FsspecBackend(url, storage_options)


def _scheme(url: str) -> str | None:
    match = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", url)
    return match.group(1).lower() if match else None
