"""slimship serve: an HTTP server for packages (dynamic batching, Prometheus metrics; docs/deploy.md)."""

HELP = "serve packages over HTTP: POST /v1/models/NAME/predict, /v1/models, /health, /ready, /metrics"


def add_arguments(p) -> None:
    p.add_argument("packages", nargs="+", metavar="[NAME=]PKG", help=".slim packages (named after the file, or NAME=PKG)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0: any free port, printed)")
    p.add_argument("--max-batch", type=int, default=32, metavar="N", help="inputs per runtime call (default: 32)")
    p.add_argument("--max-wait-ms", type=float, default=2.0, metavar="MS",
                   help="longest a request waits to share a batch (default: 2)")
    p.add_argument("--no-batching", action="store_true", help="run every request alone (same as --max-batch 1)")
    p.add_argument("--runtime", metavar="NAME",
                   help="run every batch in this runtime (slimship list); default: each batch in the runtime the "
                        "package records for its size (the runtimes may differ in the last digits: docs/runtimes.md)")
    p.add_argument("--threads", type=int, metavar="N", help="runtime threads (default: SLIMSHIP_THREADS, else every core)")
    p.add_argument("--token-file", metavar="FILE",
                   help="require 'Authorization: Bearer TOKEN' on /v1/* and /metrics; the token is this file's "
                        "first line (or set SLIMSHIP_SERVE_TOKEN)")
    p.add_argument("--key", action="append", default=[], metavar="KEY.pub",
                   help="trusted public key (repeatable): a signed package must verify against one of them")
    p.add_argument("--require-signature", action="store_true",
                   help="refuse packages without a valid signature by a --key")
    p.add_argument("--max-body-mb", type=float, default=16.0, help="largest request body in MiB (default: 16)")
    p.add_argument("--max-inputs", type=int, default=64, help="most images per request (default: 64)")
    p.add_argument("--max-image-pixels", type=int, default=4096 * 4096,
                   help="largest image, in pixels, checked before decoding (default: 4096x4096)")
    p.add_argument("--shutdown-timeout", type=float, default=30.0, metavar="S",
                   help="on SIGTERM/Ctrl-C, how long requests in flight may take to finish (default: 30)")


def run(args) -> int:
    import os

    from slimship.core.errors import SlimshipError
    from slimship.serve import AppConfig, BatchingConfig, Limits, ServerConfig, create_app, load_models, run_server
    from slimship.serve.server import is_loopback

    if args.threads is not None:
        if args.threads < 1:
            raise SlimshipError(f"--threads {args.threads}: give at least 1")
        os.environ["SLIMSHIP_THREADS"] = str(args.threads)  # what every runtime's session reads (core/runtime.py)
    if not 0 <= args.port <= 65535:
        raise SlimshipError(f"--port {args.port}: give a port from 1 to 65535 (0: any free one)")
    try:
        batching = BatchingConfig(1 if args.no_batching else args.max_batch, args.max_wait_ms)
        limits = Limits(int(args.max_body_mb * 2**20), args.max_inputs, args.max_image_pixels)
    except (ValueError, OverflowError) as e:
        raise SlimshipError(f"{e}: fix the option (finite, positive numbers)") from None
    token = _token(args.token_file)
    if not is_loopback(args.host) and token is None:
        print(f"warning: listening on {args.host} without a token: anyone who can reach it can use the models "
              "(add --token-file FILE)", flush=True)
    models = load_models(args.packages, keys=args.key, require_signature=args.require_signature, runtime=args.runtime)
    for m in models:
        signed = f", signed by {m.signed_by}" if m.signed_by else ""
        print(f"model {m.name}: {m.path} ({len(m.package.class_names)} classes, verified{signed})", flush=True)
    app = create_app(models, AppConfig(batching, limits, token))
    run_server(app, ServerConfig(args.host, args.port, args.shutdown_timeout))
    return 0


def _token(path):
    import os

    from slimship.core.errors import SlimshipError

    if path is None:
        token = os.environ.get("SLIMSHIP_SERVE_TOKEN")
    else:
        try:
            with open(path, encoding="utf-8") as f:
                token = f.readline().strip()
        except (OSError, UnicodeDecodeError) as e:
            raise SlimshipError(f"cannot read the token file {path} ({e}): check the path") from None
    if token is not None and len(token) < 16:
        raise SlimshipError("the bearer token is shorter than 16 characters: use a long random one "
                            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))' > token`)")
    return token
