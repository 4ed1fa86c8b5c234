"""Hash-valid but hostile packages (issue 11): a package that passes its hashes may still have been written by
someone hostile. Each test builds the smallest package that showed a hole: external data read from the user's
folder, manifest values that blew up later, decompression bombs within the size limits, and a FIFO."""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
import sys
import tracemalloc
import zlib
from pathlib import Path

import pytest

import slimship
from slimship.cli.main import main
from slimship.core.errors import PackageError
from slimship.package.format import MAX_PACKAGE_RAW_BYTES, read_package, verify_package, write_package
from slimship.package.pack import load_package, pack
from slimship.package.store import Store
from slimship.package.verify import verify

from .conftest import CLASSES, SIZE, make_external, manifest, tiny_graph

SRC = str(Path(slimship.__file__).resolve().parents[1])  # the slimship under test, also in subprocesses


def one_line_error(capsys, argv: list, *phrases: str) -> str:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, (code, err)
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "\x1b" not in captured.out + captured.err
    for phrase in phrases:
        assert phrase in err, err
    return err


def cli(args: list, *, cwd: Path | None = None, memory: int | None = None, timeout: float = 60):
    """The CLI in a fresh process (optionally with an address-space limit): (exit code, stdout, stderr)."""
    def limit() -> None:
        if memory is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    env = {**os.environ, "PYTHONPATH": SRC, "PYTHONWARNINGS": "ignore"}
    r = subprocess.run([sys.executable, "-m", "slimship.cli.main", *map(str, args)], capture_output=True, text=True,
                       cwd=cwd, env=env, timeout=timeout, preexec_fn=limit)
    return r.returncode, r.stdout, r.stderr


def package(path: Path, graph: bytes, m: dict | None = None) -> Path:
    write_package(path, manifest() if m is None else m, {"model.onnx": graph})
    return path


# ------------------------------------------------------------------------------------ external data (item 1)


def test_external_data_is_never_read_from_the_working_folder(tmp_path, monkeypatch, capsys):
    # The weight lives in ./secret.bin: before the fix, predict ran on it silently.
    graph = tiny_graph(external="secret.bin")
    (tmp_path / "secret.bin").write_bytes(bytes(SIZE * SIZE * 3 * CLASSES * 4))
    path = package(tmp_path / "evil.slim", graph)
    monkeypatch.chdir(tmp_path)
    for load in (load_package, verify):
        with pytest.raises(PackageError, match="refers to data outside the package.*'w' is stored in file 'secret.bin'"):
            load(path)
    verify_package(path)  # the container itself is intact: it is the graph that is refused
    one_line_error(capsys, ["verify", path], "outside the package")
    one_line_error(capsys, ["inspect", path], "outside the package")
    one_line_error(capsys, ["export", path, "--onnx", tmp_path / "x.onnx"], "outside the package")
    assert not (tmp_path / "x.onnx").exists()
    with pytest.raises(PackageError, match="outside the package"):
        pack(tmp_path / "p.slim", onnx=graph, architecture="t", class_names=["a", "b", "c"],
             preprocessing=load_package_pre())
    with pytest.raises(PackageError, match="outside the package"):
        Store(tmp_path / "store").push(path, name="evil", version="1")
    assert not (tmp_path / "p.slim").exists() and not (tmp_path / "store").exists()


def load_package_pre():
    from slimship.data.transforms import ImagePreprocessing

    return ImagePreprocessing(image_size=SIZE, channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)


def png(path: Path) -> Path:
    from PIL import Image

    Image.new("RGB", (16, 16), (90, 120, 200)).save(path)
    return path


@pytest.mark.parametrize("location", ["/etc/hostname", "../outside.bin", "sub/../../x.bin"])
def test_external_paths_outside_the_folder_are_one_line(tmp_path, capsys, location):
    # Before the fix: an ONNX Runtime traceback when predict opened the session.
    path = package(tmp_path / "evil.slim", tiny_graph(external=location))
    err = one_line_error(capsys, ["predict", path, png(tmp_path / "img.png")], "outside the package")
    assert location in err


