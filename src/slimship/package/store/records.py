"""Package records: splitting a verified package into blobs plus a record, and checking records read back."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from slimship.core.errors import PackageError
from slimship.package.format import _PREFIX, _TRAILER_LEN, read_package
from slimship.package.verify import check_package
from slimship.package.store.refs import _HEX64, STORE_FORMAT_VERSION

_RECORD_FORMAT = "slimship-package-record"
_MAX_RECORD_BYTES = 64 * 2**20  # a record holds the manifest (≤ 16 MiB header) plus a few lines per part


def _read_verified(path: str | os.PathLike[str]) -> tuple[bytes, Any]:
    """(file bytes, validated Package) of one consistent version of the file: every hash, the deploy graph and
    the manifest checked (:func:`slimship.package.verify.check_package`)."""
    info = read_package(path, verify=True)
    check_package(info)
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
    # A delta package's record names the package it was encoded against (its base, in the same store).
    if "base" in record and (not isinstance(record["base"], str) or not _HEX64.fullmatch(record["base"])
                             or record["base"] == package_id):
        raise ValueError("bad base")
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


def _dump_json(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _load_json(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ValueError(f"not valid JSON ({' '.join(str(e).split())[:120]})") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
