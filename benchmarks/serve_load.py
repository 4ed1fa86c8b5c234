"""Load test of ``slimship serve``: throughput and latency at concurrency 1, 8 and 32, with and without dynamic
batching, and a check that the served predictions equal ``slimship predict`` on the same images.

    python benchmarks/serve_load.py [PKG] [--requests 600] [--seconds 30] [--data SOURCE] [--threads N]

PKG defaults to ``runs/demo/model.slim`` (what ``make demo`` ships: the W0 int8 + QAT package). For each mode the
script starts ``slimship serve PKG --port 0`` as its own process, on 127.0.0.1 only, and drives it from a bounded
client in this process: at each concurrency, ``--requests`` requests (one image each, base64 JSON) or
``--seconds`` seconds, whichever ends first, after a short warm-up. Latency is measured by the client, from
sending a request to reading its answer; the mean batch is the server's own ``slimship_batch_size`` histogram over
the same requests. Images are ``--data`` (any slimship data source; its test split) or, by default, synthetic
28x28 images in the package's channels (resized by the server, as Fashion-MNIST's are).

Client and server share the machine: on 2 cores the client's own work is part of every figure, so compare the
rows of one run with each other; absolute figures need a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

LOOPBACK = "127.0.0.1"


def _images(pkg, data: str | None, n: int) -> np.ndarray:
    """uint8 [n, H, W, C] inputs: the test split of ``data``, or synthetic 28x28 images."""
    if data:
        from slimship.data import load_eval_split

        split = load_eval_split(data, pkg.class_names, pkg.preprocessing.channels, None)
        return split.images[:n]
    rng = np.random.default_rng(0)
    x = rng.integers(0, 80, (n, 28, 28, pkg.preprocessing.channels), dtype=np.uint8)
    for i in range(n):  # a bright band at a varying place: images that are not all alike
        r = int(rng.integers(0, 20))
        x[i, r : r + 8] += 150
    return x


def _png(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(buf, "PNG")
    return buf.getvalue()


def _start(package: str, extra: list[str], threads: int | None) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "slimship.cli.main", "serve", f"bench={package}", "--host", LOOPBACK, "--port", "0",
           "--max-inputs", "64", *extra, *(["--threads", str(threads)] if threads else [])]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    for line in proc.stdout:
        m = re.match(r"serving on (http://\S+?:\d+)", line)
        if m:
            url = m.group(1)
            if urlparse(url).hostname != LOOPBACK:  # this client talks to this machine only
                proc.kill()
                sys.exit(f"the server did not bind {LOOPBACK}: {url}")
            return proc, url
    sys.exit(f"the server did not start (exit {proc.wait()})")


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def _wait_ready(client, url: str) -> None:
    for _ in range(1200):
        try:
            if (await client.get(f"{url}/ready")).status_code == 200:
                return
        except Exception:
            pass
        await asyncio.sleep(0.05)
    sys.exit(f"{url} never became ready")


def _batch_stats(text: str) -> tuple[float, float]:
    """(sum, count) of the server's batch size histogram."""
    total = re.search(r'slimship_batch_size_sum\{model="bench"\} (\S+)', text)
    count = re.search(r'slimship_batch_size_count\{model="bench"\} (\S+)', text)
    return float(total.group(1)), float(count.group(1))


async def _drive(client, url: str, bodies: list[dict], concurrency: int, requests: int, seconds: float) -> dict:
    """``concurrency`` workers send ``requests`` requests in all, or stop after ``seconds``."""
    latencies: list[float] = []
    errors, sent = 0, 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors, sent
        while sent < requests and time.perf_counter() < deadline:
            body = bodies[sent % len(bodies)]
            sent += 1
            t0 = time.perf_counter()
            r = await client.post(f"{url}/v1/models/bench/predict", json=body)
            latencies.append(time.perf_counter() - t0)
            errors += r.status_code != 200

    before = _batch_stats((await client.get(f"{url}/metrics")).text)
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    after = _batch_stats((await client.get(f"{url}/metrics")).text)
    ms = np.asarray(latencies) * 1000
    batches = after[1] - before[1]
    return {"requests": len(latencies), "errors": errors, "throughput": len(latencies) / wall,
            "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
            "mean_batch": (after[0] - before[0]) / batches if batches else float("nan")}


