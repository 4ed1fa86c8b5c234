"""Signed packages (slimship.package.sign): keys, signing, and what a signature catches that hashes cannot.

The fixtures in tests/fixtures/slim-v0.1 are copied and signed with keys made per test; nothing is timed.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from slimship.api import load
from slimship.cli.main import main
from slimship.core.errors import PackageError, SlimshipError
from slimship.package.deploy import deploy_graph
from slimship.package.format import read_package, verify_package, write_package
from slimship.package.sign import (
    check_signature,
    generate_key,
    load_public_key,
    sign_package,
    signed_hash,
    verify_signature_file,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "slim-v0.1"


@pytest.fixture
def keys(tmp_path):
    """Two key pairs: ``pub``/``priv`` (the publisher) and ``other_pub``/``other_priv`` (someone else)."""
    priv, pub, _ = generate_key(tmp_path / "keys" / "publisher")
    other_priv, other_pub, _ = generate_key(tmp_path / "keys" / "other")
    return {"priv": priv, "pub": pub, "other_priv": other_priv, "other_pub": other_pub}


@pytest.fixture
def signed(tmp_path, keys):
    path = tmp_path / "int8.slim"
    shutil.copy(FIXTURES / "int8.slim", path)
    sign_package(path, keys["priv"])
    return path


def _tamper_consistently(path: Path, out: Path, *, forge_signed_hash: bool = False) -> None:
    """What an attacker with write access does: replace the deploy graph with another one and rewrite every hash
    (each part's SHA-256 and the trailer), keeping the signature entry. With ``forge_signed_hash`` the entry's
    signed hash is also set to the new contents' hash (the signature bytes cannot be redone without the key)."""
    pkg = read_package(path, verify=True)
    other = read_package(FIXTURES / "sparse-kmeans.slim", verify=True)
    parts = {"model.onnx": deploy_graph(other)}
    manifest = json.loads(json.dumps(pkg.manifest))
    write_package(out, manifest, parts)
    if forge_signed_hash:
        tampered = read_package(out, verify=True)
        manifest["signatures"][0]["package_sha256"] = signed_hash(tampered)
        write_package(out, manifest, parts)


def test_keygen_writes_a_private_key_nobody_else_can_read(tmp_path, keys):
    assert stat.S_IMODE(os.stat(keys["priv"]).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(keys["pub"]).st_mode) == 0o644  # a public key is meant to be handed out
    assert keys["pub"].name == "publisher.pub" and b"PRIVATE KEY" in keys["priv"].read_bytes()
    with pytest.raises(SlimshipError, match="exists already"):  # a key is never overwritten
        generate_key(keys["priv"])
    assert load_public_key(keys["pub"]).key_id != load_public_key(keys["other_pub"]).key_id


def test_keygen_private_key_is_never_readable_by_others_even_with_an_open_umask(tmp_path):
    old = os.umask(0)
    try:
        priv, _, _ = generate_key(tmp_path / "k")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(priv).st_mode) == 0o600


def test_signing_keeps_the_parts_and_signs_the_hash_verify_printed_before(tmp_path, keys, signed):
    before = verify_package(FIXTURES / "int8.slim")["package_sha256"]
    pkg = read_package(signed, verify=True)  # still a plain, valid package
    assert pkg.package_sha256 != before and signed_hash(pkg) == before
    assert pkg.read_part("model.onnx") == read_package(FIXTURES / "int8.slim").read_part("model.onnx")
    check = check_signature(pkg, [load_public_key(keys["pub"])])
    assert check.signed_sha256 == before and check.key_id == load_public_key(keys["pub"]).key_id
    # a second signer is added beside the first; signing again with the same key renews, never duplicates
    sign_package(signed, keys["other_priv"])
    sign_package(signed, keys["priv"])
    pkg = read_package(signed, verify=True)
    assert len(pkg.manifest["signatures"]) == 2 and signed_hash(pkg) == before
    for pub in (keys["pub"], keys["other_pub"]):
        assert check_signature(pkg, [load_public_key(pub)]).signed_sha256 == before


def test_a_consistently_rehashed_tampered_package_passes_verify_but_not_the_signature(tmp_path, keys, signed):
    tampered = tmp_path / "tampered.slim"
    _tamper_consistently(signed, tampered)
    verify_package(tampered)  # every hash checks out: hashes alone cannot tell
    assert load(tampered).onnx != load(signed).onnx
    trusted = [load_public_key(keys["pub"])]
    with pytest.raises(PackageError, match="modified after key .* signed it"):
        check_signature(read_package(tampered), trusted)
    # moving the signed hash along too leaves a signature that does not verify
    forged = tmp_path / "forged.slim"
    _tamper_consistently(signed, forged, forge_signed_hash=True)
    verify_package(forged)
    with pytest.raises(PackageError, match="does not verify"):
        check_signature(read_package(forged), trusted)
    with pytest.raises(PackageError, match="modified after"):
        load(tampered, key=keys["pub"])


def test_unsigned_foreign_key_and_wrong_key_are_refused(tmp_path, keys, signed):
    with pytest.raises(PackageError, match="not signed"):
        verify_signature_file(FIXTURES / "int8.slim", [keys["pub"]])
    with pytest.raises(PackageError, match="signed only by key"):
        verify_signature_file(signed, [keys["other_pub"]])
    assert verify_signature_file(signed, [keys["other_pub"], keys["pub"]]).key_path == str(keys["pub"])
    assert load(signed, key=[keys["pub"]]).class_names == ["top", "middle", "bottom"]
    with pytest.raises(PackageError, match="not signed"):
        load(FIXTURES / "int8.slim", key=keys["pub"])


