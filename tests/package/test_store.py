"""The model store: byte-identical round trips, dedup of shared parts, refs, atomic pushes, and refusal of
every damaged blob or record — on a local folder, on fsspec's memory:// and (when moto is installed) on S3."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from slimship.data.transforms import ImagePreprocessing
from slimship.core.errors import PackageError
from slimship.package.format import sha256_file, verify_package, write_package
from slimship.package.pack import load_package, pack
from slimship.package.store import LATEST, Store, parse_ref, storage_options_from_env

from .conftest import manifest

PRE = ImagePreprocessing(image_size=32, channels=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


@pytest.fixture(scope="module")
def onnx_bytes() -> bytes:
    from slimship.models import create_model
    from slimship.models.export import export_onnx

    return export_onnx(create_model("test_efficientnet", 3, weights=None, image_size=32).model, 32)


@pytest.fixture(scope="module")
def packages(tmp_path_factory, onnx_bytes) -> dict[str, Path]:
    """Two packages with the same deploy graph and different manifests, and one with an extra part."""
    root = tmp_path_factory.mktemp("packages")
    out = {}
    for name, classes, extra in (("a", ["cat", "dog", "cow"], None), ("b", ["x", "y", "z"], None),
                                 ("c", ["p", "q", "r"], {"labels.txt": b"p\nq\nr\n"})):
        out[name] = root / f"{name}.slim"
        pack(out[name], onnx=onnx_bytes, architecture="test", class_names=classes, preprocessing=PRE,
             extra_parts=extra)
    return out


def _stores() -> list:
    params = ["local", "file-url"]
    try:
        import fsspec  # noqa: F401

        params.append("memory")
    except ImportError:
        params.append(pytest.param("memory", marks=pytest.mark.skip(reason="fsspec not installed")))
    return params


@pytest.fixture(params=_stores())
def store_url(request, tmp_path) -> str:
    if request.param == "local":
        yield str(tmp_path / "store")
    elif request.param == "file-url":
        yield (tmp_path / "store").as_uri()
    else:
        url = f"memory://slimship-test-{uuid.uuid4().hex}/store"
        yield url
        import fsspec

        fs, root = fsspec.core.url_to_fs(url)
        if fs.exists(root):
            fs.rm(root, recursive=True)  # the memory file system is process-wide


def _same_file(a: Path | str, b: Path | str) -> bool:
    return sha256_file(a) == sha256_file(b) and Path(a).read_bytes() == Path(b).read_bytes()


def _corrupt_blob(store: Store, digest: str, mutate) -> None:
    """Rewrite one blob in place through the store's own backend (works for every backend)."""
    key = f"blobs/sha256/{digest}"
    store._backend.write(key, mutate(store._backend.read(key)))


def _record(store: Store, package_id: str) -> dict:
    return json.loads(store._backend.read(f"packages/{package_id}.json"))


# ------------------------------------------------------------------------------------- round trips


