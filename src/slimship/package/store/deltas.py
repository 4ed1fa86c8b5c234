"""Delta packages in a store: the base a delta package's record names, the full task package rebuilt on pull,
and the bytes per task that ``store stats`` reports. (Encoding a task against a base: delta_push.py.)

These functions work on a :class:`~slimship.package.store.core.Store` from inside the store package; the
delta code (numpy, onnx) is imported only where a task is rebuilt.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from slimship.core.atomic import write_stream_atomically
from slimship.core.errors import PackageError
from slimship.package.deploy import ONNX_PART
from slimship.package.outputs import may_replace
from slimship.package.store.refs import _HEX64, _MARKER, _PACKAGES, _record_key


def base_for_push(store: Any, manifest: dict, base: str | None, package: Any) -> str | None:
    """The id of the base package a pushed package needs: None for a full package, else the store's package
    whose package hash (or ``model.onnx`` hash) is the one the delta manifest records — ``base`` (an id) when
    given, otherwise found among the store's records. Raises PackageError telling the user to push the base
    first when it is not there, or when ``base`` is not the delta's base."""
    meta = manifest.get("delta")
    if meta is None:
        if base is not None:
            raise PackageError(f"{package} is a full package, not a delta package: push it without a base")
        return None
    want = meta.get("base_package_sha256") if isinstance(meta, dict) else None
    graph = meta.get("base_graph_sha256") if isinstance(meta, dict) else None
    if not isinstance(want, str) or not _HEX64.fullmatch(want):
        raise PackageError(f"{package} has a damaged delta manifest entry: re-create the delta package")
    if store._backend.size(_MARKER) is None:
        raise _base_missing(store, package, want)
    store._check_marker()
    if base is not None and (not _HEX64.fullmatch(base) or store._backend.size(_record_key(base)) is None):
        raise _base_missing(store, package, want)
    for package_id in [base] if base is not None else _record_ids(store):
        try:
            record = store._record(package_id)
        except PackageError:
            if base is not None:
                raise
            continue  # a damaged record of some other package does not stop the search
        if record["package_sha256"] == want or any(p["name"] == ONNX_PART and p["sha256"] == graph
                                                   for p in record["parts"]):
            if "base" in record:
                raise PackageError(f"the base of {package} is itself stored as a delta in store {store.url}: "
                                   f"encode the task against a full package")
            return package_id
        if base is not None:
            raise PackageError(f"store package sha256:{base[:16]}… is not the base of {package} (it was made "
                               f"against package sha256 {want[:16]}…): pass the base it was made from")
    raise _base_missing(store, package, want)


def pull_rebuilt(store: Any, record: dict, target: Path, force: bool = False) -> int:
    """Fetch a delta package and its base (each verified like a normal pull) into a temporary folder and
    write the rebuilt full task package to ``target`` (atomically; an existing, different ``target`` only with
    ``force``). Returns its size in bytes."""
    from slimship.package.delta.package import rebuild_package

    package_id, base_id = record["package"], record["base"]
    try:
        base_record = store._record(base_id)
    except PackageError:
        raise PackageError(f"store {store.url} lacks the base sha256:{base_id[:16]}… of package "
                           f"sha256:{package_id[:16]}…: push the base package again") from None
    if "base" in base_record:
        raise store._damaged(package_id, "its base is itself a delta package")
    with tempfile.TemporaryDirectory(prefix="slimship-pull-") as tmp:
        delta_path, base_path = Path(tmp) / "delta.slim", Path(tmp) / "base.slim"
        for path, rec in ((delta_path, record), (base_path, base_record)):
            write_stream_atomically(path, lambda f, rec=rec: store._assemble(rec, f), verify=store._verified,
                                    error=PackageError)
        rebuilt = Path(tmp) / "rebuilt.slim"
        try:
            size = rebuild_package(delta_path, base_path, rebuilt)
        except PackageError as e:
            raise PackageError(f"store {store.url}: package sha256:{package_id[:16]}… does not rebuild against "
                               f"its base ({e}); pull it with --raw to inspect it") from None
        write_stream_atomically(target, lambda f: _copy(rebuilt, f), verify=lambda t: may_replace(target, t, force),
                                error=PackageError)
        return size


def _copy(source: Path, f: Any) -> None:
    with open(source, "rb") as src:
        while chunk := src.read(2**20):
            f.write(chunk)


def task_usage(store: Any, refs: list[tuple[str, str, str]], records: dict[str, dict]) -> dict:
    """Bytes per ``name@version`` (``tasks``), the bytes all packages would take as full packages
    (``full_package_bytes``, bases reachable only through a delta included) and the saving as stored
    (``delta_saved_bytes``, ``delta_saved_fraction``)."""
    names: dict[str, str] = {}
    for name, version, package_id in refs:
        names.setdefault(package_id, f"{name}@{version}")
    every = dict(records)
    for record in records.values():
        if "base" in record and record["base"] not in every:
            try:
                every[record["base"]] = store._record(record["base"])
            except PackageError:
                pass  # a lost base shows up when the task is pulled; stats still report what is there
    tasks = []
    for name, version, package_id in refs:
        record = records[package_id]
        base = record.get("base")
        tasks.append({
            "name": name, "version": version, "package": package_id, "stored_bytes": record["size_bytes"],
            "delta": base is not None,
            "base": None if base is None else names.get(base, f"sha256:{base[:16]}…"),
            "base_package": base, "full_bytes": _full_bytes(record),
        })
    stored = sum(r["size_bytes"] for r in every.values())
    full = sum(_full_bytes(r) or r["size_bytes"] for r in every.values())  # unknown: counted as stored, no saving
    return {"tasks": tasks, "full_package_bytes": full, "stored_package_bytes": stored,
            "delta_saved_bytes": full - stored, "delta_saved_fraction": round((full - stored) / full, 4) if full else 0.0}


def _full_bytes(record: dict) -> int | None:
    """A full package's own size; a delta package's ``full_bytes`` as recorded at push time (None if not)."""
    if "base" not in record:
        return record["size_bytes"]
    meta = record["manifest"].get("delta")
    info = meta.get("info") if isinstance(meta, dict) else None
    value = info.get("full_bytes") if isinstance(info, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _record_ids(store: Any) -> list[str]:
    ids = [n.removesuffix(".json") for n in store._backend.list(_PACKAGES) if n.endswith(".json")]
    return [i for i in ids if _HEX64.fullmatch(i)]


def _base_missing(store: Any, package: Any, want: str) -> PackageError:
    return PackageError(f"the base of {package} (package sha256 {want[:16]}…) is not in store {store.url}: "
                        f"push the base package first (slimship push BASE.slim {store.url})")
