"""Store layout: names, versions and references (``NAME@VERSION``, ``NAME@sha256:HEX``) and the keys they map to."""

from __future__ import annotations

import re
from typing import Any

from slimship.core.errors import PackageError
from slimship.package._header import _HEX64

STORE_FORMAT_VERSION = 1
LATEST = "latest"
MIN_DIGEST_PREFIX = 12

_MARKER = "slimship-store.json"
_BLOBS = "blobs/sha256"
_PACKAGES = "packages"
_REFS = "refs"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")


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
