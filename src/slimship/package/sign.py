"""Ed25519 signatures on packages: who made a package, not only whether it is intact.

Hashes stop accidents; anyone who rewrites a part can also rewrite its hash and the trailer. A signature made
with a private key that only the publisher holds cannot be redone that way.

Where it lives: inside the package, in the manifest's ``signatures`` list, so a signed package travels as one
file through copies, stores (``push``/``pull`` are byte-identical) and servers. Each entry signs the package hash
of the package *without* its ``signatures`` entry: exactly the hash ``slimship verify`` printed for the package
before it was signed. Signing rewrites the header and the trailer only (the parts' bytes are untouched), so the
signed file is still a plain package that every reader verifies as before. Its own package hash covers the
signatures as well; the hash that was signed is recomputed from the file by removing them again (the header is
canonical JSON, see :func:`signed_hash`). Details: docs/package-format.md, "Signatures".

Keys are Ed25519 keys in PEM files (PKCS#8 private key, SubjectPublicKeyInfo public key), as written by
:func:`generate_key` (``slimship keygen``) or ``openssl genpkey -algorithm ed25519``. Needs ``cryptography``
(the ``sign`` extra), imported only when a key is used.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from slimship.core.atomic import write_stream_atomically
from slimship.core.errors import PackageError, SlimshipError
from slimship.package.format import _MAGIC, _PREFIX, Package, _encode_header, _write_with_trailer, read_package

SIGNATURES_KEY = "signatures"  # the manifest entry
ALGORITHM = "ed25519"
#: Domain separation: a slimship signature can never be mistaken for a signature over anything else.
MESSAGE_PREFIX = b"slimship-package-signature-v1\n"
MAX_SIGNATURES = 64
_PUBLIC_SUFFIX = ".pub"


class KeyFileError(SlimshipError):
    """A key file is missing, unreadable, of the wrong kind, or too open."""


@dataclass(frozen=True)
class TrustedKey:
    """A public key a package may be signed with; ``key_id`` is the first 16 hex digits of the SHA-256 of its 32
    raw bytes (what a signature entry names)."""

    path: str
    key_id: str
    key: Any  # cryptography's Ed25519PublicKey


@dataclass(frozen=True)
class SignatureCheck:
    """A signature that verified: the key that made it and the package hash it covers."""

    key_id: str
    key_path: str
    signed_sha256: str


# ----------------------------------------------------------------------------------------------- keys


def generate_key(path: str | os.PathLike[str]) -> tuple[Path, Path, str]:
    """Write a new Ed25519 private key to ``path`` (PEM, mode 0600) and its public key to ``path.pub`` (PEM, mode
    0644: public keys are meant to be handed out). Returns (private path, public path, key id).

    Raises KeyFileError if either file exists already (a key is never overwritten: the packages it signed would
    lose their signer).
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private_path = Path(path)
    public_path = private_path.with_name(private_path.name + _PUBLIC_SUFFIX)
    for p in (private_path, public_path):
        if os.path.lexists(p):
            raise KeyFileError(f"{p} exists already: choose another key file name (keys are never overwritten)")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    _write_key(private_path, private_pem, 0o600)
    _write_key(public_path, public_pem, 0o644)
    return private_path, public_path, key_id(key.public_key())


def _write_key(path: Path, data: bytes, mode: int) -> None:
    def fill(f) -> None:
        # The temporary file exists (empty) with the umask's mode; it is narrowed before any key byte is written,
        # so a private key is never readable by others, not even for a moment.
        os.fchmod(f.fileno(), mode)
        f.write(data)

    write_stream_atomically(path, fill, error=KeyFileError)


def key_id(public_key: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_private_key(path: str | os.PathLike[str]) -> Any:
    """The Ed25519 private key in PEM file ``path``. Refuses a file that others may read (like ssh does)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    data = _read_key_file(path, "private")
    if b"PUBLIC KEY" in data:
        raise KeyFileError(f"{path} is a public key: sign with the private one (the file without .pub)")
    if os.name == "posix" and os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"private key {path} can be read by other users: run `chmod 600 {path}`")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise KeyFileError(f"private key {path} is encrypted: give an unencrypted PEM key "
                        f"(`openssl pkey -in {path} -out PLAIN.pem`, then chmod 600 PLAIN.pem)") from None
    except ValueError:
        raise KeyFileError(f"{path} is not a PEM private key: create one with `slimship keygen KEY`") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} is not an Ed25519 key: create one with `slimship keygen KEY`")
    return key


def load_public_key(path: str | os.PathLike[str]) -> TrustedKey:
    """The Ed25519 public key in PEM file ``path`` (a private key is refused: hand out only the ``.pub``)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    data = _read_key_file(path, "public")
    if b"PRIVATE KEY" in data:
        raise KeyFileError(f"{path} is a private key: verify with its public key ({Path(path).name}{_PUBLIC_SUFFIX})")
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise KeyFileError(f"{path} is not a PEM public key: pass the .pub file written by `slimship keygen`") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path} is not an Ed25519 public key: pass the .pub file written by `slimship keygen`")
    return TrustedKey(str(path), key_id(key), key)


