"""The HTTP app (FastAPI): endpoints, limits, authentication and error handling around the served models.

Endpoints::

    POST /v1/models/{name}/predict   multipart files, or JSON {"images": [base64, ...]}; ?top=K (default 3)
    GET  /v1/models                  the served models: classes, input, package hash, signer
    GET  /health                     the process is up (never needs the token)
    GET  /ready                      the models are loaded and warm, and the server is not shutting down
    GET  /metrics                    Prometheus text format (serve/metrics.py)

A predict answer is ``{"model": name, "predictions": [{"image": file name or index, "top": [{"class",
"probability"}]}]}``: the rows ``slimship predict --json`` prints. Every refusal is ``{"error": one line}`` with
a 4xx status (a 5xx only for a failure inside the server); no request can stop the server.
"""


import asyncio
import hmac
import json
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from slimship.serve.batcher import BatchingConfig, Batcher, Busy
from slimship.serve.inputs import Limits, RequestError
from slimship.serve.metrics import Metrics
from slimship.serve.models import ServedModel

MAX_TOP = 1000


@dataclass(frozen=True)
class AppConfig:
    """``token``: clients must send ``Authorization: Bearer <token>`` to /v1/* and /metrics (None: no check)."""

    batching: BatchingConfig = field(default_factory=BatchingConfig)
    limits: Limits = field(default_factory=Limits)
    token: str | None = None


def create_app(models: list[ServedModel], config: AppConfig = AppConfig(), log=print):
    """The FastAPI app serving ``models`` (loaded and verified by :func:`slimship.serve.models.load_models`).

    The batchers start with the app and, on shutdown, answer every request already queued before they stop (uvicorn
    first waits for the requests in flight, which are what fill those queues).
    """
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response

    by_name = {m.name: m for m in models}
    metrics = Metrics([m.name for m in models], lambda name: by_name[name].batcher.queued_rows
                      if by_name[name].batcher else 0)
    state = {"ready": False}
    # One inference thread for all models: batches take turns on the cores, each with every runtime thread, so
    # concurrent batches never oversubscribe the CPU.
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slimship-infer")

    @asynccontextmanager
    async def lifespan(app):
        for m in models:
            m.batcher = Batcher(_runner(m), config.batching, executor, metrics.batch.labels(m.name).observe)
            m.batcher.start()
        state["ready"] = True
        try:
            yield
        finally:
            state["ready"] = False
            await asyncio.gather(*(m.batcher.close() for m in models))
            executor.shutdown(wait=True)

    app = FastAPI(title="slimship", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, max_bytes=config.limits.max_body_bytes)

    @app.exception_handler(RequestError)
    async def _refused(request, e: RequestError):
        return JSONResponse({"error": str(e)}, status_code=e.status, headers=_auth_header(e.status))

    def authorized(request: Request) -> None:
        if config.token is None:
            return
        sent = request.headers.get("authorization", "")
        scheme, _, token = sent.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), config.token.encode()):
            raise RequestError(401, "missing or wrong bearer token: send the header 'Authorization: Bearer TOKEN'")

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/ready")
    async def ready():
        if not state["ready"]:
            return JSONResponse({"status": "not ready"}, status_code=503)
        return {"status": "ready", "models": sorted(by_name)}

    @app.get("/v1/models")
    async def list_models(request: Request):
        authorized(request)
        return {"models": [m.info() for m in models]}

    @app.get("/metrics")
    async def prometheus(request: Request):
        authorized(request)
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.post("/v1/models/{name}/predict")
    async def predict(name: str, request: Request):
        start, code, n = time.perf_counter(), 500, 0
        gauge = metrics.in_flight.labels(name) if name in by_name else None
        if gauge is not None:
            gauge.inc()
        try:
            authorized(request)
            model = by_name.get(name)
            if model is None:
                raise RequestError(404, f"no model named {name[:64]!r} is served here (served: "
                                        f"{', '.join(sorted(by_name))}): see GET /v1/models")
            body, code = await _predict(model, request, config.limits), 200
            n = len(body["predictions"])
            return body
        except RequestError as e:
            code = e.status
            raise
        except Busy as e:
            code = 503
            return JSONResponse({"error": f"server busy ({e}): retry shortly"}, status_code=503,
                                headers={"Retry-After": "1"})
        except Exception as e:  # a bug or a runtime failure: answer 500 and keep serving
            log(f"error: predict on {name!r} failed: {type(e).__name__}: {e}")
            return JSONResponse({"error": f"inference failed ({type(e).__name__}); the server logged the details"},
                                status_code=500)
        finally:
            if gauge is not None:
                gauge.dec()
            metrics.answered(name, code, time.perf_counter() - start, n)

    return app