async def _run_mode(package: str, extra: list[str], args, bodies: list[dict], expected: list[list[dict]]) -> list[dict]:
    import httpx

    proc, url = _start(package, extra, args.threads)
    try:
        limits = httpx.Limits(max_connections=max(args.concurrency), max_keepalive_connections=max(args.concurrency))
        async with httpx.AsyncClient(timeout=120, limits=limits) as client:
            await _wait_ready(client, url)
            served = [(await client.post(f"{url}/v1/models/bench/predict", json=b)).json()["predictions"][0]["top"]
                      for b in bodies[: len(expected)]]
            if served != expected:
                sys.exit("FAIL: the served predictions differ from slimship predict on the same images")
            rows = []
            for c in args.concurrency:
                await _drive(client, url, bodies, c, 4 * c, args.seconds)  # warm-up: connections, threads, caches
                r = await _drive(client, url, bodies, c, args.requests, args.seconds)
                rows.append({"concurrency": c, **r})
                print(f"  concurrency {c:>2}: {r['requests']} requests, {r['throughput']:.1f} req/s, "
                      f"p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms, mean batch {r['mean_batch']:.1f}, "
                      f"errors {r['errors']}", flush=True)
            return rows
    finally:
        _stop(proc)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("package", nargs="?", default="runs/demo/model.slim")
    p.add_argument("--requests", type=int, default=600, help="requests per concurrency level (default: 600)")
    p.add_argument("--seconds", type=float, default=30.0, help="longest run per concurrency level (default: 30)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--max-wait-ms", type=float, default=2.0)
    p.add_argument("--threads", type=int, help="server runtime threads (default: every core)")
    p.add_argument("--data", help="images from this data source's test split (default: synthetic 28x28)")
    p.add_argument("--check-images", type=int, default=32, help="images whose served answers are compared (default: 32)")
    args = p.parse_args(argv)
    if not Path(args.package).is_file():
        sys.exit(f"{args.package} does not exist: run `make demo` first, or pass a package")

    import slimship

    pkg = slimship.load(args.package)
    images = _images(pkg, args.data, max(256, args.check_images))
    bodies = [{"images": [base64.b64encode(_png(img)).decode()]} for img in images]
    # what `slimship predict` answers for the same images (PNG is lossless: the server decodes these arrays)
    # the check sends one image per request, one at a time: each is served as a batch of 1, so it is compared with
    # `predict` of that image alone (a package may run batch sizes in different runtimes, whose int8 rounding can
    # differ in the last digits; docs/runtimes.md); how often the top class differs from `predict` on the whole
    # set at once (batches of 64) is printed beside it
    n = min(args.check_images, len(images))
    expected = [pkg.predict(images[i : i + 1], top=3)[0]["top"] for i in range(n)]
    bulk = [r["top"][0]["class"] for r in pkg.predict(images[:n], top=3)]
    moved = sum(e[0]["class"] != b for e, b in zip(expected, bulk))
    print(f"check: {n} images, answers compared with `slimship predict` of each image alone; the top class of "
          f"{moved} of them differs when predicted all at once (runtimes by batch size: {pkg.runtimes_used()})",
          flush=True)
    print(f"package {args.package}: {len(pkg.class_names)} classes, input {pkg.preprocessing.describe()}; "
          f"{len(images)} distinct images, one per request; server threads: {args.threads or 'every core'}; "
          f"{os.cpu_count()} cores here", flush=True)
    modes = [(f"dynamic batching (max batch {args.max_batch}, max wait {args.max_wait_ms:g} ms)",
              ["--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms)]),
             ("no batching", ["--no-batching"])]
    results = {}
    for name, extra in modes:
        print(f"{name}:", flush=True)
        results[name] = asyncio.run(_run_mode(args.package, extra, args, bodies, expected))
    print(f"\nserved predictions equal `slimship predict` on {len(expected)} images: yes\n")
    print("| mode | concurrency | requests | req/s | p50 ms | p99 ms | mean batch |")
    print("|---|---|---|---|---|---|---|")
    for name, rows in results.items():
        for r in rows:
            print(f"| {name} | {r['concurrency']} | {r['requests']} | {r['throughput']:.1f} | {r['p50']:.2f} | "
                  f"{r['p99']:.2f} | {r['mean_batch']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
