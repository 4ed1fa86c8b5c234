"""A content-addressed model store for .slim packages, on a local folder or any fsspec URL.

Layout under the store root (a folder, or a prefix such as ``s3://bucket/models``)::

    slimship-store.json       {"format": "slimship-store", "version": 1}
    blobs/sha256/<hex>        bytes named by their SHA-256: a package's header region (prefix + header
                              JSON) and each part's *stored* (encoded) bytes, each kept once
    packages/<id>.json        package record: manifest, header blob, parts (raw sha256, codec, sizes,
                              blob) and the trailer; <id> = SHA-256 of the whole .slim file
    refs/<name>/<version>     text: the <id> the version points at
    refs/<name>/latest        text: the <id> of the last version pushed under <name>

Pushing writes blobs, then the record, then the refs, each as one atomic write, so a reader never
finds a ref whose package is incomplete. Pulling verifies every blob's SHA-256, re-assembles the
file, checks that its SHA-256 is the package id and runs :func:`verify_package` on it before moving
it into place. Every problem is a one-line :class:`PackageError`.

A local folder needs only the standard library; fsspec is imported only for URLs with a scheme
(``file://`` URLs are treated as local folders). This module never imports torch.
Full description: docs/package-format.md, section "Store".
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import secrets
import stat
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import unquote, urlparse

from slimship.errors import PackageError
from slimship.package.format import _PREFIX, _TRAILER_LEN, read_package, verify_package

STORE_FORMAT_VERSION = 1
LATEST = "latest"
MIN_DIGEST_PREFIX = 12

_MARKER = "slimship-store.json"
_BLOBS = "blobs/sha256"
_PACKAGES = "packages"
_REFS = "refs"
_RECORD_FORMAT = "slimship-package-record"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_MAX_RECORD_BYTES = 64 * 2**20  # a record holds the manifest (≤ 16 MiB header) plus a few lines per part
# A single PUT of a whole object is atomic on these (readers see no object or the complete one), so a
# temp-name-then-rename (a copy plus a delete on object stores) would only add requests.
_ATOMIC_PUT_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "memory"})


# ------------------------------------------------------------------------------------ public types


@dataclass(frozen=True)
class PushResult:
    """What :meth:`Store.push` did. ``package`` is the package id (SHA-256 of the whole file)."""

    name: str
    version: str
    package: str
    size_bytes: int
    blobs_written: int
    bytes_written: int


@dataclass(frozen=True)
class PullResult:
    """What :meth:`Store.pull` wrote: ``path`` holds the verified, byte-identical package."""

    name: str
    version: str
    package: str
    path: str
    size_bytes: int


@dataclass(frozen=True)
class StoreEntry:
    """One ``name@version`` in a store; ``latest`` is True where ``name`` alone resolves to it."""

    name: str
    version: str
    package: str
    size_bytes: int
    latest: bool
    created: str | None


def parse_ref(ref: str) -> tuple[str, str | None, str | None]:
    """Split ``NAME``, ``NAME@VERSION`` or ``NAME@sha256:HEX`` into (name, version, digest prefix).

    At most one of version and digest is set; ``NAME@latest`` gives version None (= latest). The
    digest is lowercased and must be 12 to 64 hex characters. Raises PackageError on bad syntax.
    """
    if not isinstance(ref, str) or not ref:
        raise PackageError("empty package reference: use NAME, NAME@VERSION or NAME@sha256:HEX")
    name, sep, rest = ref.partition("@")
    _check_component(name, "package name", ref)
    if not sep:
        return name, None, None
    if rest.startswith("sha256:"):
        digest = rest[len("sha256:") :].lower()
        if not re.fullmatch(rf"[0-9a-f]{{{MIN_DIGEST_PREFIX},64}}", digest):
            raise PackageError(
                f"bad digest in {ref!r}: after sha256: give {MIN_DIGEST_PREFIX} to 64 hex characters"
            )
        return name, None, digest
    _check_component(rest, "version", ref)
    return name, (None if rest == LATEST else rest), None


def storage_options_from_env(url: str | os.PathLike[str]) -> dict | None:
    """fsspec options taken from the environment, for the CLI: ``SLIMSHIP_S3_ENDPOINT`` sets the
    endpoint of ``s3://`` stores (MinIO, moto, a local gateway). None where nothing applies."""
    endpoint = os.environ.get("SLIMSHIP_S3_ENDPOINT")
    if endpoint and _scheme(os.fspath(url)) in ("s3", "s3a"):
        return {"client_kwargs": {"endpoint_url": endpoint}}
    return None


