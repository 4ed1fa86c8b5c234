"""``slimship serve`` as a real process on a free loopback port: start-up, answers, refusals at start-up, and a
graceful shutdown that still answers the request in flight. Nothing is timed: the test waits for states
(the server's own metrics say when a request is queued), with generous bounds only against hanging."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

FIXTURES = Path(__file__).parent.parent / "fixtures" / "slim-v0.1"


def _start(*args: str) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    p = subprocess.Popen([sys.executable, "-m", "slimship.cli.main", "serve", *args, "--port", "0"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    for line in p.stdout:
        m = re.match(r"serving on (http://127\.0\.0\.1:\d+)", line)
        if m:
            return p, m.group(1)
    p.wait(60)
    pytest.fail(f"the server did not start: {p.stderr.read()}")


def _wait_for(url: str, pattern: str, tries: int = 600) -> None:
    """Poll ``url`` until its text matches ``pattern`` (no timing: a bounded number of polls)."""
    for _ in range(tries):
        try:
            if re.search(pattern, httpx.get(url, timeout=30).text):
                return
        except httpx.TransportError:
            pass
        threading.Event().wait(0.05)
    pytest.fail(f"{url} never matched {pattern!r}")


def test_serve_answers_then_shuts_down_gracefully(tmp_path):
    """SIGTERM while a request is in flight (its body half sent): the server stops listening at once, still
    answers that request, then exits 0."""
    body = json.dumps({"images": [base64.b64encode(_png()).decode()]}).encode()
    gate = threading.Event()

    def slow_body():
        yield body[:20]
        gate.wait(120)
        yield body[20:]

    proc, url = _start(f"bars={FIXTURES / 'int8.slim'}")
    try:
        assert httpx.get(f"{url}/ready", timeout=30).json()["models"] == ["bars"]
        answer = {}
        t = threading.Thread(target=lambda: answer.update(r=httpx.post(
            f"{url}/v1/models/bars/predict", content=slow_body(), headers={"content-type": "application/json"},
            timeout=120)))
        t.start()
        _wait_for(f"{url}/metrics", r'slimship_requests_in_flight\{model="bars"\} 1\.0')
        proc.send_signal(signal.SIGTERM)
        _wait_until_refused(f"{url}/health")  # shutting down: no new connections
        gate.set()
        t.join(120)
        assert answer["r"].status_code == 200 and answer["r"].json()["predictions"][0]["top"][0]["class"] == "top"
        assert proc.wait(60) == 0
        assert "stopped (SIGTERM) after answering the requests in flight" in proc.stdout.read()
    finally:
        gate.set()
        proc.kill()
        proc.wait()


def _wait_until_refused(url: str, tries: int = 600) -> None:
    for _ in range(tries):
        try:
            httpx.get(url, timeout=5)
        except httpx.ConnectError:
            return
        threading.Event().wait(0.05)
    pytest.fail(f"{url} still accepts connections")


def _png() -> bytes:
    import io

    import numpy as np
    from PIL import Image

    img = np.zeros((32, 32), np.uint8)
    img[:10] = 220  # a bright bar at the top: class "top"
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()


def test_serve_refuses_bad_packages_at_start_up_in_one_line(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    bad = tmp_path / "bad.slim"
    bad.write_bytes(b"not a package")
    for args, phrase in (([str(bad)], "not a slimship package"),
                         ([str(FIXTURES / "int8.slim"), "--require-signature"], "needs the publisher's public key")):
        p = subprocess.run([sys.executable, "-m", "slimship.cli.main", "serve", *args, "--port", "0"],
                           capture_output=True, text=True, env=env, timeout=300)
        err = p.stderr.strip()
        assert p.returncode == 2 and len(err.splitlines()) == 1 and phrase in err and "Traceback" not in err, err
        assert "serving on" not in p.stdout


def test_connections_get_tcp_nodelay_so_kept_alive_answers_are_not_delayed():
    """asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP; without it, each answer on a kept-alive
    connection waited ~44 ms for the client's delayed ACK."""
    import asyncio
    import socket

    from slimship.serve.server import ServerConfig, bind

    listener = bind(ServerConfig(host="127.0.0.1", port=0))
    seen: list[int] = []

    async def main() -> None:
        async def handle(reader, writer):
            seen.append(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(handle, sock=listener)
        _, writer = await asyncio.open_connection(*listener.getsockname()[:2])
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.01)
        writer.close()
        server.close()

    asyncio.run(main())
    assert seen and seen[0] != 0
