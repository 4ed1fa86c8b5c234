"""Run the app under uvicorn: bind (loopback unless told otherwise), serve, shut down gracefully.

On SIGINT or SIGTERM uvicorn stops accepting connections, lets every request in flight finish (up to
``shutdown_timeout`` seconds), then the app's batchers answer whatever is still queued and stop.
"""

from __future__ import annotations

import ipaddress
import signal
import socket
import threading
from dataclasses import dataclass

from slimship.core.errors import SlimshipError


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    shutdown_timeout: float = 30.0
    max_connections: int = 512  # beyond this uvicorn answers 503 at once


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(config: ServerConfig) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one, see ``getsockname()``); SlimshipError if taken."""
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    # IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and without
    # it every answer on a kept-alive connection waited ~44 ms for the client's delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((config.host, config.port))
    except OSError as e:
        sock.close()
        raise SlimshipError(f"cannot listen on {config.host}:{config.port} ({e.strerror or e}): pick another "
                            "--port (0: any free one) or --host") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run_server(app, config: ServerConfig) -> None:
    """Serve ``app`` until SIGINT/SIGTERM; prints ``serving on http://HOST:PORT`` once the socket listens."""
    import uvicorn

    sock = bind(config)
    host, port = sock.getsockname()[:2]
    uv = uvicorn.Config(app, log_level="warning", access_log=False, server_header=False, lifespan="on",
                        timeout_graceful_shutdown=config.shutdown_timeout, limit_concurrency=config.max_connections,
                        h11_max_incomplete_event_size=64 * 1024)
    server = uvicorn.Server(uv)
    shown = f"[{host}]" if ":" in host else host
    print(f"serving on http://{shown}:{port} (Ctrl-C or SIGTERM: finish the requests in flight, then stop)", flush=True)
    stops: list[int] = []
    # uvicorn handles SIGINT/SIGTERM itself, then raises the signal again under the handlers it found: these, so a
    # graceful stop ends the command normally (exit 0) instead of as a KeyboardInterrupt or a kill.
    previous = {sig: signal.signal(sig, lambda signum, frame: stops.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)} if threading.current_thread() is threading.main_thread() else {}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
    if stops:
        print(f"stopped ({signal.Signals(stops[0]).name}) after answering the requests in flight", flush=True)