# ------------------------------------------------------------------------------------------- store


class Store:
    """A model store at ``url``: a local folder path, a ``file://`` URL, or any fsspec URL
    (``s3://bucket/prefix``, ``memory://name``...). ``storage_options`` go to fsspec unchanged
    (e.g. ``{"client_kwargs": {"endpoint_url": ...}}`` for an S3-compatible server).

    Creating a Store touches nothing; :meth:`push` creates the store on first use, the read
    operations refuse a location that is not a store.
    """

    def __init__(self, url: str | os.PathLike[str], storage_options: dict | None = None) -> None:
        self.url = os.fspath(url)
        self._backend = _open_backend(self.url, storage_options or {})

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    # ---------------------------------------------------------------------------------- push

    def push(self, package: str | os.PathLike[str], name: str | None = None,
             version: str | None = None) -> PushResult:
        """Store the package file ``package`` as ``name@version`` and make it ``name``'s latest.

        ``name`` defaults to the file's stem, ``version`` to the first 12 hex characters of the package
        id. The package is fully verified first. Pushing the same package to the same version again is
        a no-op apart from moving ``latest``; a version already pointing at another package is refused
        (versions are immutable). Order: blobs, record, version ref, latest ref — so an interrupted push
        leaves no ref to an incomplete package, and pushing again completes it.
        Raises PackageError on a bad package, name or version, or an unwritable store.
        """
        if name is None:
            name = Path(package).stem
            if not _NAME.fullmatch(name):
                raise PackageError(f"the file name {name!r} cannot be a package name: pass --name NAME")
        _check_component(name, "package name", name)
        data, info = _read_verified(package)
        package_id = hashlib.sha256(data).hexdigest()
        version = version if version is not None else package_id[:MIN_DIGEST_PREFIX]
        _check_component(version, "version", f"{name}@{version}")
        if version == LATEST:
            raise PackageError(f"{LATEST!r} is reserved for the newest version: pick another --tag")
        with self._io("push to"):
            self._refuse_moved_version(name, version, package_id)
            self._ensure_marker()
            record, blobs = _split_package(data, info, package_id)
            written = [self._put_blob(digest, blob) for digest, blob in blobs.items()]
            if self._backend.size(_record_key(package_id)) is None:
                self._backend.write(_record_key(package_id), _dump_json(record))
            self._backend.write(_ref_key(name, version), package_id.encode() + b"\n")
            self._backend.write(_ref_key(name, LATEST), package_id.encode() + b"\n")
        return PushResult(name, version, package_id, len(data), sum(1 for n in written if n), sum(written))

    def _refuse_moved_version(self, name: str, version: str, package_id: str) -> None:
        current = self._read_ref(name, version, missing_ok=True)
        if current is not None and current != package_id:
            raise PackageError(
                f"{name}@{version} already exists in store {self.url} as sha256:{current[:16]}… "
                f"(versions are immutable): push with another --tag"
            )

    def _ensure_marker(self) -> None:
        if self._backend.size(_MARKER) is None:
            # Never scatter blobs/, packages/, refs/ into a folder that holds something else.
            if self._backend.list(""):
                raise PackageError(
                    f"{self.url} is not empty and is not a slimship store: push to a new or empty folder or prefix"
                )
            self._backend.write(_MARKER, _dump_json({"format": "slimship-store", "version": STORE_FORMAT_VERSION}))
        else:
            self._check_marker()

    def _put_blob(self, digest: str, blob: bytes) -> int:
        """Write one blob unless an intact copy is there; return the bytes written (0 if kept).
        An existing blob is re-read and re-hashed, not trusted by name: a damaged one is then
        repaired by pushing again."""
        key = _blob_key(digest)
        if self._backend.size(key) == len(blob):
            try:
                if hashlib.sha256(self._backend.read(key)).hexdigest() == digest:
                    return 0
            except _Missing:
                pass
        self._backend.write(key, blob)
        return len(blob)

    # ---------------------------------------------------------------------------------- pull

    def pull(self, ref: str, out: str | os.PathLike[str] | None = None) -> PullResult:
        """Re-assemble package ``ref`` (``NAME``, ``NAME@VERSION``, ``NAME@sha256:HEX``) into ``out``.

        ``out`` defaults to ``./NAME.slim``; an existing folder gets ``NAME.slim`` inside it. Every
        blob's SHA-256, the trailer, the whole file's SHA-256 (= the package id) and the package itself
        (:func:`verify_package`) are checked on a temporary file in the target folder, which then
        replaces ``out`` atomically; on any problem ``out`` is left untouched and PackageError raised.
        """
        name, version, package_id = self.resolve(ref)
        target = _pull_target(out, name)
        with self._io("read from"):
            record = self._record(package_id)
            _write_atomically(target, lambda f: self._assemble(record, f), verify=self._verified)
        return PullResult(name, version, package_id, str(target), record["size_bytes"])

    def _assemble(self, record: dict, f: Any) -> None:
        whole, body = hashlib.sha256(), hashlib.sha256()
        for digest, size in [(record["header"]["blob"], record["header"]["size"])] + [
            (p["blob"], p["stored_size"]) for p in record["parts"]
        ]:
            blob = self._blob(digest, size, record["package"])
            whole.update(blob)
            body.update(blob)
            f.write(blob)
        trailer = body.digest()
        if trailer.hex() != record["package_sha256"]:
            raise self._damaged(record["package"], "its blobs do not hash to the recorded trailer")
        whole.update(trailer)
        f.write(trailer)
        if whole.hexdigest() != record["package"]:
            raise self._damaged(record["package"], "the assembled file does not hash to the package id")

    def _blob(self, digest: str, size: int, package_id: str) -> bytes:
        key = _blob_key(digest)
        found = self._backend.size(key)
        if found is None:
            raise PackageError(
                f"store {self.url} is missing blob sha256:{digest[:16]}… of package sha256:{package_id[:16]}…: "
                "push the package again to repair the store"
            )
        if found != size:  # checked before reading, so a swollen blob is never loaded
            raise self._corrupt_blob(digest, f"{found} bytes instead of {size}")
        try:
            blob = self._backend.read(key)
        except _Missing:
            raise PackageError(f"store {self.url} lost blob sha256:{digest[:16]}… while it was read: retry") from None
        if hashlib.sha256(blob).hexdigest() != digest:
            raise self._corrupt_blob(digest, "its SHA-256 does not match its name")
        return blob

    def _verified(self, tmp: Path) -> None:
        try:
            verify_package(tmp)
        except PackageError as e:
            raise PackageError(f"store {self.url}: the re-assembled package failed verification ({e})") from None

    # ------------------------------------------------------------------------------- resolve

    def resolve(self, ref: str) -> tuple[str, str, str]:
        """Resolve ``ref`` to (name, version, package id). ``NAME`` alone is the latest version; a
        ``sha256:`` prefix must match exactly one package among NAME's versions. For a digest or latest
        reference the version is the first (sorted) version pointing at that package, or ``latest``.
        Raises PackageError if the store, name, version or digest is unknown or ambiguous."""
        name, version, digest = parse_ref(ref)
        with self._io("read from"):
            self._check_marker()
            versions = self._versions(name)
            if not versions:
                known = ", ".join(self._names()[:10]) or "none"
                raise PackageError(
                    f"store {self.url} has no package named {name!r} (it has: {known}): check the name or push it first"
                )
            if digest is not None:
                return self._resolve_digest(name, versions, digest)
            if version is None:
                package_id = self._read_ref(name, LATEST)
                return name, self._version_of(name, versions, package_id), package_id
            if version not in versions:
                shown = ", ".join(versions[:10])
                raise PackageError(f"store {self.url} has no version {version!r} of {name!r} (it has: {shown})")
            return name, version, self._read_ref(name, version)

    def _resolve_digest(self, name: str, versions: list[str], digest: str) -> tuple[str, str, str]:
        matches: dict[str, str] = {}
        for v in versions:
            package_id = self._read_ref(name, v)
            if package_id.startswith(digest):
                matches.setdefault(package_id, v)
        if not matches:
            raise PackageError(f"store {self.url} has no package sha256:{digest}… under the name {name!r}")
        if len(matches) > 1:
            raise PackageError(
                f"sha256:{digest} matches {len(matches)} packages of {name!r} in store {self.url}: give more hex characters"
            )
        package_id, v = next(iter(matches.items()))
        return name, v, package_id

    def _version_of(self, name: str, versions: list[str], package_id: str) -> str:
        return next((v for v in versions if self._read_ref(name, v) == package_id), LATEST)

    # ----------------------------------------------------------------------------- list, stats

    def list(self) -> list[StoreEntry]:
        """Every ``name@version`` in the store, sorted by name then version."""
        with self._io("read from"):
            self._check_marker()
            entries = []
            for name in self._names():
                latest = self._read_ref(name, LATEST, missing_ok=True)
                for version in self._versions(name):
                    package_id = self._read_ref(name, version)
                    record = self._record(package_id)
                    entries.append(StoreEntry(name, version, package_id, record["size_bytes"],
                                              package_id == latest, record["manifest"].get("created")))
            return entries

    def stats(self) -> dict:
        """Space used, as a JSON-ready dict: ``packages`` (distinct packages reachable from a ref),
        ``names``, ``versions``, ``blobs``, ``logical_bytes`` (sum of those packages' file sizes),
        ``physical_bytes`` (sum of all blob sizes), ``metadata_bytes`` (records, refs, marker),
        ``bytes_per_package`` (physical / packages), ``dedup_ratio`` (logical / physical) and
        ``unreferenced_packages`` (records no ref points at, e.g. left by an interrupted push)."""
        with self._io("read from"):
            self._check_marker()
            ids: set[str] = set()
            names = self._names()
            versions = 0
            for name in names:
                for version in self._versions(name):
                    ids.add(self._read_ref(name, version))
                    versions += 1
            logical = sum(self._record(i)["size_bytes"] for i in ids)
            blobs = self._backend.sizes(_BLOBS)
            physical = sum(blobs.values())
            record_sizes = self._backend.sizes(_PACKAGES)
            records = {k.rsplit("/", 1)[-1].removesuffix(".json") for k in record_sizes}
            metadata = sum(record_sizes.values()) + sum(self._backend.sizes(_REFS).values())
            metadata += self._backend.size(_MARKER) or 0
        return {
            "store": self.url,
            "packages": len(ids),
            "names": len(names),
            "versions": versions,
            "blobs": len(blobs),
            "logical_bytes": logical,
            "physical_bytes": physical,
            "metadata_bytes": metadata,
            "bytes_per_package": round(physical / len(ids)) if ids else 0,
            "dedup_ratio": round(logical / physical, 4) if physical else None,
            "unreferenced_packages": len(records - ids),
        }

    # ------------------------------------------------------------------------------- reading

    def _check_marker(self) -> None:
        try:
            raw = self._backend.read(_MARKER)
        except _Missing:
            if not self._backend.root_exists():
                raise PackageError(f"store {self.url} does not exist: check the path or URL, or push a package to create it") from None
            raise PackageError(
                f"{self.url} is not a slimship store (it has no {_MARKER}): pass the folder or URL given to `slimship push`"
            ) from None
        try:
            marker = _load_json(raw)
        except ValueError:
            marker = None
        if not isinstance(marker, dict) or marker.get("format") != "slimship-store" or not _is_int(marker.get("version")):
            raise PackageError(f"store {self.url} has a damaged {_MARKER}: {_MARKER} must be {{\"format\": \"slimship-store\", ...}}")
        if marker["version"] > STORE_FORMAT_VERSION:
            raise PackageError(
                f"store {self.url} has store format version {marker['version']}, this slimship reads up to "
                f"{STORE_FORMAT_VERSION}: upgrade slimship"
            )

    def _names(self) -> list[str]:
        return [n for n in self._backend.list(_REFS) if _NAME.fullmatch(n)]

    def _versions(self, name: str) -> list[str]:
        return [v for v in self._backend.list(f"{_REFS}/{name}") if v != LATEST and _NAME.fullmatch(v)]

    def _read_ref(self, name: str, version: str, *, missing_ok: bool = False) -> Any:
        try:
            text = self._backend.read(_ref_key(name, version)).decode("ascii", "replace").strip()
        except _Missing:
            if missing_ok:
                return None
            raise PackageError(f"store {self.url} has no ref {name}@{version}: check the name, or push it again") from None
        if not _HEX64.fullmatch(text):
            raise PackageError(f"store {self.url} has a damaged ref {name}@{version} (not a sha256): push the package again")
        return text

    def _record(self, package_id: str) -> dict:
        key = _record_key(package_id)
        size = self._backend.size(key)
        if size is None:
            raise self._damaged(package_id, "its record is missing")
        if size > _MAX_RECORD_BYTES:
            raise self._damaged(package_id, f"its record is {size} bytes, over {_MAX_RECORD_BYTES}")
        try:
            record = _load_json(self._backend.read(key))
            return _check_record(record, package_id)
        except (_Missing, ValueError) as e:
            raise self._damaged(package_id, f"bad record: {e}") from None

    def _damaged(self, package_id: str, why: str) -> PackageError:
        return PackageError(
            f"store {self.url} has a damaged package sha256:{package_id[:16]}… ({why}): push the package again"
        )

    def _corrupt_blob(self, digest: str, why: str) -> PackageError:
        return PackageError(
            f"store {self.url} blob sha256:{digest[:16]}… is corrupted ({why}): push the package again to repair it"
        )

    @contextmanager
    def _io(self, verb: str) -> Iterator[None]:
        """Turn storage failures (permissions, network, credentials) into one-line PackageErrors."""
        try:
            yield
        except PackageError:
            raise
        except (OSError, _Missing) as e:
            detail = " ".join(str(e).split())[:300] or type(e).__name__
            raise PackageError(
                f"cannot {verb} store {self.url} ({detail}): check the path or URL, credentials and permissions"
            ) from None