async def _predict(model: ServedModel, request, limits: Limits) -> dict:
    from starlette.concurrency import run_in_threadpool

    from slimship.package.predict import top_classes

    top = _top(request.query_params.get("top", "3"))
    model.batcher.announce()  # batches forming meanwhile wait for this request (up to max_wait)
    submitted = False
    try:
        names, payload, files = await _read_payload(model, request, limits)
        pre = model.package.preprocessing
        kind = model.inputs

        def prepare():
            examples = kind.from_files(files, limits, pre) if files is not None else kind.from_json(payload, limits, pre)
            return kind.model_input(examples, pre)

        inputs = await run_in_threadpool(prepare)  # decoding and resizing are CPU work: off the event loop
        submitted = True
        logits = await model.batcher.submit(inputs, announced=True)
    finally:
        if not submitted:
            model.batcher.withdraw()
    rows = top_classes(logits, model.package.class_names, top)
    return {"model": model.name, "predictions": [{"image": n, "top": r} for n, r in zip(names, rows)]}


async def _read_payload(model: ServedModel, request, limits: Limits):
    """(input names, JSON items or None, uploaded files or None) of a predict request."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    field_name = model.inputs.json_field
    if content_type == "application/json":
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested thousands deep
            raise RequestError(400, "the body is not valid JSON: send {\"%s\": [...]}" % field_name) from None
        items = body.get(field_name) if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise RequestError(400, f"the JSON body has no {field_name!r} list: send {{\"{field_name}\": [...]}}")
        _check_count(len(items), limits)
        return list(range(len(items))), items, None
    if content_type == "multipart/form-data":
        from starlette.datastructures import UploadFile

        try:
            # one file over the limit is parsed so that _check_count refuses it with the same 413 as JSON does
            form = await request.form(max_files=limits.max_inputs + 1, max_fields=16)
        except RequestError:
            raise
        except Exception as e:  # python-multipart's and starlette's parse errors
            if "Too many files" in str(e):
                raise RequestError(413, f"the request holds more than {limits.max_inputs} inputs, over this server's "
                                        f"limit of {limits.max_inputs}: split it into several requests") from None
            raise RequestError(400, f"the multipart body cannot be parsed ({str(e)[:120]}): send files as "
                                    "multipart/form-data") from None
        files = [(v.filename or k, await v.read()) for k, v in form.multi_items() if isinstance(v, UploadFile)]
        await form.close()
        _check_count(len(files), limits)
        return [name[:200] for name, _ in files], None, files
    raise RequestError(415, f"content type {content_type or 'none'!r} is not accepted: send multipart/form-data "
                            f"files or application/json {{\"{field_name}\": [...]}}")


def _check_count(n: int, limits: Limits) -> None:
    if n == 0:
        raise RequestError(400, "the request holds no inputs: send at least one")
    if n > limits.max_inputs:
        raise RequestError(413, f"the request holds {n} inputs, over this server's limit of {limits.max_inputs}: "
                                "split it into several requests")


def _top(text: str) -> int:
    try:
        top = int(text)
    except ValueError:
        top = 0
    if not 1 <= top <= MAX_TOP:
        raise RequestError(400, f"top={text[:20]!r} is not a whole number from 1 to {MAX_TOP}")
    return top


def _runner(model: ServedModel):
    session = model.session
    return lambda batch: session(batch)


def _auth_header(status: int) -> dict:
    return {"WWW-Authenticate": "Bearer"} if status == 401 else {}


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` is refused with 413 when the endpoint reads it: at once
    by its Content-Length (nothing of it is buffered), else by counting as it streams in (chunked bodies declare no
    length). The refusal goes through the endpoint, so it is counted in the metrics like any other."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_large = declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes)
        received = 0

        async def limited_receive():
            nonlocal received
            if too_large:
                raise self._refusal()
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._refusal()
            return message

        return await self.app(scope, limited_receive, send)

    def _refusal(self) -> RequestError:
        return RequestError(413, f"the request body is over this server's limit of {self.max_bytes:,} bytes: send "
                                 "fewer or smaller inputs")