def test_key_files_are_checked(tmp_path, keys, signed):
    with pytest.raises(SlimshipError, match="is a private key"):
        load_public_key(keys["priv"])
    with pytest.raises(SlimshipError, match="is a public key: sign with the private one"):
        sign_package(signed, keys["pub"])
    os.chmod(keys["priv"], 0o644)
    with pytest.raises(SlimshipError, match="chmod 600"):
        sign_package(signed, keys["priv"])
    with pytest.raises(SlimshipError, match="does not exist"):
        load_public_key(tmp_path / "missing.pub")
    (tmp_path / "junk.pub").write_text("not a key")
    with pytest.raises(SlimshipError, match="not a PEM public key"):
        load_public_key(tmp_path / "junk.pub")


def test_malformed_signature_entries_are_package_errors(tmp_path, keys, signed):
    pkg = read_package(signed)
    parts = {n: pkg.read_part(n) for n in pkg.parts}
    for bad in ("nope", [{"algorithm": "rsa"}], [{**pkg.manifest["signatures"][0], "signature": "AAAA"}]):
        path = tmp_path / "bad.slim"
        write_package(path, {**pkg.manifest, "signatures": bad}, parts)
        with pytest.raises(PackageError, match="malformed|64 bytes"):
            verify_signature_file(path, [keys["pub"]])


def test_sign_refuses_to_carry_a_stale_signature(tmp_path, keys, signed):
    tampered = tmp_path / "tampered.slim"
    _tamper_consistently(signed, tampered)
    with pytest.raises(PackageError, match="over other contents"):
        sign_package(tampered, keys["other_priv"])


def test_cli_keygen_sign_verify(tmp_path, capsys):
    key, pkg = tmp_path / "k", tmp_path / "m.slim"
    shutil.copy(FIXTURES / "int8.slim", pkg)
    assert main(["keygen", str(key)]) == 0
    assert main(["sign", str(pkg), "--key", str(key)]) == 0
    assert main(["verify", str(pkg), "--key", f"{key}.pub"]) == 0
    assert "signature OK" in capsys.readouterr().out
    assert main(["verify", str(FIXTURES / "int8.slim"), "--key", f"{key}.pub"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not signed" in err
    assert main(["keygen", str(key)]) == 2 and "exists already" in capsys.readouterr().err


def test_sign_out_never_replaces_an_unrelated_file_unless_forced(tmp_path, keys, capsys):
    pkg, out = tmp_path / "m.slim", tmp_path / "notes.txt"
    shutil.copy(FIXTURES / "int8.slim", pkg)
    out.write_text("my notes")
    assert main(["sign", str(pkg), "--key", str(keys["priv"]), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--force" in err
    assert out.read_text() == "my notes" and not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
    assert main(["sign", str(pkg), "--key", str(keys["priv"]), "-o", str(out)]) == 2  # still refused
    assert main(["sign", str(pkg), "--key", str(keys["priv"]), "-o", str(out), "--force"]) == 0
    assert check_signature(read_package(out, verify=True), [load_public_key(keys["pub"])])
    assert main(["sign", str(pkg), "--key", str(keys["priv"]), "-o", str(out)]) == 0  # the same bytes again: fine
    os.mkfifo(tmp_path / "fifo")
    assert main(["sign", str(pkg), "--key", str(keys["priv"]), "-o", str(tmp_path / "fifo"), "--force"]) == 2
    assert "not a regular file" in capsys.readouterr().err
    assert main(["sign", str(pkg), "--key", str(keys["priv"])]) == 0  # in place, as documented


def test_pull_with_key_checks_the_signature_before_writing(tmp_path, keys, signed, capsys):
    store = tmp_path / "store"
    assert main(["push", str(signed), str(store), "--name", "m", "--tag", "v1"]) == 0
    assert main(["push", str(FIXTURES / "int8.slim"), str(store), "--name", "plain", "--tag", "v1"]) == 0
    out = tmp_path / "pulled.slim"
    assert main(["pull", "m@v1", str(store), "-o", str(out), "--key", str(keys["pub"])]) == 0
    assert "signature OK" in capsys.readouterr().out and out.read_bytes() == signed.read_bytes()
    refused = tmp_path / "refused.slim"
    assert main(["pull", "plain@v1", str(store), "-o", str(refused), "--key", str(keys["pub"])]) == 2
    assert "not signed" in capsys.readouterr().err and not refused.exists()  # nothing written
    assert main(["pull", "m@v1", str(store), "-o", str(refused), "--key", str(keys["other_pub"])]) == 2
    assert not refused.exists()


def test_pull_with_key_rebuilds_a_signed_delta_task(tmp_path, keys, capsys):
    """A delta task is checked as the delta its publisher signed, then rebuilt against its base."""
    from slimship.package.store import Store

    delta, base = tmp_path / "task.delta.slim", tmp_path / "base.slim"
    shutil.copy(FIXTURES / "finetuned-delta.delta.slim", delta)
    shutil.copy(FIXTURES / "base.slim", base)
    sign_package(delta, keys["priv"])
    store = Store(tmp_path / "store")
    store.push(base, "base", "1")
    store.push(delta, "task", "1")
    out = tmp_path / "task.slim"
    assert main(["pull", "task@1", str(tmp_path / "store"), "-o", str(out), "--key", str(keys["pub"])]) == 0
    assert "rebuilt" in capsys.readouterr().out
    assert load(out).onnx == load(delta, base=base).onnx
