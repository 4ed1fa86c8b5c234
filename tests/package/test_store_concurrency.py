"""Versions are immutable even when two pushes race (issue 11, item 2): of concurrent pushes of one
``name@version``, exactly one wins and the others fail clearly; no package is lost. On a local folder and on
S3 (the moto server), with real concurrent processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import slimship
from slimship.core.errors import PackageError
from slimship.package.format import sha256_file, write_package
from slimship.package.store import Store

from .conftest import manifest, tiny_graph

SRC = str(Path(slimship.__file__).resolve().parents[1])  # the slimship under test, also in subprocesses


@pytest.fixture(scope="module")
def rivals(tmp_path_factory) -> list[Path]:
    """Four different valid packages (same graph, different class names)."""
    root, graph = tmp_path_factory.mktemp("rivals"), tiny_graph()
    out = []
    for i in range(4):
        m = manifest()
        m["model"]["class_names"] = [f"p{i}-{k}" for k in range(3)]
        write_package(root / f"r{i}.slim", m, {"model.onnx": graph})
        out.append(root / f"r{i}.slim")
    return out


@pytest.mark.parametrize("kind", ["local", "memory"])
def test_a_push_that_loses_the_race_is_refused_and_loses_nothing(tmp_path, rivals, kind):
    url = str(tmp_path / "store") if kind == "local" else f"memory://race-{os.getpid()}-{time.time_ns()}/s"
    first, second = Store(url), Store(url)
    first.push(rivals[3], name="other")  # the store exists already
    real = first._backend.write

    def write(key: str, data: bytes) -> None:
        if key.startswith("packages/"):  # between the first push's check and its refs, the second one runs
            second.push(rivals[1], name="m", version="1")
        real(key, data)

    first._backend.write = write
    with pytest.raises(PackageError, match=r"m@1 already exists in store .* \(versions are immutable\)"):
        first.push(rivals[0], name="m", version="1")
    winner = sha256_file(rivals[1])
    assert Store(url).resolve("m@1")[2] == winner and Store(url).resolve("m")[2] == winner
    first._backend.write = real
    first.push(rivals[1], name="m", version="1")  # pushing the same package again is still fine


_PUSHER = """
import os, sys, time
from slimship.cli.main import main
go = sys.argv[1]
while not os.path.exists(go):
    time.sleep(0.001)
sys.exit(main(["push", sys.argv[2], sys.argv[3], "--name", "m", "--tag", "1"]))
"""


def _race(store: str, packages: list[Path], tmp_path: Path, env: dict | None = None) -> list[tuple[int, str]]:
    """Push ``packages`` to ``store`` as m@1 from one process each, released together; (exit code, stderr)."""
    go = tmp_path / f"go-{time.time_ns()}"
    environ = {**os.environ, "PYTHONPATH": SRC, "PYTHONWARNINGS": "ignore", **(env or {})}
    procs = [subprocess.Popen([sys.executable, "-c", _PUSHER, str(go), str(p), store], env=environ,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for p in packages]
    time.sleep(3)  # let every process import slimship and wait at the line
    go.touch()
    return [(p.wait(timeout=120), p.communicate()[1]) for p in procs]


def _one_winner(results: list[tuple[int, str]], packages: list[Path], store: Store, tmp_path: Path) -> None:
    codes = [code for code, _ in results]
    assert sorted(codes) == [0] + [2] * (len(packages) - 1), results
    for code, err in results:
        if code:
            assert len(err.strip().splitlines()) == 1 and "m@1 already exists" in err and "immutable" in err, err
    winner = packages[codes.index(0)]
    _, version, package_id = store.resolve("m@1")
    assert package_id == sha256_file(winner)
    pulled = store.pull("m@1", tmp_path / f"pulled-{package_id[:8]}.slim")
    assert Path(pulled.path).read_bytes() == winner.read_bytes()


def test_concurrent_pushes_to_a_local_folder_have_one_winner(tmp_path, rivals):
    for trial in range(2):  # a fresh store (created by the race itself), then an existing one
        store = tmp_path / "store" if trial == 0 else tmp_path / "store2"
        if trial:
            Store(store).push(rivals[0], name="seed")
        _one_winner(_race(str(store), rivals, tmp_path), rivals, Store(store), tmp_path)


def test_concurrent_pushes_to_s3_have_one_winner(s3_endpoint, tmp_path, rivals):
    url = "s3://slimship/race"
    env = {"SLIMSHIP_S3_ENDPOINT": s3_endpoint}
    results = _race(url, rivals, tmp_path, env)
    store = Store(url, storage_options={"client_kwargs": {"endpoint_url": s3_endpoint}, "skip_instance_cache": True})
    _one_winner(results, rivals, store, tmp_path)