def test_push_pull_is_byte_identical_and_loads(store_url, packages, tmp_path):
    store = Store(store_url)
    r = store.push(packages["c"], name="model", version="1.0")
    assert (r.name, r.version, r.package, r.size_bytes) == ("model", "1.0", sha256_file(packages["c"]),
                                                           os.path.getsize(packages["c"]))
    assert r.blobs_written == 3  # header region, model.onnx, labels.txt
    got = store.pull("model@1.0", tmp_path / "got.slim")
    assert got.path == str(tmp_path / "got.slim") and got.package == r.package
    assert _same_file(packages["c"], got.path)
    assert verify_package(got.path)["package_sha256"] == load_package(got.path).package.package_sha256
    assert load_package(got.path).class_names == ["p", "q", "r"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_pull_defaults_to_name_in_cwd_and_into_folders(packages, tmp_path, monkeypatch):
    store = Store(tmp_path / "store")
    store.push(packages["a"], name="cls")
    monkeypatch.chdir(tmp_path)
    assert store.pull("cls").path == "cls.slim" and _same_file(packages["a"], tmp_path / "cls.slim")
    (tmp_path / "dl").mkdir()
    assert _same_file(packages["a"], store.pull("cls", tmp_path / "dl").path)
    with pytest.raises(PackageError, match="does not exist"):
        store.pull("cls", tmp_path / "missing" / "x.slim")


def test_identical_parts_are_stored_once(store_url, packages):
    store = Store(store_url)
    first = store.push(packages["a"], name="a")
    second = store.push(packages["b"], name="b")
    assert second.blobs_written == 1  # only b's header region: the ONNX graph was already there
    assert second.bytes_written < os.path.getsize(packages["b"]) / 10
    again = store.push(packages["a"], name="a-copy")  # the same package under another name
    assert (again.blobs_written, again.package) == (0, first.package)
    s = store.stats()
    logical = os.path.getsize(packages["a"]) + os.path.getsize(packages["b"])
    assert (s["packages"], s["names"], s["versions"], s["blobs"]) == (2, 3, 3, 3)
    assert s["logical_bytes"] == logical and s["physical_bytes"] < 0.6 * logical
    assert s["bytes_per_package"] == round(s["physical_bytes"] / 2) and s["dedup_ratio"] > 1.6
    assert s["unreferenced_packages"] == 0 and s["metadata_bytes"] > 0


# -------------------------------------------------------------------------------------------- refs


def test_versions_latest_and_digest_prefixes(store_url, packages, tmp_path):
    store = Store(store_url)
    a = store.push(packages["a"], name="m", version="1")
    b = store.push(packages["b"], name="m", version="2")
    assert store.resolve("m") == ("m", "2", b.package)
    assert store.resolve(f"m@{LATEST}") == ("m", "2", b.package)
    assert store.resolve("m@1") == ("m", "1", a.package)
    assert store.resolve(f"m@sha256:{a.package[:12].upper()}") == ("m", "1", a.package)
    assert store.resolve(f"m@sha256:{b.package}") == ("m", "2", b.package)
    assert _same_file(packages["a"], store.pull(f"m@sha256:{a.package[:20]}", tmp_path / "a.slim").path)
    store.push(packages["a"], name="m", version="3")  # an older package pushed again becomes latest
    assert store.resolve("m") == ("m", "1", a.package)
    entries = {(e.name, e.version): e for e in store.list()}
    assert sorted(entries) == [("m", "1"), ("m", "2"), ("m", "3")]
    assert [e.latest for e in entries.values()] == [True, False, True]
    assert entries[("m", "2")].size_bytes == os.path.getsize(packages["b"]) and entries[("m", "2")].created
    default = store.push(packages["c"], name="m")
    assert default.version == default.package[:12]


@pytest.mark.parametrize("ref, phrase", [
    ("nobody", "no package named 'nobody'"),
    ("m@9", "no version '9' of 'm'"),
    ("m@sha256:" + "0" * 12, "no package sha256:000000000000"),
    ("m@sha256:abc", "12 to 64 hex"),
    ("m@sha256:" + "g" * 12, "12 to 64 hex"),
    ("../m", "bad package name"),
    ("m@a/b", "bad version"),
    ("", "empty package reference"),
])
def test_unknown_and_malformed_refs_are_refused(packages, tmp_path, ref, phrase):
    store = Store(tmp_path / "store")
    store.push(packages["a"], name="m", version="1")
    with pytest.raises(PackageError, match=phrase.replace("(", r"\(")) as info:
        store.pull(ref, tmp_path / "out.slim")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out.slim").exists()


def test_ambiguous_digest_prefix_is_refused(packages, tmp_path, monkeypatch):
    store = Store(tmp_path / "store")
    store.push(packages["a"], name="m", version="1")
    store.push(packages["b"], name="m", version="2")
    real = Store._read_ref
    monkeypatch.setattr(Store, "_read_ref", lambda self, n, v, **k: ("ab" * 6) + real(self, n, v, **k)[12:])
    with pytest.raises(PackageError, match="matches 2 packages"):
        store.resolve("m@sha256:" + "ab" * 6)


def test_parse_ref():
    assert parse_ref("m") == ("m", None, None)
    assert parse_ref("m@v1.2-rc+3") == ("m", "v1.2-rc+3", None)
    assert parse_ref("m@latest") == ("m", None, None)
    assert parse_ref("m@sha256:" + "A" * 12) == ("m", None, "a" * 12)


def test_versions_are_immutable_and_names_checked(packages, tmp_path):
    store = Store(tmp_path / "store")
    first = store.push(packages["a"], name="m", version="1")
    assert store.push(packages["a"], name="m", version="1").package == first.package  # idempotent
    with pytest.raises(PackageError, match="already exists"):
        store.push(packages["b"], name="m", version="1")
    with pytest.raises(PackageError, match="reserved"):
        store.push(packages["b"], name="m", version=LATEST)
    for bad in ("a b", ".hidden", "x/y", "", "é" * 3):
        with pytest.raises(PackageError, match="bad package name"):
            store.push(packages["b"], name=bad)
    odd = tmp_path / "my model.slim"
    odd.write_bytes(packages["a"].read_bytes())
    with pytest.raises(PackageError, match="pass --name"):
        store.push(odd)
    assert store.resolve("m") == ("m", "1", first.package)


# ------------------------------------------------------------------------------------ atomicity


def test_interrupted_push_leaves_no_ref_and_a_later_push_completes(store_url, packages, tmp_path, monkeypatch):
    store = Store(store_url)
    store.push(packages["a"], name="a")  # the store exists; c shares its graph but brings two new blobs
    backend = store._backend
    real_write, blob_writes = backend.write, []

    def flaky_write(key: str, data: bytes) -> None:
        if key.startswith("blobs/"):
            blob_writes.append(key)
            if len(blob_writes) == 2:
                raise ConnectionError("network dropped")
        real_write(key, data)

    monkeypatch.setattr(backend, "write", flaky_write)
    with pytest.raises(PackageError, match=r"cannot push to store .*\(network dropped\)"):
        store.push(packages["c"], name="c", version="1")
    assert len(blob_writes) == 2  # one blob landed, the second failed: a partial package
    with pytest.raises(PackageError, match="no package named 'c'"):
        store.pull("c", tmp_path / "c.slim")
    assert [e.name for e in store.list()] == ["a"] and store.stats()["packages"] == 1
    assert not (tmp_path / "c.slim").exists()
    monkeypatch.setattr(backend, "write", real_write)
    store.push(packages["c"], name="c", version="1")
    assert _same_file(packages["c"], store.pull("c@1", tmp_path / "c.slim").path)


def test_local_writes_leave_no_temporary_files(packages, tmp_path):
    store = Store(tmp_path / "store")
    store.push(packages["a"], name="a")
    store.push(packages["b"], name="b")
    assert not [p for p in (tmp_path / "store").rglob(".*")]


# ------------------------------------------------------------------------------------ tampering


def test_tampered_blob_is_refused_and_a_push_repairs_it(store_url, packages, tmp_path):
    store = Store(store_url)
    r = store.push(packages["a"], name="m")
    onnx_blob = _record(store, r.package)["parts"][0]["blob"]

    def flip(raw: bytes) -> bytes:
        return raw[:100] + bytes([raw[100] ^ 1]) + raw[101:]

    _corrupt_blob(store, onnx_blob, flip)
    out = tmp_path / "m.slim"
    with pytest.raises(PackageError, match="corrupted") as info:
        store.pull("m", out)
    assert "\n" not in str(info.value) and not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    store.push(packages["a"], name="m")  # the damaged blob is re-hashed on push and rewritten
    assert _same_file(packages["a"], store.pull("m", out).path)


@pytest.mark.parametrize("damage, phrase", [
    ("truncate-blob", "corrupted"),
    ("delete-blob", "missing blob"),
    ("header-blob", "damaged package"),
    ("record-parts", "damaged package"),
    ("record-blob-path", "damaged package"),
    ("record-json", "damaged package"),
    ("ref", "damaged ref"),
    ("marker", "damaged slimship-store.json"),
])
def test_damaged_store_is_refused(packages, tmp_path, damage, phrase):
    root = tmp_path / "store"
    store = Store(root)
    r = store.push(packages["c"], name="m", version="1")
    record_path = root / "packages" / f"{r.package}.json"
    record = json.loads(record_path.read_text())
    onnx_blob = root / "blobs" / "sha256" / record["parts"][0]["blob"]
    if damage == "truncate-blob":
        onnx_blob.write_bytes(onnx_blob.read_bytes()[:-1])
    elif damage == "delete-blob":
        onnx_blob.unlink()
    elif damage == "header-blob":
        # A header blob rewritten consistently (its name is its hash): the trailer check catches it.
        old = root / "blobs" / "sha256" / record["header"]["blob"]
        raw = old.read_bytes().replace(b'"cat"', b'"rat"').replace(b'"p"', b'"P"')
        new = hashlib.sha256(raw).hexdigest()
        (root / "blobs" / "sha256" / new).write_bytes(raw)
        record["header"]["blob"] = new
        record_path.write_text(json.dumps(record))
    elif damage == "record-parts":
        record["parts"].reverse()
        record_path.write_text(json.dumps(record))
    elif damage == "record-blob-path":
        record["parts"][0]["blob"] = "../../../../etc/passwd"
        record_path.write_text(json.dumps(record))
    elif damage == "record-json":
        record_path.write_text("{not json")
    elif damage == "ref":
        (root / "refs" / "m" / "1").write_text("not a hash")
    elif damage == "marker":
        (root / "slimship-store.json").write_text("[]")
    out = tmp_path / "out.slim"
    with pytest.raises(PackageError, match=phrase) as info:
        store.pull("m@1", out)
    assert "\n" not in str(info.value) and not out.exists()


def test_missing_store_and_foreign_folders_are_refused(packages, tmp_path):
    with pytest.raises(PackageError, match="does not exist"):
        Store(tmp_path / "nope").list()
    with pytest.raises(PackageError, match="does not exist"):
        Store(tmp_path / "nope").pull("m")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(PackageError, match="not empty and is not a slimship store"):
        Store(busy).push(packages["a"])
    with pytest.raises(PackageError, match="not a slimship store"):
        Store(busy).stats()
    assert sorted(p.name for p in busy.iterdir()) == ["notes.txt"]
    newer = tmp_path / "newer"
    Store(newer).push(packages["a"])
    (newer / "slimship-store.json").write_text(json.dumps({"format": "slimship-store", "version": 99}))
    with pytest.raises(PackageError, match="upgrade slimship"):
        Store(newer).list()


def test_bad_packages_are_not_pushed(packages, tmp_path):
    store = Store(tmp_path / "store")
    raw = bytearray(packages["a"].read_bytes())
    raw[len(raw) // 2] ^= 0x40
    bad = tmp_path / "bad.slim"
    bad.write_bytes(bytes(raw))
    with pytest.raises(PackageError, match="modified or corrupted"):
        store.push(bad)
    with pytest.raises(PackageError, match="does not exist"):
        store.push(tmp_path / "missing.slim")
    assert not (tmp_path / "store").exists()


def test_unknown_url_scheme_is_one_line(tmp_path):
    pytest.importorskip("fsspec")
    with pytest.raises(PackageError, match="cannot be opened|needs another package") as info:
        Store("nosuchproto://bucket/x")
    assert "\n" not in str(info.value)
    with pytest.raises(PackageError, match="remote host"):
        Store("file://server/share")


def test_storage_options_from_env(monkeypatch):
    monkeypatch.delenv("SLIMSHIP_S3_ENDPOINT", raising=False)
    assert storage_options_from_env("s3://b/x") is None
    monkeypatch.setenv("SLIMSHIP_S3_ENDPOINT", "http://127.0.0.1:9000")
    assert storage_options_from_env("s3://b/x") == {"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}
    assert storage_options_from_env("/tmp/store") is None and storage_options_from_env("memory://x") is None


def test_local_store_needs_neither_torch_nor_fsspec(tmp_path, graph_bytes):
    """A folder store needs neither torch nor fsspec (onnx, yes: every push and pull checks the deploy graph)."""
    write_package(tmp_path / "p.slim", manifest(), {"model.onnx": graph_bytes})
    code = (
        "import sys\n"
        "from slimship.package.store import Store\n"
        f"s = Store({str(tmp_path / 'st')!r}); s.push({str(tmp_path / 'p.slim')!r}, name='p')\n"
        f"s.pull('p', {str(tmp_path / 'q.slim')!r}); s.list(); s.stats()\n"
        "print(sorted(m for m in ('torch', 'fsspec') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
    assert _same_file(tmp_path / "p.slim", tmp_path / "q.slim")


# ------------------------------------------------------------------------------------------- S3


def test_s3_round_trip_dedup_and_tampering(s3_endpoint, packages, tmp_path):
    opts = {"client_kwargs": {"endpoint_url": s3_endpoint}, "skip_instance_cache": True}
    store = Store("s3://slimship/models", storage_options=opts)
    a = store.push(packages["a"], name="m", version="1")
    store.push(packages["b"], name="m", version="2")
    assert _same_file(packages["a"], store.pull("m@1", tmp_path / "a.slim").path)
    assert _same_file(packages["b"], store.pull("m", tmp_path / "b.slim").path)
    assert store.resolve(f"m@sha256:{a.package[:12]}")[2] == a.package
    s = store.stats()
    assert s["packages"] == 2 and s["physical_bytes"] < s["logical_bytes"]
    fresh = Store("s3://slimship/models", storage_options=opts)  # another client sees the same store
    assert [(e.name, e.version) for e in fresh.list()] == [("m", "1"), ("m", "2")]
    _corrupt_blob(store, _record(store, a.package)["parts"][0]["blob"], lambda raw: raw[:-1] + bytes([raw[-1] ^ 1]))
    with pytest.raises(PackageError, match="corrupted"):
        fresh.pull("m@1", tmp_path / "bad.slim")
    with pytest.raises(PackageError, match="does not exist"):
        Store("s3://slimship/elsewhere", storage_options=opts).list()
