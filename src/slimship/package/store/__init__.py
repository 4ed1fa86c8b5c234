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
file, checks that its SHA-256 is the package id and runs :func:`~slimship.package.verify.verify` on it before moving
it into place. Every problem is a one-line :class:`PackageError`.

A task package can be stored as a delta against a base package in the same store (:func:`push_delta`); its
record names the base, and :meth:`Store.pull` rebuilds the full task package from both (``raw=True``: the
delta package itself). See docs/delta.md, section "In a store".

A local folder needs only the standard library; fsspec is imported only for URLs with a scheme
(``file://`` URLs are treated as local folders). This module never imports torch.
Full description: docs/package-format.md, section "Store".
"""

from __future__ import annotations

# Modules: refs (names, versions, ref parsing, store keys), backend (local folder / fsspec access, atomic
# writes, storage_options_from_env), records (package <-> blobs + record), core (Store and its result types),
# deltas (a delta package's base link, rebuilding on pull, bytes per task), delta_push (encode a task against
# a base in the store, check it, push it).
from slimship.package.store.backend import storage_options_from_env
from slimship.package.store.core import PullResult, PushResult, Store, StoreEntry
from slimship.package.store.delta_push import DELTA_MODES, delta_config, push_delta
from slimship.package.store.refs import LATEST, MIN_DIGEST_PREFIX, STORE_FORMAT_VERSION, parse_ref

__all__ = [
    "Store",
    "PushResult",
    "PullResult",
    "StoreEntry",
    "push_delta",
    "delta_config",
    "DELTA_MODES",
    "parse_ref",
    "storage_options_from_env",
    "LATEST",
    "MIN_DIGEST_PREFIX",
    "STORE_FORMAT_VERSION",
]
