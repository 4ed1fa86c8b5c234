"""Peak memory and time of the package commands on the probe's bomb and on a large honest package (issue 11).

    python benchmarks/package_bombs.py [--src PATH/TO/src] [--work DIR] [--big-mib 512]

Builds, in ``--work`` (a temporary folder by default):

* ``bomb.slim``: the probe's case, four honest 1 GiB parts of zeros (zlib) in a ~4 MB file;
* ``big.slim``: a tiny deploy graph plus one honest ``--big-mib`` MiB part stored uncompressed (within every
  limit), to show that ``verify`` streams instead of holding the file and the decoded part.

then runs ``slimship verify`` and ``slimship inspect`` on each in a fresh process and prints the exit status,
the wall time and the peak resident memory of that process (``wait4``'s ``ru_maxrss``). ``--src`` measures
another checkout (e.g. the tree before the fix: ``git worktree add /tmp/old cf2c236``, then
``--src /tmp/old/src``). Wall times depend on the machine's load; the memory figures do not.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

MIB = 2**20


def zero_zlib(n: int, block: int = MIB) -> bytes:
    """A valid zlib stream of ``n`` zeros, made fast: after a full flush every block encodes the same."""
    c = zlib.compressobj(9)
    first = c.compress(bytes(block)) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(bytes(block)) + c.flush(zlib.Z_FULL_FLUSH)
    end = c.flush()[:-4]
    adler, zero = 1, bytes(block)
    for _ in range(n // block):
        adler = zlib.adler32(zero, adler)
    return first + again * (n // block - 1) + end + adler.to_bytes(4, "big")


def write(path: Path, parts: list[tuple[str, str, bytes, int, str]]) -> None:
    """A package from already-encoded parts: (name, codec, stored bytes, raw size, raw sha256)."""
    manifest = {"model": {"architecture": "bench", "class_names": ["a", "b", "c"], "runtime": "onnxruntime"},
                "preprocessing": {"kind": "image", "image_size": 8, "channels": 3, "mean": [0.5] * 3,
                                  "std": [0.25] * 3, "model_channels": 3, "interpolation": "bilinear"}}
    entries, offset = [], 0
    for name, codec, stored, raw_size, digest in parts:
        entries.append({"name": name, "codec": codec, "offset": offset, "stored_size": len(stored),
                        "raw_size": raw_size, "sha256": digest})
        offset += len(stored)
    header = json.dumps({"manifest": manifest, "parts": entries}).encode()
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for chunk in [struct.pack("<8sHI", b"SLIMPKG\x00", 1, len(header)), header, *(p[2] for p in parts)]:
            h.update(chunk)
            f.write(chunk)
        f.write(h.digest())


def tiny_graph() -> bytes:
    """Flatten → MatMul, [batch, 3, 8, 8] → [batch, 3]: the deploy graph the manifest above describes."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.zeros((192, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["logits"])],
        "bench", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def build(work: Path, big_mib: int) -> None:
    gib, zero = 2**30, bytes(MIB)
    h = hashlib.sha256()
    for _ in range(gib // MIB):
        h.update(zero)
    stored = zero_zlib(gib)
    write(work / "bomb.slim", [(n, "zlib", stored, gib, h.hexdigest()) for n in "abcd"])
    big = b"".join(hashlib.sha256(i.to_bytes(4, "little")).digest() for i in range(big_mib * MIB // 32))
    graph = tiny_graph()
    write(work / "big.slim", [("model.onnx", "none", graph, len(graph), hashlib.sha256(graph).hexdigest()),
                              ("extra.bin", "none", big, len(big), hashlib.sha256(big).hexdigest())])


def measure(src: str, command: str, path: Path) -> tuple[int, float, float, str]:
    """(exit status, seconds, peak RSS in MiB, last line of stderr) of one CLI run in a fresh process."""
    env = {**os.environ, "PYTHONPATH": src, "PYTHONWARNINGS": "ignore"}
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "slimship.cli.main", command, str(path)], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    seconds = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    last = (err.strip().splitlines() or [""])[-1]
    return p.returncode, seconds, usage.ru_maxrss / 1024, last


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", default=str(Path(__file__).resolve().parents[1] / "src"), help="the slimship src to run")
    ap.add_argument("--work", help="folder for the packages (default: a temporary one)")
    ap.add_argument("--big-mib", type=int, default=512, help="size of the honest uncompressed part")
    ap.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.build_only:
        build(Path(args.work), args.big_mib)
        return
    with tempfile.TemporaryDirectory(prefix="slimship-bombs-") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        # Built in another process: a child's peak RSS counts what it inherited from its parent at fork.
        subprocess.run([sys.executable, __file__, "--build-only", "--work", str(work), "--big-mib", str(args.big_mib)],
                       check=True)
        files = {"bomb": work / "bomb.slim", "big": work / "big.slim"}
        print(f"src: {args.src}")
        for name, path in files.items():
            print(f"{name}: {path.stat().st_size / MIB:,.1f} MiB on disk")
        print(f"{'package':8} {'command':8} {'exit':>4} {'seconds':>8} {'peak RSS MiB':>13}  message")
        for name, path in files.items():
            for command in ("verify", "inspect"):
                code, seconds, rss, last = measure(args.src, command, path)
                print(f"{name:8} {command:8} {code:>4} {seconds:>8.1f} {rss:>13,.0f}  {last[:110]}")


if __name__ == "__main__":
    main()
