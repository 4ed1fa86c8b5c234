"""The :class:`Store` (push, pull, resolve, list, stats) and the result types it returns."""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from slimship.core.atomic import write_stream_atomically
from slimship.core.errors import PackageError
from slimship.package.verify import verify
from slimship.package.outputs import check_target, may_replace
from slimship.package.store.backend import _Missing, _open_backend
from slimship.package.store.check import blob_problems, check_store, scan_refs
from slimship.package.store.deltas import base_for_push, pull_rebuilt, task_usage
from slimship.package.store.records import (
    _MAX_RECORD_BYTES,
    _check_record,
    _dump_json,
    _is_int,
    _load_json,
    _read_verified,
    _split_package,
)
from slimship.package.store.refs import (
    _BLOBS,
    _HEX64,
    _MARKER,
    _NAME,
    _PACKAGES,
    _REFS,
    LATEST,
    MIN_DIGEST_PREFIX,
    STORE_FORMAT_VERSION,
    _blob_key,
    _check_component,
    _record_key,
    _ref_key,
    parse_ref,
)


@dataclass(frozen=True)
class PushResult:
    """What :meth:`Store.push` did. ``package`` is the package id (SHA-256 of the whole file)."""

    name: str
    version: str
    package: str
    size_bytes: int
    blobs_written: int
    bytes_written: int
    base: str | None = None  # a delta package: the id of the package in the store it was encoded against
    full_bytes: int | None = None  # a task pushed with a base: the size of its full package
    check: dict | None = None  # a task pushed with a base: how the rebuilt graph compared with the task's
    note: str | None = None  # e.g. why a task pushed with a base was stored as a full package


@dataclass(frozen=True)
class PullResult:
    """What :meth:`Store.pull` wrote: ``path`` holds the verified, byte-identical package."""

    name: str
    version: str
    package: str
    path: str
    size_bytes: int
    rebuilt_from: str | None = None  # a delta package pulled as a full package: the id of its base


