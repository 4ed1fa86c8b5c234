"""The .slim container: round trips, atomic writes, and refusal of every damaged or hostile file."""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import os
import pickle
import signal
import struct
import subprocess
import sys
import textwrap
import time
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slimship.core import atomic
from slimship.core.errors import PackageError, SlimshipError
from slimship.package import format as fmt
from slimship.package.format import (
    FORMAT_VERSION,
    MAX_HEADER_BYTES,
    MAX_PART_BYTES,
    Package,
    PartInfo,
    read_package,
    sha256_file,
    verify_package,
    write_package,
)

# No example database: it would litter the repository with .hypothesis/.
FUZZ = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

MAGIC = b"SLIMPKG\x00"
PREFIX = struct.Struct("<8sHI")

COMPRESSIBLE = b"slimship " * 2000
RANDOM = b"".join(hashlib.sha256(i.to_bytes(4, "little")).digest() for i in range(64))  # 2 KiB, incompressible


# ------------------------------------------------------------------------------------------ helpers


def refused(path: Path | str, *fragments: str, verify: bool = True) -> str:
    """Assert read_package refuses ``path`` with a one-line PackageError containing ``fragments``."""
    with pytest.raises(PackageError) as info:
        read_package(path, verify=verify)
    message = str(info.value)
    assert "\n" not in message and message.strip() == message
    for fragment in fragments:
        assert fragment in message, message
    return message


def assemble(
    header: dict | bytes,
    data: bytes,
    *,
    version: int = FORMAT_VERSION,
    header_len: int | None = None,
    trailer: bytes | None = None,
) -> bytes:
    """Build package bytes by hand; the trailer is computed unless given."""
    hbytes = header if isinstance(header, bytes) else json.dumps(header).encode("utf-8")
    body = PREFIX.pack(MAGIC, version, len(hbytes) if header_len is None else header_len) + hbytes + data
    return body + (hashlib.sha256(body).digest() if trailer is None else trailer)


def split(blob: bytes) -> tuple[int, dict, bytes, bytes]:
    """(version, header, data area, trailer) of well-formed package bytes."""
    _, version, header_len = PREFIX.unpack_from(blob)
    header = json.loads(blob[PREFIX.size : PREFIX.size + header_len])
    return version, header, blob[PREFIX.size + header_len : -32], blob[-32:]


def part_entry(name: str, codec: str, offset: int, stored: bytes, raw: bytes) -> dict:
    return {
        "name": name,
        "codec": codec,
        "offset": offset,
        "stored_size": len(stored),
        "raw_size": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest(),
    }


def temp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name)


def _largest_temp(directory: Path) -> int:
    sizes = []
    for name in temp_files(directory):
        try:
            sizes.append((directory / name).stat().st_size)
        except FileNotFoundError:  # renamed or removed between listing and stat
            pass
    return max(sizes, default=0)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fmt")


@pytest.fixture(scope="module")
def good(workdir: Path) -> bytes:
    """A small package with one part per codec plus an empty one, written once for the fuzz tests."""
    path = workdir / "good.slim"
    write_package(
        path,
        {"format_version": 1, "model": {"architecture": "tiny", "class_names": ["a", "b"]}},
        {"model.onnx": COMPRESSIBLE[:600], "weights.bin": RANDOM[:200], "labels.txt": b"a\nb\n" * 20, "empty": b""},
        codecs={"model.onnx": "lzma", "weights.bin": "none", "labels.txt": "zlib", "empty": "none"},
    )
    blob = path.read_bytes()
    read_package(path)  # sanity: the fixture itself is valid
    return blob


def put(workdir: Path, blob: bytes, name: str = "case.slim") -> Path:
    path = workdir / name
    path.write_bytes(blob)
    return path


