"""Damage in a store, named: what ``store check`` reports, and what lets ``store list`` and ``store stats`` go on
past one bad entry.

Damage is anything a pull of some ``name@version`` would trip over: a ref that is not a package id or points at
no (valid) record, a record that is not JSON of the record schema, a blob that is missing, of the wrong size or
(with hashes) whose SHA-256 is not its name, and a delta package whose base is missing or is itself a delta
("dangling"). Packages no ref points at (left by an interrupted or losing push) and blobs no record uses are
not damage: they are counted, and a later push reuses them.
"""

from __future__ import annotations

from typing import Any

from slimship.core.errors import PackageError
from slimship.package.store.backend import _Missing
from slimship.package.store.deltas import _record_ids
from slimship.package.store.refs import _BLOBS, LATEST, _blob_key, _ref_key


def scan_refs(store: Any, problems: list[str]) -> list[tuple[str, str, str, dict]]:
    """Every ``(name, version, package id, record)`` whose ref and record are intact, sorted by name then version
    (``latest`` refs included only in the problems); each damaged one described in ``problems`` and skipped."""
    out, records = [], {}
    for name in store._names():
        versions = store._versions(name)
        if store._backend.size(_ref_key(name, LATEST)) is not None:
            versions = versions + [LATEST]
        for version in versions:
            try:
                package_id = store._read_ref(name, version)
            except PackageError:
                problems.append(f"ref {name}@{version} is damaged (it does not hold a package id)")
                continue
            if package_id not in records:
                try:
                    records[package_id] = store._record(package_id)
                except PackageError:
                    problems.append(f"ref {name}@{version} points at package sha256:{package_id[:16]}…, whose "
                                    "record is missing or damaged")
                    continue
            if version != LATEST:
                out.append((name, version, package_id, records[package_id]))
    return out


def check_store(store: Any, *, hashes: bool = True) -> dict:
    """Walk the whole store (every ref, record and blob; ``hashes``: re-hash every blob too) and return a
    JSON-ready report: ``store``, ``versions``, ``packages``, ``blobs``, ``problems`` (one line each, empty
    when the store is intact), ``unreferenced_packages`` and ``unused_blobs``."""
    problems: list[str] = []
    refs = scan_refs(store, problems)
    records = {package_id: record for _, _, package_id, record in refs}
    referenced = set(records)
    for package_id in _record_ids(store):
        if package_id not in records:
            try:
                records[package_id] = store._record(package_id)
            except PackageError:
                problems.append(f"package sha256:{package_id[:16]}…: its record is damaged")
    blobs = store._backend.sizes(_BLOBS)
    used: set[str] = set()
    hashed: dict[str, bool] = {}
    for package_id, record in sorted(records.items()):
        who = f"package sha256:{package_id[:16]}…"
        for digest, size in [(record["header"]["blob"], record["header"]["size"])] + [
                (p["blob"], p["stored_size"]) for p in record["parts"]]:
            key = _blob_key(digest)
            used.add(key)
            found = blobs.get(key)
            if found is None:
                problems.append(f"{who}: blob sha256:{digest[:16]}… is missing")
            elif found != size:
                problems.append(f"{who}: blob sha256:{digest[:16]}… has {found} bytes instead of {size}")
            elif hashes:
                if key not in hashed:
                    hashed[key] = _digest(store, key) == digest
                if not hashed[key]:
                    problems.append(f"{who}: blob sha256:{digest[:16]}… does not hash to its name (corrupted)")
        problems += _delta_problems(store, who, record, records)
    return {"store": store.url, "versions": len(refs), "packages": len(referenced), "blobs": len(blobs),
            "problems": problems, "unreferenced_packages": len(set(records) - referenced),
            "unused_blobs": len(set(blobs) - used)}


def blob_problems(records: dict[str, dict], blobs: dict[str, int]) -> list[str]:
    """The cheap part of :func:`check_store` for ``store stats``: blobs missing or of the wrong size."""
    problems = []
    for package_id, record in records.items():
        for digest, size in [(record["header"]["blob"], record["header"]["size"])] + [
                (p["blob"], p["stored_size"]) for p in record["parts"]]:
            found = blobs.get(_blob_key(digest))
            if found != size:
                state = "is missing" if found is None else f"has {found} bytes instead of {size}"
                problems.append(f"package sha256:{package_id[:16]}…: blob sha256:{digest[:16]}… {state}")
    return problems


def _delta_problems(store: Any, who: str, record: dict, records: dict[str, dict]) -> list[str]:
    base = record.get("base")
    if base is None:
        return []
    if base not in records:
        try:
            records[base] = store._record(base)
        except PackageError:
            return [f"{who}: a delta whose base sha256:{base[:16]}… is not in the store (dangling delta)"]
    if "base" in records[base]:
        return [f"{who}: a delta whose base sha256:{base[:16]}… is itself a delta"]
    return []


def _digest(store: Any, key: str) -> str | None:
    try:
        return store._backend.digest(key)
    except _Missing:
        return None