def _read_key_file(path: str | os.PathLike[str], kind: str) -> bytes:
    try:
        if os.path.getsize(path) > 64 * 1024:
            raise KeyFileError(f"{path} is too large to be a key file: pass a PEM {kind} key")
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise KeyFileError(f"{kind} key {path} does not exist: check the path") from None
    except IsADirectoryError:
        raise KeyFileError(f"{kind} key {path} is a folder: pass the key file") from None
    except OSError as e:
        raise KeyFileError(f"cannot read {kind} key {path} ({e.strerror or e}): check its permissions") from None


# ------------------------------------------------------------------------------------------ signatures


def signed_hash(package: Package) -> str:
    """The hash a signature on ``package`` covers: the package hash of the same file without its ``signatures``
    entry (hex). For an unsigned package written by slimship this is its own package hash.

    The header is re-encoded the way :func:`slimship.package.format.write_package` encodes every header
    (compact JSON, keys in file order), from the validated manifest and part table; the data area is the one read.
    """
    manifest = {k: v for k, v in package.manifest.items() if k != SIGNATURES_KEY}
    header = _encode_header(manifest, list(package.parts.values()))
    h = hashlib.sha256(_PREFIX.pack(_MAGIC, package.format_version, len(header)))
    h.update(header)
    h.update(_data_area(package))
    return h.hexdigest()


def signatures(package: Package) -> list[dict]:
    """The validated ``signatures`` entries of a package (``[]`` for an unsigned one); PackageError if malformed."""
    entries = package.manifest.get(SIGNATURES_KEY, [])
    shown = package.path
    if not isinstance(entries, list) or len(entries) > MAX_SIGNATURES:
        raise PackageError(f"{shown}: its signatures entry is malformed (not a list of at most {MAX_SIGNATURES}): "
                           "the package was damaged or tampered with; get it again from its publisher")
    for e in entries:
        ok = (isinstance(e, dict) and e.get("algorithm") == ALGORITHM
              and all(isinstance(e.get(k), str) and len(e[k]) <= 200 for k in ("key_id", "package_sha256", "signature")))
        if not ok:
            raise PackageError(f"{shown}: a signature entry is malformed or not {ALGORITHM}: the package was damaged "
                               "or tampered with; get it again from its publisher")
    return entries


def check_signature(package: Package, keys: Sequence[TrustedKey]) -> SignatureCheck:
    """Check that ``package`` (as read and verified, so no file can change in between) carries a valid signature
    by one of ``keys`` over its current contents. Returns the first that verifies.

    Raises PackageError, saying which: the package is unsigned; it is signed only by other keys; a signature by a
    trusted key covers other contents (a part or the manifest changed after signing, however consistently its
    hashes were redone); or the signature itself is wrong (forged or damaged).
    """
    from cryptography.exceptions import InvalidSignature

    if not keys:
        raise ValueError("check_signature needs at least one trusted key")
    entries = signatures(package)
    shown = package.path
    if not entries:
        raise PackageError(f"{shown} is not signed, and a signature by {_key_names(keys)} is required: ask its "
                           "publisher for a signed package (`slimship sign PKG --key KEY`)")
    by_id = {k.key_id: k for k in keys}
    mine = [e for e in entries if e["key_id"] in by_id]
    if not mine:
        others = ", ".join(sorted({e["key_id"] for e in entries}))
        raise PackageError(f"{shown} is signed only by key(s) {others}, none of them trusted here "
                           f"({_key_names(keys)}): pass the publisher's public key with --key")
    current = signed_hash(package)
    for e in mine:
        key = by_id[e["key_id"]]
        if e["package_sha256"] != current:
            derived = " (it was rebuilt from a signed delta: sign it again)" if "rebuilt_from" in package.manifest else ""
            raise PackageError(f"{shown} was modified after key {key.key_id} signed it: its contents hash to "
                               f"{current[:16]}…, the signature covers {e['package_sha256'][:16]}…{derived}; "
                               "do not use it, get it again from its publisher")
        try:
            key.key.verify(_decode_signature(e["signature"], shown), MESSAGE_PREFIX + bytes.fromhex(current))
        except InvalidSignature:
            raise PackageError(f"{shown}: its signature by key {key.key_id} does not verify (forged or damaged): "
                               "do not use it, get it again from its publisher") from None
        return SignatureCheck(key.key_id, key.path, current)
    raise AssertionError("unreachable")


def verify_signature_file(path: str | os.PathLike[str], key_paths: Sequence[str | os.PathLike[str]]) -> SignatureCheck:
    """Read and fully verify the package at ``path`` and check its signature against the public keys in
    ``key_paths`` (:func:`check_signature`)."""
    keys = [load_public_key(k) for k in key_paths]
    return check_signature(read_package(path, verify=True), keys)