def _constant_attribute(m) -> None:
    from onnx import helper, numpy_helper
    import numpy as np

    t = numpy_helper.from_array(np.zeros(4, np.float32), "c")
    make_external(t, "secret.bin")
    m.graph.node.append(helper.make_node("Constant", [], ["unused"], value=t))


def _subgraph(m) -> None:
    from onnx import TensorProto, helper, numpy_helper
    import numpy as np

    t = numpy_helper.from_array(np.zeros(4, np.float32), "deep")
    make_external(t, "secret.bin")
    inner = helper.make_graph([helper.make_node("Constant", [], ["o"], value=t)], "inner", [],
                              [helper.make_tensor_value_info("o", TensorProto.FLOAT, [4])])
    outer = helper.make_graph([helper.make_node("If", ["cond"], ["o2"], then_branch=inner, else_branch=inner)],
                              "outer", [], [helper.make_tensor_value_info("o2", TensorProto.FLOAT, [4])])
    m.graph.node.append(helper.make_node("Loop", ["", "cond"], ["unused"], body=outer))  # two levels deep


def _sparse_initializer(m) -> None:
    from onnx import helper, numpy_helper
    import numpy as np

    values = numpy_helper.from_array(np.ones(2, np.float32), "sv")
    make_external(values, "secret.bin")
    m.graph.sparse_initializer.append(helper.make_sparse_tensor(
        values, numpy_helper.from_array(np.array([0, 3], np.int64), "si"), [4]))


def _function(m) -> None:
    from onnx import helper, numpy_helper
    import numpy as np

    t = numpy_helper.from_array(np.zeros(4, np.float32), "f")
    make_external(t, "secret.bin")
    m.functions.append(helper.make_function("local", "fn", [], ["y"], [helper.make_node("Constant", [], ["y"], value=t)],
                                            [helper.make_opsetid("", 17)]))


@pytest.mark.parametrize("hide", [_constant_attribute, _subgraph, _sparse_initializer, _function])
def test_external_data_is_found_wherever_onnx_can_hold_a_tensor(tmp_path, hide):
    path = package(tmp_path / "evil.slim", tiny_graph(model=hide))
    with pytest.raises(PackageError, match="outside the package"):
        verify(path)
    with pytest.raises(PackageError, match="outside the package"):
        load_package(path)


def test_a_store_holding_external_data_refuses_to_hand_it_out(tmp_path, monkeypatch, graph_bytes):
    from slimship.package.store import records

    path = package(tmp_path / "evil.slim", tiny_graph(external="secret.bin"))
    store = Store(tmp_path / "store")
    with monkeypatch.context() as m:  # a store written by an older slimship, or by hand
        m.setattr(records, "check_package", lambda pkg: {})
        store.push(path, name="evil", version="1")
    with pytest.raises(PackageError, match="re-assembled package failed verification.*outside the package"):
        store.pull("evil@1", tmp_path / "got.slim")
    assert not (tmp_path / "got.slim").exists()


# ---------------------------------------------------------------------------------- hostile manifests (item 7)


HOSTILE_MANIFESTS = {
    "image_size 0": manifest(image_size=0),
    "image_size -5": manifest(image_size=-5),
    "image_size 20000": manifest(image_size=20_000),
    "image_size 100000": manifest(image_size=100_000),
    "channels 7": manifest(channels=7),
    "std 0": manifest(std=[0.0, 0.25, 0.25]),
    "mean as text": manifest(mean="0.5"),
    "image_size 32.7": manifest(image_size=32.7),
    "unknown interpolation": manifest(interpolation="lanczos"),
    "3 names, 10 outputs": manifest(classes=3),  # written with the 10-output graph below
    "ANSI escape in a class name": {**manifest(), "model": {**manifest()["model"],
                                                            "class_names": ["cat", "\x1b[2J\x1b[31mdog", "cow"]}},
    "num_classes differs": {**manifest(), "model": {**manifest()["model"], "num_classes": 10}},
    "metrics not an object": {**manifest(), "metrics": [1, 2]},
    "runtime not text": {**manifest(), "model": {**manifest()["model"], "runtime": ["tensorrt"]}},
}


