"""Property-based fuzzing of hash-valid packages (issue 11): whatever a writer puts in the manifest and the parts,
every reader either succeeds or raises a one-line SlimshipError, the CLI exits 0 or 2 with one line and no
traceback, and a CLI process under a memory limit never runs out of it.

Every example is written with ``write_package``, so its hashes are valid: only what the bytes *mean* is hostile.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import slimship
from slimship.cli.main import main
from slimship.core.errors import SlimshipError
from slimship.package.deploy import deploy_parts
from slimship.package.format import write_package
from slimship.package.pack import load_package
from slimship.package.verify import verify

from .conftest import manifest, tiny_graph

SRC = str(Path(slimship.__file__).resolve().parents[1])
FUZZ = dict(deadline=None, database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])

GOOD = tiny_graph()
GRAPHS = {"good": GOOD, "ten classes": tiny_graph(classes=10), "size 16": tiny_graph(size=16),
          "one channel": tiny_graph(channels=1), "external": tiny_graph(external="secret.bin")}
ENCODED = deploy_parts(GOOD, encode_weights=True).parts  # graph.onnx + weights.bin

# JSON values a hostile writer might put anywhere: the probe's numbers, huge and negative integers, any float,
# text with control characters and escapes, and nested lists and objects.
SCALARS = (st.none() | st.booleans() | st.sampled_from([0, -5, 1, 3, 7, 8, 1024, 20_000, 100_000, 2**31, 10**30])
           | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
           | st.text(max_size=12) | st.sampled_from(["image", "bilinear", "onnxruntime", "\x1b[2J", "\u202e", ""]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=8), inner, max_size=4), max_leaves=8)
PATHS = [("model",), ("model", "class_names"), ("model", "class_names", 0), ("model", "num_classes"),
         ("model", "runtime"), ("model", "architecture"), ("model", "arch_edits"), ("model", "weights_encoding"),
         ("preprocessing",), ("preprocessing", "kind"), ("preprocessing", "image_size"), ("preprocessing", "channels"),
         ("preprocessing", "model_channels"), ("preprocessing", "mean"), ("preprocessing", "mean", 0),
         ("preprocessing", "std"), ("preprocessing", "std", 2), ("preprocessing", "interpolation"),
         ("preprocessing", "extra"), ("metrics",), ("metrics", "accuracy"), ("recipe",), ("recipe", "name"),
         ("card",), ("created",), ("slimship_version",), ("delta",), ("rebuilt_from",)]


def _apply(m: dict, path: tuple, value, delete: bool) -> None:
    *parents, last = path
    node = m
    for key in parents:
        node = node[key] if isinstance(node, dict) and key in node else None
        if not isinstance(node, (dict, list)):
            return
    if isinstance(node, list):
        if not isinstance(last, int) or last >= len(node):
            return
        if delete:
            del node[last]
        else:
            node[last] = value
    elif not isinstance(last, str):  # an index into what became an object: JSON keys are strings
        return
    elif delete:
        node.pop(last, None)
    else:
        node[last] = value


@st.composite
def manifests(draw) -> dict:
    m = copy.deepcopy(manifest())
    for _ in range(draw(st.integers(0, 3))):
        _apply(m, draw(st.sampled_from(PATHS)), draw(VALUES), draw(st.booleans()))
    if draw(st.integers(0, 9)) == 0:  # now and then, a long class list
        _apply(m, ("model", "class_names"), [draw(st.text(max_size=3)) for _ in range(draw(st.integers(0, 40)))], False)
    return m


def _mutate(data: bytes, draw) -> bytes:
    how = draw(st.sampled_from(["flip", "truncate", "append", "keep"]))
    if how == "flip" and data:
        out = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(out) - 1))
            out[i] ^= draw(st.integers(1, 255))
        return bytes(out)
    if how == "truncate":
        return data[: draw(st.integers(0, len(data)))]
    if how == "append":
        return data + draw(st.binary(max_size=64))
    return data


@st.composite
def parts(draw) -> dict[str, bytes]:
    kind = draw(st.sampled_from(["graph", "graph", "encoded", "random", "none"]))
    if kind == "graph":
        out = {"model.onnx": _mutate(GRAPHS[draw(st.sampled_from(sorted(GRAPHS)))], draw)}
    elif kind == "encoded":
        which = draw(st.sampled_from(["graph.onnx", "weights.bin"]))
        out = {**ENCODED, which: _mutate(ENCODED[which], draw)}
    elif kind == "random":
        out = {draw(st.sampled_from(["model.onnx", "graph.onnx", "weights.bin", "delta.bin"])): draw(st.binary(max_size=300))}
    else:
        out = {}
    if draw(st.booleans()):
        out["extra.bin"] = draw(st.binary(max_size=64))
    return out


def _outcome(fn, *args):
    """fn(*args), or None when it raises a SlimshipError; anything else propagates and fails the test."""
    try:
        return fn(*args)
    except SlimshipError as e:
        assert "\n" not in str(e) and "\x1b" not in str(e), str(e)
        return None


def _cli(*argv) -> None:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    assert "\x1b" not in out.getvalue() + err.getvalue()
    if code != 0:
        lines = err.getvalue().strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("slimship: error: "), (code, err.getvalue())


def _check_everything(path: Path) -> None:
    _outcome(verify, path)
    loaded = _outcome(load_package, path)
    if loaded is not None:
        images = np.random.default_rng(0).integers(0, 256, (2, 12, 12, 3), dtype=np.uint8)
        logits = _outcome(loaded.logits, images)
        assert logits is None or logits.shape == (2, len(loaded.class_names))
    _cli("verify", path)
    _cli("inspect", path)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A folder for the examples, with two costs that say nothing about hostile input taken away: fsync (each
    example rewrites one file) and building the CLI's argument parser (50 ms, the same parser every time)."""
    import functools

    import slimship.cli.main as cli_main
    from slimship.core import atomic

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(atomic, "_fsync", lambda fd: None)
        mp.setattr(atomic, "_fsync_dir", lambda directory: None)
        mp.setattr(cli_main, "build_parser", functools.lru_cache(maxsize=1)(cli_main.build_parser))
        yield tmp_path_factory.mktemp("fuzz")