def sign_package(path: str | os.PathLike[str], private_key: str | os.PathLike[str],
                 out: str | os.PathLike[str] | None = None, force: bool = False) -> dict:
    """Add (or renew) a signature by ``private_key`` to the package at ``path``, written atomically to ``out``
    (default: ``path`` itself). Other keys' signatures are kept when they still match the contents; a stale one
    (the contents changed since) is refused rather than carried along. An ``out`` other than ``path`` that holds
    something else is replaced only with ``force``, and never when it is not a regular file.

    Returns ``{"path", "key_id", "signed_sha256", "package_sha256", "signatures"}``: the hash that was signed,
    the new file's own package hash, and how many signatures it now carries.
    Raises PackageError (damaged package, stale signature) or KeyFileError (unusable key).
    """
    from slimship.package.outputs import check_target, may_replace

    elsewhere = out is not None and os.path.abspath(out) != os.path.abspath(path)
    if elsewhere:
        check_target(out)  # a folder, device or FIFO: refused before any work
    key = load_private_key(private_key)
    kid = key_id(key.public_key())
    package = read_package(path, verify=True)
    current = signed_hash(package)
    kept = []
    for e in signatures(package):
        if e["key_id"] == kid:
            continue  # renewed below
        if e["package_sha256"] != current:
            raise PackageError(f"{path} carries a signature by key {e['key_id']} over other contents (the package "
                               "changed after it was signed): remove it or re-create the package before signing")
        kept.append(e)
    entry = {"algorithm": ALGORITHM, "key_id": kid, "package_sha256": current,
             "signature": base64.b64encode(key.sign(MESSAGE_PREFIX + bytes.fromhex(current))).decode("ascii")}
    manifest = {k: v for k, v in package.manifest.items() if k != SIGNATURES_KEY}
    manifest[SIGNATURES_KEY] = [*kept, entry]
    header = _encode_header(manifest, list(package.parts.values()))
    chunks = [_PREFIX.pack(_MAGIC, package.format_version, len(header)), header, _data_area(package)]
    target = Path(out if out is not None else path)

    def check(tmp: Path) -> None:
        read_package(tmp, verify=True)
        if elsewhere:
            may_replace(target, tmp, force)

    write_stream_atomically(target, lambda f: _write_with_trailer(f, chunks), verify=check, error=PackageError)
    signed = read_package(target, verify=True)
    return {"path": str(target), "key_id": kid, "signed_sha256": current,
            "package_sha256": signed.package_sha256, "signatures": len(kept) + 1}


def pull_signed(store: Any, ref: str, key_paths: Sequence[str | os.PathLike[str]],
                out: str | os.PathLike[str] | None = None, raw: bool = False,
                force: bool = False) -> tuple[Any, SignatureCheck]:
    """:meth:`Store.pull` that also requires a valid signature by one of ``key_paths``; the target is written only
    once the signature verified, and replaces an existing file that holds something else only with ``force``.
    Returns (PullResult, SignatureCheck).

    The signature checked is the one on the package as pushed. A task stored as a delta is checked as the delta
    package (what its publisher signed); the full package is then rebuilt from exactly that delta (pinned by its
    id) and the base the signed delta names by hash. The rebuilt file is a new file: its copied signature entry no
    longer matches, so sign it again before passing it on.
    """
    import dataclasses
    import tempfile

    from slimship.package.outputs import may_replace
    from slimship.package.store.core import _pull_target

    keys = [load_public_key(k) for k in key_paths]
    with tempfile.TemporaryDirectory(prefix="slimship-pull-") as tmp:
        as_pushed = store.pull(ref, out=Path(tmp) / "pushed.slim", raw=True)
        pushed = read_package(as_pushed.path, verify=True)
        check = check_signature(pushed, keys)
        target = _pull_target(out, as_pushed.name)
        result = as_pushed
        if not raw and "delta" in pushed.manifest:  # a delta package (docs/delta.md): rebuild the task from it
            result = store.pull(f"{as_pushed.name}@sha256:{as_pushed.package}", out=Path(tmp) / "full.slim")
        data = Path(result.path).read_bytes()
        def verified(tmp: Path) -> None:
            read_package(tmp, verify=True)
            may_replace(target, tmp, force)

        write_stream_atomically(target, lambda f: f.write(data), verify=verified, error=PackageError)
    return dataclasses.replace(result, path=str(target)), check


def signature_summary(package: Package) -> list[dict]:
    """``[{"key_id", "matches"}]``: who signed the package and whether each signature still covers its contents
    (the cryptographic check needs the signer's public key: :func:`check_signature`)."""
    entries = signatures(package)
    if not entries:
        return []
    current = signed_hash(package)
    return [{"key_id": e["key_id"], "matches": e["package_sha256"] == current} for e in entries]


def _data_area(package: Package) -> bytes:
    if package._data is None:  # a Package built by hand: read the file again, fully verified
        return _data_area(read_package(package.path, verify=True))
    return package._data


def _decode_signature(text: str, shown: str) -> bytes:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raw = b""
    if len(raw) != 64:
        raise PackageError(f"{shown}: a signature is not 64 bytes of base64: the package was damaged or tampered "
                           "with; get it again from its publisher")
    return raw


def _key_names(keys: Sequence[TrustedKey]) -> str:
    return ", ".join(f"{k.key_id} ({Path(k.path).name})" for k in keys)