# ------------------------------------------------------------------------------ package <-> blobs


def _read_verified(path: str | os.PathLike[str]) -> tuple[bytes, Any]:
    """(file bytes, validated Package) of one consistent version of the file."""
    info = read_package(path, verify=True)
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise PackageError(f"cannot read {path} ({e.strerror or e}): check the path and its permissions") from None
    # read_package read the file on its own; make sure both reads saw the same bytes.
    if len(data) != info.size_bytes or data[-_TRAILER_LEN:].hex() != info.package_sha256:
        raise PackageError(f"{path} changed while it was being pushed: retry once nothing is writing it")
    return data, info


def _split_package(data: bytes, info: Any, package_id: str) -> tuple[dict, dict[str, bytes]]:
    """(package record, {blob sha256: bytes}) for a validated package's bytes. Blobs are the header
    region (prefix + header JSON) and each part's stored bytes, in file order."""
    _, _, header_len = _PREFIX.unpack_from(data)
    start = _PREFIX.size + header_len
    header = data[:start]
    blobs = {hashlib.sha256(header).hexdigest(): header}
    parts = []
    for p in info.parts.values():  # header order == data-area order (checked by read_package)
        stored = data[start + p.offset : start + p.offset + p.stored_size]
        digest = hashlib.sha256(stored).hexdigest()
        blobs.setdefault(digest, stored)
        parts.append({"name": p.name, "codec": p.codec, "raw_size": p.raw_size, "sha256": p.sha256,
                      "stored_size": p.stored_size, "blob": digest})
    record = {
        "format": _RECORD_FORMAT,
        "version": STORE_FORMAT_VERSION,
        "package": package_id,
        "package_sha256": info.package_sha256,
        "size_bytes": len(data),
        "pushed": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "manifest": info.manifest,
        "header": {"blob": hashlib.sha256(header).hexdigest(), "size": len(header)},
        "parts": parts,
    }
    return record, blobs