@dataclass(frozen=True)
class StoreEntry:
    """One ``name@version`` in a store; ``latest`` is True where ``name`` alone resolves to it."""

    name: str
    version: str
    package: str
    size_bytes: int
    latest: bool
    created: str | None


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
             version: str | None = None, *, base: str | None = None) -> PushResult:
        """Store the package file ``package`` as ``name@version`` and make it ``name``'s latest.

        ``name`` defaults to the file's stem, ``version`` to the first 12 hex characters of the package
        id. The package is fully verified first (hashes, deploy graph, manifest). Pushing the same package to the
        same version again is a no-op apart from moving ``latest``; a version already pointing at another package
        is refused (versions are immutable), also when two pushes race: the version ref is created exclusively
        (a hard link on a folder, a conditional ``If-None-Match: *`` PUT on S3), so exactly one of them wins.
        Order: blobs, record, version ref, latest ref — so an interrupted push leaves no ref to an incomplete
        package, and pushing again completes it.

        A delta package (see docs/delta.md) is accepted only once its base package is in the store: ``base``
        (a package id) names it, else the store is searched for the package the delta records. Its record
        then names the base, so that :meth:`pull` can rebuild the task. To encode a task against a base
        and push it, use :func:`slimship.package.store.push_delta`.
        Raises PackageError on a bad package, name or version, a missing base, or an unwritable store.
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
            base_id = base_for_push(self, info.manifest, base, package)
            self._ensure_marker()
            record, blobs = _split_package(data, info, package_id)
            if base_id is not None:
                record["base"] = base_id
            written = [self._put_blob(digest, blob) for digest, blob in blobs.items()]
            if self._backend.size(_record_key(package_id)) is None:
                self._backend.write(_record_key(package_id), _dump_json(record))
            # The version ref is created, never overwritten: of two concurrent pushes of one version, one creates
            # it and the other finds it and is refused (unless it pushes the same package).
            if not self._backend.create(_ref_key(name, version), package_id.encode() + b"\n"):
                if self._refuse_moved_version(name, version, package_id):
                    self._backend.write(_ref_key(name, version), package_id.encode() + b"\n")  # repair it
            self._backend.write(_ref_key(name, LATEST), package_id.encode() + b"\n")
        return PushResult(name, version, package_id, len(data), sum(1 for n in written if n), sum(written), base_id)

    def _refuse_moved_version(self, name: str, version: str, package_id: str) -> bool:
        """Refuse a version that points at another package; True if its ref is damaged (no package id in it),
        which the push may then repair."""
        try:
            current = self._read_ref(name, version, missing_ok=True)
        except PackageError:
            return True
        if current is not None and current != package_id:
            raise PackageError(
                f"{name}@{version} already exists in store {self.url} as sha256:{current[:16]}… "
                f"(versions are immutable): push with another --tag"
            )
        return False

    def _ensure_marker(self) -> None:
        if self._backend.size(_MARKER) is None:
            # Never scatter blobs/, packages/, refs/ into a folder that holds something else. A concurrent first
            # push writes the marker before anything else, so what it adds meanwhile is recognised.
            if [n for n in self._backend.list("") if n != _MARKER] and self._backend.size(_MARKER) is None:
                raise PackageError(
                    f"{self.url} is not empty and is not a slimship store: push to a new or empty folder or prefix"
                )
            self._backend.create(_MARKER, _dump_json({"format": "slimship-store", "version": STORE_FORMAT_VERSION}))
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

    def pull(self, ref: str, out: str | os.PathLike[str] | None = None, *, raw: bool = False,
             force: bool = False) -> PullResult:
        """Re-assemble package ``ref`` (``NAME``, ``NAME@VERSION``, ``NAME@sha256:HEX``) into ``out``.

        ``out`` defaults to ``./NAME.slim``; an existing folder gets ``NAME.slim`` inside it. Every
        blob's SHA-256, the trailer, the whole file's SHA-256 (= the package id) and the package itself
        (:func:`~slimship.package.verify.verify`: graph and manifest too) are checked on a temporary file in the target folder, which then
        replaces ``out`` atomically; on any problem ``out`` is left untouched and PackageError raised.

        A delta package is written as the full task package rebuilt from it and its base (both fetched and
        verified the same way; the result's manifest notes both ids in ``rebuilt_from``), unless ``raw``:
        then the delta package itself, byte-identical to what was pushed.

        An existing ``out`` that holds other bytes is replaced only with ``force``; one that is not a regular
        file (a device, a FIFO) never is.
        """
        name, version, package_id = self.resolve(ref)
        target = _pull_target(out, name)
        with self._io("read from"):
            record = self._record(package_id)
            if "base" in record and not raw:
                size = pull_rebuilt(self, record, target, force)
                return PullResult(name, version, package_id, str(target), size, record["base"])

            def check(tmp: Path) -> None:
                self._verified(tmp)
                may_replace(target, tmp, force)

            write_stream_atomically(target, lambda f: self._assemble(record, f), verify=check, error=PackageError)
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
            verify(tmp)
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

    def exists(self) -> bool:
        """True once something was pushed here (the store marker exists)."""
        with self._io("read from"):
            return self._backend.size(_MARKER) is not None

    def has_package(self, package_id: str) -> bool:
        """True if the store holds a record for package ``package_id`` (SHA-256 of the whole file)."""
        if not isinstance(package_id, str) or not _HEX64.fullmatch(package_id) or not self.exists():
            return False
        with self._io("read from"):
            self._check_marker()
            return self._backend.size(_record_key(package_id)) is not None

    # ----------------------------------------------------------------------------- list, stats

    def list(self, problems: list[str] | None = None) -> list[StoreEntry]:
        """Every intact ``name@version`` in the store, sorted by name then version. A damaged ref or record is
        skipped, so that one bad entry never hides the others; ``problems``, when given, receives one line per
        skipped entry (:meth:`check` names every kind of damage)."""
        problems = [] if problems is None else problems
        with self._io("read from"):
            self._check_marker()
            entries, latest = [], {}
            for name, version, package_id, record in scan_refs(self, problems):
                if name not in latest:
                    try:
                        latest[name] = self._read_ref(name, LATEST, missing_ok=True)
                    except PackageError:
                        latest[name] = None  # reported by scan_refs
                entries.append(StoreEntry(name, version, package_id, record["size_bytes"],
                                          package_id == latest[name], record["manifest"].get("created")))
            return entries

    def check(self, *, hashes: bool = True) -> dict:
        """Look for damage everywhere (see :mod:`slimship.package.store.check`): every ref, record and blob, each
        blob re-hashed unless ``hashes`` is False. Returns a JSON-ready report whose ``problems`` lists each
        damage in one line (empty: the store is intact). Raises PackageError only if this is not a store."""
        with self._io("read from"):
            self._check_marker()
            return check_store(self, hashes=hashes)

    def stats(self) -> dict:
        """Space used, as a JSON-ready dict: ``packages`` (distinct packages reachable from a ref),
        ``names``, ``versions``, ``blobs``, ``logical_bytes`` (sum of those packages' file sizes),
        ``physical_bytes`` (sum of all blob sizes), ``metadata_bytes`` (records, refs, marker),
        ``bytes_per_package`` (physical / packages), ``dedup_ratio`` (logical / physical) and
        ``unreferenced_packages`` (records no ref points at, e.g. left by an interrupted push) and ``problems``
        (damaged refs and records, which the figures leave out, and missing or truncated blobs; one line each:
        :meth:`check` also re-hashes every blob).

        Per ``name@version``, ``tasks`` lists the stored bytes, whether it is a delta and of which base, and
        ``full_bytes`` (what its full package costs; recorded at push time, None if unknown);
        ``full_package_bytes`` is what every package (bases included) would take stored whole and
        ``delta_saved_bytes`` how much less the packages take as stored (see docs/delta.md)."""
        with self._io("read from"):
            self._check_marker()
            problems: list[str] = []
            scanned = scan_refs(self, problems)
            refs = [(name, version, package_id) for name, version, package_id, _ in scanned]
            records = {package_id: record for _, _, package_id, record in scanned}
            names = self._names()
            ids = set(records)
            logical = sum(r["size_bytes"] for r in records.values())
            tasks = task_usage(self, refs, records)
            blobs = self._backend.sizes(_BLOBS)
            problems += blob_problems(records, blobs)
            physical = sum(blobs.values())
            record_sizes = self._backend.sizes(_PACKAGES)
            known = {k.rsplit("/", 1)[-1].removesuffix(".json") for k in record_sizes}
            metadata = sum(record_sizes.values()) + sum(self._backend.sizes(_REFS).values())
            metadata += self._backend.size(_MARKER) or 0
        return {
            "store": self.url,
            "packages": len(ids),
            "names": len(names),
            "versions": len(refs),
            "blobs": len(blobs),
            "logical_bytes": logical,
            "physical_bytes": physical,
            "metadata_bytes": metadata,
            "bytes_per_package": round(physical / len(ids)) if ids else 0,
            "dedup_ratio": round(logical / physical, 4) if physical else None,
            "unreferenced_packages": len(known - ids),
            "problems": problems,
            **tasks,
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


def _pull_target(out: str | os.PathLike[str] | None, name: str) -> Path:
    target = Path(out) if out is not None else Path(f"{name}.slim")
    if target.is_dir():
        target = target / f"{name}.slim"
    check_target(target)
    if not target.parent.is_dir():
        raise PackageError(f"cannot write {target}: the folder {target.parent} does not exist; create it first")
    return target