# ---------------------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("codec", ["none", "lzma", "zlib", "auto"])
def test_round_trip_every_codec(tmp_path: Path, codec: str) -> None:
    parts = {"model.onnx": COMPRESSIBLE, "weights.safetensors": RANDOM, "empty": b"", "one": b"\x00"}
    manifest = {"format_version": 1, "model": {"class_names": ["кошка", "犬", "a\"b"]}, "metrics": {"acc": 0.5}}
    path = tmp_path / "m.slim"

    written = write_package(path, manifest, parts, codecs={name: codec for name in parts})

    blob = path.read_bytes()
    assert written == len(blob) == os.path.getsize(path)
    package = read_package(path)
    assert package.manifest == manifest
    assert package.format_version == FORMAT_VERSION
    assert package.size_bytes == written
    assert package.path == str(path)
    assert list(package.parts) == list(parts)
    for name, raw in parts.items():
        assert package.read_part(name) == raw
        assert package.parts[name].raw_size == len(raw)
        assert package.parts[name].sha256 == hashlib.sha256(raw).hexdigest()
    assert package.package_sha256 == hashlib.sha256(blob[:-32]).hexdigest() == blob[-32:].hex()
    assert sha256_file(path) == hashlib.sha256(blob).hexdigest()
    if codec != "auto":
        assert {p.codec for p in package.parts.values()} == {codec}


def test_auto_codec_compresses_only_when_it_helps(tmp_path: Path) -> None:
    path = tmp_path / "a.slim"
    write_package(path, {}, {"text": COMPRESSIBLE, "noise": RANDOM, "empty": b""})
    parts = read_package(path).parts
    assert parts["text"].codec in ("zlib", "lzma") and parts["text"].stored_size < len(COMPRESSIBLE)
    assert parts["noise"].codec == "none" and parts["noise"].stored_size == len(RANDOM)
    assert parts["empty"].codec == "none" and parts["empty"].stored_size == 0


def test_no_parts_and_bytes_like_parts(tmp_path: Path) -> None:
    write_package(tmp_path / "none.slim", {"k": None}, {})
    assert read_package(tmp_path / "none.slim").parts == {}
    write_package(tmp_path / "bl.slim", {}, {"a": bytearray(b"xy"), "b": memoryview(b"z")}, codecs={"a": "zlib"})
    package = read_package(tmp_path / "bl.slim")
    assert package.read_part("a") == b"xy" and package.read_part("b") == b"z"


def test_bytes_on_disk_follow_the_documented_layout(good: bytes) -> None:
    magic, version, header_len = PREFIX.unpack_from(good)
    assert magic == b"SLIMPKG\x00" and version == 1
    header = json.loads(good[14 : 14 + header_len].decode("utf-8"))
    assert set(header) == {"manifest", "parts"}
    data = good[14 + header_len : -32]
    offset = 0
    for entry in header["parts"]:
        assert set(entry) == {"name", "codec", "offset", "stored_size", "raw_size", "sha256"}
        assert entry["offset"] == offset
        stored = data[offset : offset + entry["stored_size"]]
        raw = {"none": bytes, "lzma": lzma.decompress, "zlib": zlib.decompress}[entry["codec"]](stored)
        assert hashlib.sha256(raw).hexdigest() == entry["sha256"] and len(raw) == entry["raw_size"]
        offset += entry["stored_size"]
    assert offset == len(data)
    assert good[-32:] == hashlib.sha256(good[:-32]).digest()


def test_verify_package_reports_every_part(workdir: Path, good: bytes) -> None:
    path = put(workdir, good, "verify.slim")
    report = verify_package(path)
    assert report["path"] == str(path)
    assert report["format_version"] == 1
    assert report["size_bytes"] == len(good)
    assert report["package_sha256"] == hashlib.sha256(good[:-32]).hexdigest()
    assert [p["name"] for p in report["parts"]] == ["model.onnx", "weights.bin", "labels.txt", "empty"]
    assert all(p["ok"] is True and set(p) == {"name", "codec", "stored_size", "raw_size", "sha256", "ok"}
               for p in report["parts"])
    json.dumps(report)  # JSON-ready


def test_read_part_of_unknown_name(workdir: Path, good: bytes) -> None:
    package = read_package(put(workdir, good))
    with pytest.raises(PackageError, match=r"no part named 'nope' \(it has: model.onnx, weights.bin"):
        package.read_part("nope")