def _check_record(record: Any, package_id: str) -> dict:
    """Validate a record read from the store (it names blob keys, so it must not be trusted)."""
    if not isinstance(record, dict) or record.get("format") != _RECORD_FORMAT:
        raise ValueError("not a package record")
    if not _is_int(record.get("version")) or record["version"] > STORE_FORMAT_VERSION:
        raise ValueError(f"record version {record.get('version')!r} is unknown: upgrade slimship")
    if record.get("package") != package_id:
        raise ValueError("it names another package")
    if not isinstance(record.get("package_sha256"), str) or not _HEX64.fullmatch(record["package_sha256"]):
        raise ValueError("bad package_sha256")
    if not isinstance(record.get("manifest"), dict):
        raise ValueError("bad manifest")
    header, parts = record.get("header"), record.get("parts")
    if not isinstance(parts, list):
        raise ValueError("bad parts")
    _check_blob_entry(header, "size", "header")
    for p in parts:
        _check_blob_entry(p, "stored_size", "part")
    total = header["size"] + sum(p["stored_size"] for p in parts) + _TRAILER_LEN
    if not _is_int(record.get("size_bytes")) or record["size_bytes"] != total:
        raise ValueError("size_bytes does not add up")
    return record


def _check_blob_entry(entry: Any, size_key: str, what: str) -> None:
    if not isinstance(entry, dict) or not isinstance(entry.get("blob"), str) or not _HEX64.fullmatch(entry["blob"]):
        raise ValueError(f"bad {what} blob")
    if not _is_int(entry.get(size_key)) or entry[size_key] < 0:
        raise ValueError(f"bad {what} size")