@pytest.mark.parametrize("case", list(HOSTILE_MANIFESTS))
def test_hostile_manifest_values_are_refused_at_read_time(tmp_path, capsys, case):
    graph = tiny_graph(classes=10) if "10 outputs" in case else tiny_graph()
    path = package(tmp_path / "m.slim", graph, HOSTILE_MANIFESTS[case])
    verify_package(path)  # every hash is fine
    with pytest.raises(PackageError) as info:
        verify(path)
    assert "\n" not in str(info.value) and "\x1b" not in str(info.value)
    with pytest.raises(PackageError):
        load_package(path)
    for command in (["verify", path], ["inspect", path], ["predict", path, png(tmp_path / "img.png")]):
        one_line_error(capsys, command)


def test_image_size_bombs_stay_one_line_under_a_memory_limit(tmp_path):
    # Before the fix: image_size 100,000 made predict allocate > 5 GB (here: hit the limit). 6 GiB of address
    # space is what importing torch alone reserves.
    path = package(tmp_path / "big.slim", tiny_graph(), manifest(image_size=100_000))
    code, out, err = cli(["predict", path, png(tmp_path / "img.png")], memory=6 * 2**30)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "image_size 100000 is out of bounds" in err, err


def test_manifest_text_is_printed_escaped(tmp_path, capsys):
    m = manifest()
    m["created"] = "\x1b]0;owned\x07\x1b[2J2026"
    m["model"]["architecture"] = "tiny\u202egnp.exe"  # a bidi override is refused, not just escaped
    path = package(tmp_path / "esc.slim", tiny_graph(), m)
    one_line_error(capsys, ["inspect", path], "control characters")
    m["model"]["architecture"] = "tiny"
    path = package(tmp_path / "esc.slim", tiny_graph(), m)
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\\x1b]0;owned\\x07" in out
    store = Store(tmp_path / "store")
    store.push(path, name="esc", version="1")
    assert main(["store", "list", str(tmp_path / "store")]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "esc@1" in out


def test_pack_refuses_what_readers_would_refuse(tmp_path):
    with pytest.raises(PackageError, match="class name .* holds control characters"):
        pack(tmp_path / "p.slim", onnx=tiny_graph(), architecture="t", class_names=["a", "b\x1b[0m", "c"],
             preprocessing=load_package_pre())
    with pytest.raises(PackageError, match="lists 2 class names but the deploy graph gives outputs of shape"):
        pack(tmp_path / "p.slim", onnx=tiny_graph(), architecture="t", class_names=["a", "b"],
             preprocessing=load_package_pre())
    assert not (tmp_path / "p.slim").exists()


def test_a_base_package_is_verified_but_not_loaded_for_prediction(tmp_path):
    # A base package (a backbone stored for task deltas) lists no classes: valid, but it cannot classify.
    m = manifest()
    m["model"].update(class_names=[], num_classes=0)
    path = package(tmp_path / "base.slim", tiny_graph(classes=16), m)
    assert verify(path)["classes"] == 0
    with pytest.raises(PackageError, match="no class names: it is a base package"):
        load_package(path)


# ---------------------------------------------------------------------------------------- bombs (item 8)


def zero_zlib(n: int, block: int = 2**20) -> bytes:
    """A valid zlib stream of ``n`` zero bytes (a multiple of ``block``), built in a fraction of the time
    compressing them takes: after a full flush deflate starts afresh, so every later block encodes the same."""
    c = zlib.compressobj(9)
    first = c.compress(bytes(block)) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(bytes(block)) + c.flush(zlib.Z_FULL_FLUSH)
    end = c.flush()[:-4]  # the final block; its Adler-32 covered only what this compressor saw
    adler = 1
    for _ in range(n // block):
        adler = zlib.adler32(bytes(block), adler)
    return first + again * (n // block - 1) + end + adler.to_bytes(4, "big")


def zeros_sha256(n: int, block: int = 2**20) -> str:
    h = hashlib.sha256()
    zero = bytes(block)
    for _ in range(n // block):
        h.update(zero)
    return h.hexdigest()


def hand_made(path: Path, parts: list[tuple[str, bytes, int, str]]) -> Path:
    """A package whose zlib parts (stored bytes, raw size, raw sha256) are given already encoded."""
    import json
    import struct

    entries, offset = [], 0
    for name, stored, raw_size, digest in parts:
        entries.append({"name": name, "codec": "zlib", "offset": offset, "stored_size": len(stored),
                        "raw_size": raw_size, "sha256": digest})
        offset += len(stored)
    header = json.dumps({"manifest": manifest(), "parts": entries}).encode()
    body = struct.pack("<8sHI", b"SLIMPKG\x00", 1, len(header)) + header + b"".join(p[1] for p in parts)
    path.write_bytes(body + hashlib.sha256(body).digest())
    return path


@pytest.fixture(scope="module")
def gib_bomb(tmp_path_factory) -> Path:
    """The probe's bomb: four honest 1 GiB parts of zeros in a 4 MB file."""
    stored, digest = zero_zlib(2**30), zeros_sha256(2**30)
    return hand_made(tmp_path_factory.mktemp("bomb") / "bomb.slim", [(n, stored, 2**30, digest) for n in "abcd"])


def test_four_gib_of_zeros_in_a_few_megabytes_are_refused_before_decoding(gib_bomb, capsys):
    assert gib_bomb.stat().st_size < 8 * 2**20
    tracemalloc.start()
    try:
        with pytest.raises(PackageError, match=f"over the {MAX_PACKAGE_RAW_BYTES:,}-byte limit per package"):
            verify_package(gib_bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20
    # Every command, in a process that could not even hold one decoded part.
    for command in (["verify", gib_bomb], ["inspect", gib_bomb]):
        code, _, err = cli(command, memory=768 * 2**20)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "limit per package" in err, err


def test_one_large_zero_part_is_a_bomb_by_its_ratio(tmp_path):
    stored, digest = zero_zlib(2**30), zeros_sha256(2**30)
    path = hand_made(tmp_path / "one.slim", [("model.onnx", stored, 2**30, digest)])
    with pytest.raises(PackageError, match="over the 256:1 limit for parts over 64 MiB: a decompression bomb"):
        read_package(path, verify=False)


def test_verify_streams_parts_in_bounded_memory(tmp_path):
    # 48 MiB of zeros (within every limit) verified without ever holding them: before the fix, verify held the
    # whole decoded part (and read_package the whole data area).
    n = 48 * 2**20
    path = hand_made(tmp_path / "zeros.slim", [("zeros", zero_zlib(n), n, zeros_sha256(n))])
    tracemalloc.start()
    try:
        report = verify_package(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report["parts"][0]["raw_size"] == n
    assert peak < 8 * 2**20, peak


# ----------------------------------------------------------------------------------------- FIFO (item 5)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_verify_on_a_fifo_is_refused_instead_of_hanging(tmp_path):
    fifo = tmp_path / "pipe.slim"
    os.mkfifo(fifo)
    for command in (["verify", fifo], ["inspect", fifo], ["push", fifo, tmp_path / "store"]):
        code, _, err = cli(command, timeout=30)  # before the fix: waits for a writer forever
        assert code == 2 and "is not a regular file" in err, err
