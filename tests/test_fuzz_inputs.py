"""Property-based fuzzing of what a user hands slimship: recipes (as data and as YAML text) and data sources (npz,
idx and image-folder contents). Validation and loading only, no training.

The property: every input either loads or is refused with a SlimshipError (which the CLI prints as one line, exit
2); nothing else escapes (no traceback). A few hostile inputs also go through the real CLI in a subprocess under
an address-space limit (RLIMIT_AS), which shows they are refused without a memory blow-up. About 1,700 cases per
run (fixed seed, no example database), in about a minute on 2 cores.
"""

from __future__ import annotations

import gzip
import io
import os
import resource
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from slimship.core.errors import SlimshipError
from slimship.data import load_dataset
from slimship.data.transforms import ImagePreprocessing
from slimship.recipe import parse_recipe
from slimship.recipe.limits import MAX_MESSAGE, load_yaml
from tests.conftest import tiny_recipe

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "slim-v0.1"


def fuzz(n: int):
    return settings(max_examples=n, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def loads_or_refuses(fn, *, limit: int | None = None):
    """Call ``fn``; a SlimshipError is a refusal (checked to be one line of at most ``limit`` characters)."""
    try:
        return fn()
    except SlimshipError as e:
        msg = str(e)
        if limit is not None:
            assert "\n" not in msg and len(msg) <= limit, msg[:300]
        return None


# ---- recipes -------------------------------------------------------------------------------------------------------

VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats() | st.text(max_size=12)
    | st.sampled_from(["probe", "finetune", "int8", "prune_channels", "kmeans", "epochs", "seconds", ""]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


def _paths(d, prefix=()):
    """Every (path, value) of a nested recipe dict, lists included."""
    yield prefix, d
    items = d.items() if isinstance(d, dict) else enumerate(d) if isinstance(d, list) else ()
    for k, v in items:
        yield from _paths(v, (*prefix, k))


def _set(d, path, value):
    if not path:
        return value
    *head, last = path
    target = d
    for k in head:
        target = target[k]
    target[last] = value
    return d


@st.composite
def mutated_recipes(draw):
    """The tiny test recipe with a few values (or whole sections) replaced by arbitrary ones, or keys added."""
    r = tiny_recipe("data.npz")
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(r))
        path, old = draw(st.sampled_from(paths))
        if isinstance(old, dict) and draw(st.booleans()):
            old[draw(st.text(max_size=8))] = draw(VALUES)
        else:
            r = _set(r, path, draw(VALUES))
    return r


@fuzz(800)
@given(mutated_recipes())
def test_fuzzed_recipe_data_validates_or_is_refused_in_one_line(recipe):
    loads_or_refuses(lambda: parse_recipe(recipe), limit=MAX_MESSAGE)


YAML_PIECES = ["&a ", "&b ", "*a", "*b", "[", "]", "{", "}", ": ", "- ", "\n", "  ", "x", "1", "-5", ".inf", ".nan",
               "1e-300", "10e22", "!!python/object/apply:os.system ['true']", "!!binary aGk=", "<<: *a", ", ", "'",
               '"', "#", "? ", "model", "data", "transfer", "budget", "epochs", "seed", "version", "\t", "|", ">",
               "%YAML 1.1\n", "---\n", "...\n", "\x00", "\u202e", "\xff"]


@fuzz(400)
@given(st.lists(st.sampled_from(YAML_PIECES), max_size=60).map("".join) | st.text(max_size=200))
def test_fuzzed_recipe_text_parses_or_is_refused_in_one_line(text):
    def load():
        data = load_yaml(text, "recipe r.yaml")
        return parse_recipe(data, "r.yaml")

    loads_or_refuses(load, limit=MAX_MESSAGE)


# ---- data sources ---------------------------------------------------------------------------------------------------

DTYPES = [np.uint8, np.int8, np.int64, np.uint64, np.float32, np.float64, np.bool_, np.complex64]
SHAPES = [(), (4, 4), (5, 3), (4, 4, 1), (4, 4, 3), (3, 4, 4), (1, 5, 5), (4, 4, 2), (0, 4), (4, 4, 3, 1)]


@st.composite
def npz_files(draw):
    """Bytes of an .npz (or of something that is not one)."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=64))
    n = draw(st.integers(0, 12))
    layout = draw(st.sampled_from([("x_train", "y_train"), ("images", "labels"), ("x", "y"), ("a", "b")]))
    n_labels = draw(st.sampled_from([n, n, n, n + 1]))
    if draw(st.booleans()):  # mostly small class indices, some negative or huge ones
        labels = arrays(draw(st.sampled_from([np.int64, np.float64])), (n_labels,),
                        elements=st.integers(-2, 4) | st.sampled_from([10**7, 10**9, 2**62]))
    else:
        labels = arrays(draw(st.sampled_from(DTYPES[:6])), (n_labels,))
    out = {layout[0]: draw(arrays(draw(st.sampled_from(DTYPES)), (n, *draw(st.sampled_from(SHAPES))))),
           layout[1]: draw(labels)}
    if layout[0] == "x_train" and draw(st.booleans()):
        m = draw(st.integers(0, 6))
        out["x_test"] = draw(arrays(np.uint8, (m, *draw(st.sampled_from(SHAPES[1:5])))))
        out["y_test"] = draw(arrays(np.int64, (m,), elements=st.integers(-1, 4)))
    if draw(st.booleans()):
        out["class_names"] = np.array(draw(st.lists(st.text(max_size=6), max_size=6)), dtype=str)
    buf = io.BytesIO()
    np.savez(buf, **out)
    return buf.getvalue()


@fuzz(250)
@given(npz_files(), st.integers(0, 3))
def test_fuzzed_npz_loads_or_is_refused(content, seed):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.npz"
        path.write_bytes(content)
        loads_or_refuses(lambda: load_dataset(str(path), seed=seed))


def _idx(draw, ndim_hint: int, n: int) -> bytes:
    dtype = draw(st.sampled_from([0x08, 0x08, 0x08, 0x0D, 0x09]))
    ndim = draw(st.sampled_from([ndim_hint, ndim_hint, 0, 2, 4]))
    dims = [n] + [draw(st.integers(0, 6)) for _ in range(max(ndim - 1, 0))]
    payload = int(np.prod(dims)) if dims else 0
    payload += draw(st.sampled_from([0, 0, 0, -1, 3]))
    data = bytes(draw(st.lists(st.integers(0, 255), min_size=max(payload, 0), max_size=max(payload, 0))))
    raw = bytes([0, 0, dtype, ndim]) + struct.pack(f">{ndim}I", *dims[:ndim]) + data
    return gzip.compress(raw) if draw(st.booleans()) else raw


@st.composite
def idx_folders(draw):
    """{file name: bytes} of an idx folder."""
    n = draw(st.integers(0, 8))
    files = {"train-images-idx3-ubyte": _idx(draw, 3, n), "train-labels-idx1-ubyte": _idx(draw, 1, n)}
    if draw(st.booleans()):
        m = draw(st.integers(0, 5))
        files["t10k-images-idx3-ubyte"] = _idx(draw, 3, m)
        files["t10k-labels-idx1-ubyte"] = _idx(draw, 1, m)
    if draw(st.integers(0, 4)) == 0:
        files[draw(st.sampled_from(["other-images-idx3-ubyte", "train-images-idx3-ubyte.gz"]))] = _idx(draw, 3, n)
    return files


@fuzz(150)
@given(idx_folders())
def test_fuzzed_idx_folder_loads_or_is_refused(files):
    with tempfile.TemporaryDirectory() as tmp:
        for name, content in files.items():
            (Path(tmp) / name).write_bytes(content)
        loads_or_refuses(lambda: load_dataset(tmp))


def _image_bytes(draw) -> bytes:
    kind = draw(st.sampled_from(["png", "png", "jpeg", "gif", "junk", "truncated"]))
    if kind == "junk":
        return draw(st.binary(max_size=40))
    mode = draw(st.sampled_from(["L", "RGB", "RGBA", "P", "1", "I;16", "LA"]))
    size = (draw(st.integers(1, 24)), draw(st.integers(1, 24)))
    im = Image.new(mode, size, draw(st.integers(0, 255)) if mode not in ("RGB", "RGBA") else (9, 99, 199))
    buf = io.BytesIO()
    fmt = "PNG" if kind in ("png", "truncated") or mode in ("I;16", "LA") else kind.upper()
    (im.convert("RGB") if fmt == "JPEG" else im.convert("P") if fmt == "GIF" else im).save(buf, fmt)
    data = buf.getvalue()
    return data[: len(data) // 2] if kind == "truncated" else data


@st.composite
def image_folders(draw):
    """{relative path: bytes} of an image folder (class sub-folders, maybe train/ and test/, stray files)."""
    files = {}
    splits = ["train/", "test/"] if draw(st.integers(0, 3)) == 0 else [""]
    for split in splits:
        for c in draw(st.lists(st.sampled_from(["cat", "dog", "eel", ".hidden", "a b"]), min_size=1, max_size=3,
                               unique=True)):
            for i in range(draw(st.integers(0, 4))):
                ext = draw(st.sampled_from([".png", ".png", ".jpg", ".gif", ".txt"]))
                files[f"{split}{c}/{i}{ext}"] = _image_bytes(draw)
    return files


@fuzz(100)
@given(image_folders())
def test_fuzzed_image_folder_loads_and_decodes_or_is_refused(files):
    with tempfile.TemporaryDirectory() as tmp:
        for name, content in files.items():
            (Path(tmp) / name).parent.mkdir(parents=True, exist_ok=True)
            (Path(tmp) / name).write_bytes(content)

        def load_and_decode():
            d = load_dataset(tmp, lazy=True)
            pre = ImagePreprocessing(16, d.channels, (0.5,) * 3, (0.5,) * 3)
            for split in (d.train, d.val, d.test):
                assert tuple(pre.prepare(split.images).shape) == (len(split), d.channels, 16, 16)

        loads_or_refuses(load_and_decode)


# ---- the CLI under a memory limit -----------------------------------------------------------------------------------

_LIMIT = 1 << 30  # 1 GiB of address space: enough to read a recipe or an npz, not to blow up


def _limited_cli(*args: str) -> subprocess.CompletedProcess:
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (_LIMIT, _LIMIT))

    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "slimship.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=300, preexec_fn=limit)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    laughs = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"] + [
        f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 9)]
    (root / "laughs.yaml").write_text("\n".join(laughs) + "\n")
    (root / "million.yaml").write_text("l: &l [" + ", ".join(["x"] * 100) + "]\nm: [" + ", ".join(["*l"] * 1_000) + "]\n")
    x = np.zeros((10, 4, 4), np.uint8)
    np.savez(root / "billion.npz", x=x, y=np.array([0, 1, 2] * 3 + [10**9]))
    with zipfile.ZipFile(root / "bomb.npz", "w", zipfile.ZIP_DEFLATED) as z:  # 2 GiB of zeros in ~2 MB
        with z.open("x.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (2048, 1024, 1024)})
            block = bytes(1 << 24)
            for _ in range(128):
                f.write(block)
        z.writestr("y.npy", b"")
    return root


@pytest.mark.parametrize("case, args, phrase", [
    ("billion laughs", ("run", "{root}/laughs.yaml", "--out", "{root}/o"), "aliases (*name) are expanded"),
    ("100,000 values", ("run", "{root}/million.yaml", "--out", "{root}/o"), "more than 20,000 values"),
    ("a label of 1e9", ("eval", str(FIXTURES / "int8.slim"), "--data", "{root}/billion.npz"),
     "at most 10,000 classes"),
    ("a 2 GiB npz bomb", ("eval", str(FIXTURES / "int8.slim"), "--data", "{root}/bomb.npz"),
     "once decompressed"),
])
def test_hostile_inputs_are_refused_by_the_cli_under_a_memory_limit(hostile, case, args, phrase):
    p = _limited_cli(*(a.format(root=hostile) for a in args))
    err = p.stderr.strip()
    assert p.returncode == 2 and "Traceback" not in err and len(err.splitlines()) == 1, (case, err[-500:])
    assert phrase in err and "out of memory" not in err, (case, err)