# lzma is left out: its preset-9 encoder costs 0.1 s per example, and its decoder is fuzzed in test_format.py.
CODECS = st.sampled_from(["none", "zlib"])


@settings(max_examples=1000, **FUZZ)
@given(m=manifests(), codec=CODECS)
def test_any_manifest_is_read_or_refused_in_one_line(folder, m, codec):
    path = folder / "manifest.slim"
    write_package(path, m, {"model.onnx": GOOD}, codecs={"model.onnx": codec})
    _check_everything(path)


@settings(max_examples=500, **FUZZ)
@given(m=manifests(), p=parts(), codec=CODECS)
def test_any_part_bytes_are_read_or_refused_in_one_line(folder, m, p, codec):
    path = folder / "parts.slim"
    write_package(path, m, p, codecs={name: codec for name in p})
    _check_everything(path)


@settings(max_examples=6, **FUZZ)
@given(m=manifests(), p=parts())
def test_the_cli_in_a_memory_limited_process(folder, m, p):
    """The same inputs through the real command line, in a process that may not map more than 512 MiB."""
    path = folder / "limited.slim"
    p = p or {"model.onnx": GOOD}
    write_package(path, m, p, codecs={name: "zlib" for name in p})
    limit = 512 * 2**20

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    env = {**os.environ, "PYTHONPATH": SRC, "PYTHONWARNINGS": "ignore"}
    for command in ("verify", "inspect"):
        r = subprocess.run([sys.executable, "-m", "slimship.cli.main", command, str(path)], capture_output=True,
                           text=True, env=env, timeout=120, preexec_fn=cap)
        assert r.returncode in (0, 2) and "Traceback" not in r.stderr and "out of memory" not in r.stderr, r.stderr
        assert r.returncode == 0 or len(r.stderr.strip().splitlines()) == 1, r.stderr