def test_package_built_by_hand_reads_parts_from_disk(workdir: Path, good: bytes) -> None:
    path = put(workdir, good, "byhand.slim")
    loaded = read_package(path)
    by_hand = Package(str(path), 1, loaded.manifest, loaded.parts, loaded.package_sha256, loaded.size_bytes)
    assert by_hand.read_part("labels.txt") == b"a\nb\n" * 20


def test_package_error_is_a_slimship_error() -> None:
    assert issubclass(PackageError, SlimshipError)
    assert PartInfo("a", "none", 0, 1, 1, "0" * 64).name == "a"


# ------------------------------------------------------------------------------------ write contract


@pytest.mark.parametrize(
    ("manifest", "parts", "codecs", "error"),
    [
        ([], {}, None, TypeError),
        ({"x": object()}, {}, None, TypeError),
        ({"x": {1: "int key"}}, {}, None, TypeError),
        ({"x": float("nan")}, {}, None, ValueError),
        ({}, {"": b"x"}, None, ValueError),
        ({}, {"a/b": b"x"}, None, ValueError),
        ({}, {"a\\b": b"x"}, None, ValueError),
        ({}, {"..": b"x"}, None, ValueError),
        ({}, {"a\x00": b"x"}, None, ValueError),
        ({}, {"x" * 256: b"x"}, None, ValueError),
        ({}, {"a": "text"}, None, TypeError),
        ({}, {"a": b"x"}, {"a": "gzip"}, ValueError),
        ({}, {"a": b"x"}, {"b": "none"}, ValueError),
        ({}, [("a", b"x")], None, TypeError),
    ],
)
def test_invalid_arguments_are_rejected_before_writing(
    tmp_path: Path, manifest: object, parts: object, codecs: object, error: type[Exception]
) -> None:
    with pytest.raises(error):
        write_package(tmp_path / "x.slim", manifest, parts, codecs)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_longest_valid_name_round_trips(tmp_path: Path) -> None:
    name = "é" * 255
    write_package(tmp_path / "n.slim", {}, {name: b"v"})
    assert read_package(tmp_path / "n.slim").read_part(name) == b"v"


def test_oversized_header_is_rejected_before_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fmt, "MAX_HEADER_BYTES", 1000)
    with pytest.raises(ValueError, match="header would be"):
        write_package(tmp_path / "h.slim", {"big": "x" * 2000}, {})
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "model.slim"
    write_package(path, {"v": "old"}, {"a": b"old"})
    old = path.read_bytes()

    with pytest.raises(TypeError):
        write_package(path, {"v": {1, 2}}, {"a": b"new"})

    assert path.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["model.slim"]


@pytest.mark.parametrize("failing", ["_fsync", "replace"])
def test_io_failure_mid_write_removes_the_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    path = tmp_path / "model.slim"
    write_package(path, {"v": "old"}, {"a": b"old"})
    old = path.read_bytes()
    seen: list[str] = []

    def boom(*args: object) -> None:
        seen.extend(temp_files(tmp_path))  # the temp file exists at this point, under a hidden name
        raise OSError(28, "No space left on device")

    if failing == "replace":
        monkeypatch.setattr(atomic.os, "replace", boom)
    else:
        monkeypatch.setattr(atomic, failing, boom)  # the one atomic writer, which write_package uses
    with pytest.raises(OSError, match="No space"):
        write_package(path, {"v": "new"}, {"a": b"new" * 1000})

    assert len(seen) == 1 and seen[0].startswith(".model.slim.tmp-")
    assert path.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["model.slim"]