# ------------------------------------------------------------------------------------- backends


class _Missing(Exception):
    """Internal: the key does not exist in the store."""


class _LocalBackend:
    """A store in a local folder, standard library only. Writes go to a hidden temporary file in the
    target's folder, are fsynced and renamed over the target, so readers see all or nothing."""

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
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(target, lambda f: f.write(data))

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
        tmp = f"{parent}/.{leaf}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        self.fs.pipe_file(tmp, data)
        self.fs.mv(tmp, path)

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


# ---------------------------------------------------------------------------------------- helpers


def _write_atomically(target: Path, fill: Any, verify: Any = None) -> None:
    """Write ``target`` via a hidden temporary file in its folder: ``fill(f)`` writes the bytes,
    ``verify(tmp_path)`` may check them; only then is the file renamed over ``target``. The
    temporary file is removed on any exception."""
    tmp = target.with_name(f".{target.name[:200]}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        f = open(tmp, "xb")
    except OSError as e:
        raise PackageError(f"cannot write {target} ({e.strerror or e}): check the folder and its permissions") from None
    try:
        with f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        if verify is not None:
            verify(tmp)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _pull_target(out: str | os.PathLike[str] | None, name: str) -> Path:
    target = Path(out) if out is not None else Path(f"{name}.slim")
    if target.is_dir():
        target = target / f"{name}.slim"
    if not target.parent.is_dir():
        raise PackageError(f"cannot write {target}: the folder {target.parent} does not exist; create it first")
    return target


def _check_component(value: Any, what: str, ref: Any) -> None:
    # Names and versions become path components in the store: no separators, no dot-only names.
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise PackageError(
            f"bad {what} {value!r} in {ref!r}: use 1-128 letters, digits, '.', '_', '+' or '-', "
            "starting with a letter or digit"
        )


def _blob_key(digest: str) -> str:
    return f"{_BLOBS}/{digest}"


def _record_key(package_id: str) -> str:
    return f"{_PACKAGES}/{package_id}.json"


def _ref_key(name: str, version: str) -> str:
    return f"{_REFS}/{name}/{version}"


def _dump_json(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _load_json(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ValueError(f"not valid JSON ({' '.join(str(e).split())[:120]})") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