def test_writer_killed_mid_write_never_leaves_a_partial_target(tmp_path: Path) -> None:
    target = tmp_path / "model.slim"
    write_package(target, {"v": "old"}, {"a": b"old"})
    old = target.read_bytes()
    script = textwrap.dedent(
        f"""
        import os
        from slimship.package.format import write_package
        big = b"".join(os.urandom(1 << 20) for _ in range(200))
        print("ready", flush=True)
        write_package({str(target)!r}, {{"v": "new"}}, {{"big": big}}, codecs={{"big": "none"}})
        print("done", flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n", proc.stderr.read() if proc.stderr else ""
        # Kill once part of the data has reached the temp file, so the victim is caught mid-write;
        # if the poll misses that window, kill anyway after a few seconds.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _largest_temp(tmp_path) < 2**20 and proc.poll() is None:
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)  # no-op if it already exited; the assert below catches that
    finally:
        if proc.poll() is None and proc.returncode is None:
            proc.kill()
        proc.wait(timeout=30)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()
    # Killed, not finished: a writer that completes in the window would exit 0 and prove nothing.
    assert proc.returncode == -signal.SIGKILL

    # The target is the complete old file, or (if the kill landed after the rename) the complete
    # new one; never a partial file.
    leftovers = [name for name in os.listdir(tmp_path) if name != "model.slim"]
    assert all(name.startswith(".model.slim.tmp-") for name in leftovers), leftovers
    if target.read_bytes() == old:
        assert read_package(target).manifest == {"v": "old"}
        assert len(leftovers) == 1  # the writer really was interrupted with its temp file open
    else:
        assert read_package(target).manifest == {"v": "new"}
    for name in leftovers:  # a half-written temp file is itself refused
        if (tmp_path / name).stat().st_size < 200 * 2**20:
            refused(tmp_path / name)


# ------------------------------------------------------------------------------- refusing bad files


def test_missing_file_and_directory(tmp_path: Path) -> None:
    refused(tmp_path / "nope.slim", "does not exist")
    refused(tmp_path, "is a directory")
    with pytest.raises(PackageError, match="does not exist"):
        sha256_file(tmp_path / "nope.slim")


def test_empty_file(tmp_path: Path) -> None:
    refused(put(tmp_path, b""), "is empty")


@pytest.mark.parametrize(
    "blob",
    [
        pickle.dumps({"weights": [1, 2, 3]}),
        b"PK\x03\x04" + b"\x00" * 100,
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 100,
        b'{"manifest": {}, "parts": []}',
        b"slimpkg\x00" + b"\x00" * 100,
        b"X",
    ],
)
def test_foreign_files_are_not_slimship_packages(tmp_path: Path, blob: bytes) -> None:
    refused(put(tmp_path, blob), "is not a slimship package")


def test_real_zip_file_is_not_a_slimship_package(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("model.onnx", b"onnx")
    refused(put(tmp_path, buffer.getvalue()), "is not a slimship package", "written by slimship")


def test_truncated_at_every_offset(workdir: Path, good: bytes) -> None:
    path = workdir / "cut.slim"
    for cut in range(len(good)):
        path.write_bytes(good[:cut])
        message = refused(path)
        if cut:
            assert "truncated" in message, (cut, message)
            assert f"found {cut}" in message


def test_truncation_message_names_both_sizes(workdir: Path, good: bytes) -> None:
    message = refused(
        put(workdir, good[:-10]), "is truncated", f"expected {len(good)} bytes", f"found {len(good) - 10}"
    )
    assert "re-create or re-download" in message


def test_appended_bytes_are_refused(workdir: Path, good: bytes) -> None:
    refused(put(workdir, good + b"\x00"), "1 unexpected bytes")


@settings(FUZZ, max_examples=150)
@given(data=st.data())
def test_any_single_bit_flip_is_refused(workdir: Path, good: bytes, data: st.DataObject) -> None:
    position = data.draw(st.integers(0, len(good) - 1), label="position")
    bit = data.draw(st.integers(0, 7), label="bit")
    flipped = bytearray(good)
    flipped[position] ^= 1 << bit
    refused(put(workdir, bytes(flipped), "flip.slim"))


@settings(FUZZ, max_examples=50)
@given(data=st.data())
def test_any_overwritten_span_is_refused(workdir: Path, good: bytes, data: st.DataObject) -> None:
    start = data.draw(st.integers(0, len(good) - 1), label="start")
    patch = data.draw(st.binary(min_size=1, max_size=64), label="patch")
    damaged = bytearray(good)
    damaged[start : start + len(patch)] = patch[: len(good) - start]
    if bytes(damaged) == good:
        return
    refused(put(workdir, bytes(damaged), "span.slim"))


@settings(FUZZ, max_examples=40)
@given(blob=st.binary(max_size=512))
def test_random_garbage_is_refused(workdir: Path, blob: bytes) -> None:
    refused(put(workdir, blob, "garbage.slim"))
    refused(put(workdir, MAGIC + blob, "garbage2.slim"))


def test_data_corruption_is_caught_by_read_part_without_verify(workdir: Path, good: bytes) -> None:
    _, header, data, _ = split(good)
    weights = next(p for p in header["parts"] if p["name"] == "weights.bin")
    damaged = bytearray(good)
    damaged[len(good) - 32 - len(data) + weights["offset"]] ^= 0x01
    path = put(workdir, bytes(damaged))
    refused(path, "modified or corrupted")
    package = read_package(path, verify=False)  # structure is intact, so it opens...
    with pytest.raises(PackageError, match="'weights.bin' failed its SHA-256 check"):
        package.read_part("weights.bin")  # ...but the damaged part is never returned
    assert package.read_part("labels.txt") == b"a\nb\n" * 20


# ------------------------------------------------------------------------------- versions and bounds


def test_newer_format_version_is_refused_naming_both_versions(workdir: Path, good: bytes) -> None:
    _, header, data, _ = split(good)
    refused(
        put(workdir, assemble(header, data, version=FORMAT_VERSION + 1)),
        f"format version {FORMAT_VERSION + 1}",
        f"reads up to {FORMAT_VERSION}",
        "upgrade slimship",
    )
    # A newer version may lay out its header differently: the version is checked first.
    refused(put(workdir, assemble(b"\xff" * 40, b"", version=7)), "format version 7", "upgrade slimship")


def test_format_version_zero_is_refused(workdir: Path, good: bytes) -> None:
    _, header, data, _ = split(good)
    refused(put(workdir, assemble(header, data, version=0)), "format version 0")


def test_older_format_versions_are_readable(monkeypatch: pytest.MonkeyPatch, workdir: Path, good: bytes) -> None:
    # Simulate a future reader (version 2) opening today's version-1 file.
    monkeypatch.setattr(fmt, "FORMAT_VERSION", 2)
    assert read_package(put(workdir, good)).format_version == 1


def _peak_allocation(fn) -> int:
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_oversized_header_len_is_refused_without_allocating(workdir: Path) -> None:
    path = put(workdir, PREFIX.pack(MAGIC, 1, 0xFFFFFFFF) + b"\x00" * 100)
    peak = _peak_allocation(lambda: refused(path, f"over the {MAX_HEADER_BYTES}-byte limit"))
    assert peak < 2**20
    # Within the bound but past the end of the file: truncated, still nothing allocated.
    path = put(workdir, PREFIX.pack(MAGIC, 1, MAX_HEADER_BYTES) + b"\x00" * 100)
    peak = _peak_allocation(lambda: refused(path, "truncated", f"expected at least {14 + MAX_HEADER_BYTES + 32}"))
    assert peak < 2**20


@pytest.mark.parametrize("raw_size", [MAX_PART_BYTES + 1, 2**62, 10**40])
def test_oversized_raw_size_is_refused_without_allocating(workdir: Path, raw_size: int) -> None:
    stored = lzma.compress(b"tiny")
    entry = part_entry("p", "lzma", 0, stored, b"tiny") | {"raw_size": raw_size}
    path = put(workdir, assemble({"manifest": {}, "parts": [entry]}, stored))
    peak = _peak_allocation(lambda: refused(path, "over the", "limit"))
    assert peak < 2**20


@pytest.mark.parametrize("stored_size", [1000, 2**40])
def test_declared_stored_size_is_checked_against_the_file(workdir: Path, stored_size: int) -> None:
    entry = part_entry("p", "zlib", 0, b"", b"") | {"stored_size": stored_size}
    blob = assemble({"manifest": {}, "parts": [entry]}, b"x" * 10)
    path = put(workdir, blob)
    peak = _peak_allocation(lambda: refused(path, "truncated", f"found {len(blob)}"))
    assert peak < 2**20


@pytest.mark.parametrize("codec", ["zlib", "lzma"])
def test_decompression_bomb_is_stopped_after_the_declared_size(workdir: Path, codec: str) -> None:
    bomb_raw = bytes(16 * 2**20)
    stored = zlib.compress(bomb_raw, 9) if codec == "zlib" else lzma.compress(bomb_raw, preset=1)
    declared = b"\x00" * 1000
    entry = part_entry("bomb", codec, 0, stored, declared)
    path = put(workdir, assemble({"manifest": {}, "parts": [entry]}, stored))
    peak = _peak_allocation(lambda: refused(path, "'bomb' decodes to more than 1000 bytes"))
    assert peak < 4 * 2**20


@pytest.mark.parametrize(
    ("codec", "stored", "fragment"),
    [
        ("zlib", zlib.compress(b"hello")[:-3], "incomplete"),
        ("zlib", zlib.compress(b"hello") + b"junk", "stray bytes"),
        ("lzma", lzma.compress(b"hello")[:-10], "cannot be decoded"),
        ("lzma", lzma.compress(b"hello") + b"\x00" * 4, "stray bytes"),
        ("lzma", b"definitely not xz", "cannot be decoded"),
        ("zlib", b"definitely not zlib", "cannot be decoded"),
        ("zlib", zlib.compress(b"hell"), "decodes to 4 bytes but the header says 5"),
    ],
)
def test_broken_compressed_streams_are_refused(workdir: Path, codec: str, stored: bytes, fragment: str) -> None:
    entry = part_entry("p", codec, 0, stored, b"hello")
    refused(put(workdir, assemble({"manifest": {}, "parts": [entry]}, stored)), fragment)


# --------------------------------------------------------------------------------- tampering (limits)


def _tamper_weights(good: bytes) -> tuple[dict, bytes, bytes]:
    """Replace weights.bin (stored uncompressed) and recompute its sha256 in the header."""
    _, header, data, _ = split(good)
    entry = next(p for p in header["parts"] if p["name"] == "weights.bin")
    evil = bytes(entry["raw_size"])  # same size, so offsets stay valid
    start = entry["offset"]
    data = data[:start] + evil + data[start + len(evil) :]
    entry["sha256"] = hashlib.sha256(evil).hexdigest()
    return header, data, evil


def test_tampered_part_with_recomputed_part_hash_but_old_trailer_is_refused(workdir: Path, good: bytes) -> None:
    header, data, _ = _tamper_weights(good)
    refused(put(workdir, assemble(header, data, trailer=good[-32:])), "modified or corrupted")


def test_fully_rehashed_tampering_loads_because_the_format_is_unsigned(workdir: Path, good: bytes) -> None:
    # The documented limit: hashes prove integrity, not authenticity. Authenticity needs the
    # package hash to be compared with one obtained from a trusted place (e.g. the registry).
    header, data, evil = _tamper_weights(good)
    package = read_package(put(workdir, assemble(header, data)))
    assert package.read_part("weights.bin") == evil
    assert package.package_sha256 != good[-32:].hex()


# -------------------------------------------------------------------------------- hostile headers


def _valid_entry() -> dict:
    return part_entry("p", "none", 0, b"abc", b"abc")


HOSTILE_HEADERS: list[tuple[str, object, str]] = [
    ("not an object", [1, 2], "expected a JSON object"),
    ("missing parts", {"manifest": {}}, "exactly the keys"),
    ("extra key", {"manifest": {}, "parts": [], "x": 1}, "exactly the keys"),
    ("manifest array", {"manifest": [], "parts": []}, "manifest must be an object"),
    ("parts object", {"manifest": {}, "parts": {}}, "parts must be an array"),
    ("part not object", {"manifest": {}, "parts": ["p"]}, "part 0 must be an object"),
    ("part missing key", {"manifest": {}, "parts": [{"name": "p"}]}, "must have exactly the keys"),
    ("name int", {"manifest": {}, "parts": [_valid_entry() | {"name": 5}]}, "name must be a string"),
    ("name slash", {"manifest": {}, "parts": [_valid_entry() | {"name": "../x"}]}, "is invalid"),
    ("name empty", {"manifest": {}, "parts": [_valid_entry() | {"name": ""}]}, "must not be empty"),
    ("name NUL", {"manifest": {}, "parts": [_valid_entry() | {"name": "a\x00"}]}, "control characters"),
    ("codec", {"manifest": {}, "parts": [_valid_entry() | {"codec": "pickle"}]}, "unknown codec"),
    ("codec type", {"manifest": {}, "parts": [_valid_entry() | {"codec": ["none"]}]}, "unknown codec"),
    ("offset negative", {"manifest": {}, "parts": [_valid_entry() | {"offset": -1}]}, "non-negative integer"),
    ("offset float", {"manifest": {}, "parts": [_valid_entry() | {"offset": 0.0}]}, "non-negative integer"),
    ("offset bool", {"manifest": {}, "parts": [_valid_entry() | {"offset": False}]}, "non-negative integer"),
    ("size string", {"manifest": {}, "parts": [_valid_entry() | {"stored_size": "3"}]}, "non-negative integer"),
    ("raw null", {"manifest": {}, "parts": [_valid_entry() | {"raw_size": None}]}, "non-negative integer"),
    ("none sizes", {"manifest": {}, "parts": [_valid_entry() | {"raw_size": 4}]}, "stored uncompressed"),
    ("sha short", {"manifest": {}, "parts": [_valid_entry() | {"sha256": "ab"}]}, "64 lowercase hex"),
    ("sha upper", {"manifest": {}, "parts": [_valid_entry() | {"sha256": "A" * 64}]}, "64 lowercase hex"),
    ("sha int", {"manifest": {}, "parts": [_valid_entry() | {"sha256": 1}]}, "64 lowercase hex"),
    ("offset out of range", {"manifest": {}, "parts": [_valid_entry() | {"offset": 1}]}, "must start at 0"),
    (
        "overlap",
        {"manifest": {}, "parts": [_valid_entry(), _valid_entry() | {"name": "q", "offset": 1}]},
        "must start at 3",
    ),
    ("duplicate", {"manifest": {}, "parts": [_valid_entry(), _valid_entry() | {"offset": 3}]}, "appears twice"),
]


@pytest.mark.parametrize(
    ("header", "fragment"), [h[1:] for h in HOSTILE_HEADERS], ids=[h[0] for h in HOSTILE_HEADERS]
)
def test_hostile_header_structures_are_refused(workdir: Path, header: object, fragment: str) -> None:
    hbytes = json.dumps(header).encode("utf-8")
    message = refused(put(workdir, assemble(hbytes, b"abc" * 4)), fragment)
    assert "invalid header" in message


@pytest.mark.parametrize(
    ("hbytes", "fragment"),
    [
        (b'{"manifest": {}, "parts": [], "parts": []}', "duplicate key"),
        (b'{"manifest": {"x": NaN}, "parts": []}', "NaN is not allowed"),
        (b'{"manifest": {}, "parts": [', "not valid JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"manifest": {}, "parts": [], "n": ' + b"9" * 10_000 + b"}", "not valid JSON"),
        (b"", "not valid JSON"),
    ],
)
def test_unparseable_headers_are_refused(workdir: Path, hbytes: bytes, fragment: str) -> None:
    refused(put(workdir, assemble(hbytes, b"")), fragment)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@settings(FUZZ, max_examples=60)
@given(data=st.data())
def test_mutated_headers_never_escape_as_other_exceptions(workdir: Path, good: bytes, data: st.DataObject) -> None:
    _, header, body, _ = split(good)
    entries = header["parts"]
    target = data.draw(st.sampled_from(["top", "manifest", "part"]), label="target")
    value = data.draw(JSON_VALUES, label="value")
    if target == "top":
        header[data.draw(st.sampled_from(["manifest", "parts", "extra"]), label="key")] = value
    elif target == "manifest":
        header["manifest"] = value if isinstance(value, dict) else {"v": value}
    else:
        entry = entries[data.draw(st.integers(0, len(entries) - 1), label="index")]
        entry[data.draw(st.sampled_from(sorted(entry) + ["extra"]), label="field")] = value
    path = put(workdir, assemble(json.dumps(header).encode("utf-8"), body), "mutated.slim")
    try:
        package = read_package(path)
    except PackageError as e:
        assert "\n" not in str(e)
        return
    # Whatever still loads must be internally consistent.
    for name in package.parts:
        package.read_part(name)
