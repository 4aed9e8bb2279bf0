"""The FastAPI application of `convzoo serve` (routes and error format in docs/serve.md).

Every request first passes `Guard`: its Host header must name this server (a DNS-rebinding page
cannot read the API), and every response gets `X-Content-Type-Options: nosniff` and the page's
Content-Security-Policy.

Request path of POST /v1/predict: the body is read under a byte limit (413 as soon as the
Content-Length or the bytes received pass it, without reading the rest) and a deadline (408 when
it is not complete `body_timeout` seconds after the request began); each image's header is read
(decode.probe: size limits, memory estimate), its estimate reserved from the decode memory budget,
then it is decoded and preprocessed in a worker thread (at most `decoders` at once), queued on the
model's `Batcher` (503 + Retry-After when full) and awaited; the event loop itself never decodes
or runs the network. Every error is a JSON object {"error": "...", ...} with a 4xx/5xx status;
in a request of several images, a bad one is reported in its own result and the rest are
classified.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass

import anyio
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..data.images import BadImage
from . import printable
from .batcher import Batcher, QueueFull, ShuttingDown
from .decode import BUDGET_BYTES, MAX_PIXELS, DecodeBudget, TooLarge
from .metrics import ServeMetrics
from .model import CHART_POINTS, Job, ServedModel, chart_png

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
RAW_TYPES = ("image/", "application/octet-stream")
log = logging.getLogger("convzoo.serve")


LARGE_DECODE = 64 * 2**20  # bytes: a decode above this is "large" (a 12 MP JPEG is ~100 MiB)
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", CSP.encode()),
    (b"referrer-policy", b"no-referrer"),
]


@dataclass
class ServeConfig:
    max_batch: int = 16
    max_wait: float = 0.005  # seconds a lone request waits for company
    queue_size: int = 64  # images waiting per model before 503
    max_upload_bytes: int = 10 * 2**20
    max_files: int = 16  # images in one multipart request
    decoders: int = 4  # images decoded at once
    retry_after: int = 1  # seconds, in the 503's Retry-After
    warm_chart: bool = False  # profile the chart's models in the background at start-up
    max_image_pixels: int = MAX_PIXELS  # pixels decoded per image (after reduced-size decoding)
    decode_budget: int = BUDGET_BYTES  # bytes that the images being decoded may take together
    body_timeout: float = 60.0  # seconds from the request's start to the end of its body
    # Host header values answered (port ignored); "*" allows any, "*.example.org" a domain
    allowed_hosts: tuple[str, ...] = LOCAL_HOSTS


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None, **extra):
        self.status, self.message, self.headers, self.extra = status, message, headers, extra


def _error(status: int, message: str, headers: dict | None = None, **extra) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


class Guard:
    """ASGI middleware: checks the Host header, caps request bodies in size and time, adds the
    security headers and counts responses for /metrics.

    A declared Content-Length over the limit is answered 413 before any body byte is read; a
    chunked body is counted as it arrives and refused the moment it passes the limit; a body not
    complete `body_timeout` seconds after the request began is answered 408. Both close the
    connection (the rest of the body is not read)."""

    def __init__(self, app, config: ServeConfig, metrics: ServeMetrics):
        self.app, self.metrics = app, metrics
        self.max_bytes, self.body_timeout = config.max_upload_bytes, config.body_timeout
        self.hosts = HostRule(config.allowed_hosts)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        code = [500]

        async def guarded_send(message):
            if message["type"] == "http.response.start":
                code[0] = message["status"]
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        try:
            headers = dict(scope["headers"])
            host = headers.get(b"host", b"").decode("latin-1")
            if not self.hosts.allows(host):
                refusal = _error(400, self.hosts.refusal(host), headers={"Connection": "close"})
                await refusal(scope, receive, guarded_send)
                return
            declared = headers.get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
                refusal = _error(
                    413, self._too_large(f"Content-Length {int(declared)}"), headers={"Connection": "close"}
                )
                await refusal(scope, receive, guarded_send)
                return
            await self.app(scope, self._limited(receive), guarded_send)
        finally:
            self.metrics.requests.inc(_route_label(scope), str(code[0]))

    def _too_large(self, what: str) -> str:
        return f"upload too large: {what} bytes exceeds the limit of {self.max_bytes} bytes (--max-upload-mb)"

    def _limited(self, receive):
        seen, complete = [0], [False]
        deadline = time.monotonic() + self.body_timeout

        async def limited():
            if complete[0]:  # the body is in: later receives only wait for a disconnect, no deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except (TimeoutError, asyncio.TimeoutError):  # two classes on Python 3.10
                raise ApiError(
                    408,
                    f"request timeout: the body did not arrive within {self.body_timeout:g} s "
                    "(--body-timeout)",
                    headers={"Connection": "close"},
                ) from None
            if message["type"] == "http.request":
                complete[0] = not message.get("more_body", False)
                seen[0] += len(message.get("body", b""))
                if seen[0] > self.max_bytes:
                    raise ApiError(
                        413, self._too_large(f"more than {seen[0]}"), headers={"Connection": "close"}
                    )
            return message

        return limited


class HostRule:
    """Which Host header values are answered: exact names, "*.domain" suffixes, or "*" for any."""

    def __init__(self, allowed):
        self.allowed = tuple(allowed)
        self.any = "*" in self.allowed
        self.exact = {_bare_host(h) for h in self.allowed if not h.startswith("*")}
        self.suffixes = tuple(h[1:].lower() for h in self.allowed if h.startswith("*."))

    def allows(self, host_header: str) -> bool:
        if self.any:
            return True
        host = _bare_host(host_header)
        return host in self.exact or (bool(host) and host.endswith(self.suffixes))

    def refusal(self, host_header: str) -> str:
        shown = printable(host_header[:100]) or "(none)"
        return (
            f"host {shown!r} is not served here (allowed: {', '.join(self.allowed)}); "
            "start the server with --allowed-hosts NAME to answer it"
        )


def _bare_host(host: str) -> str:
    """'Example.org:8000' -> 'example.org', '[::1]:8000' -> '::1'."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def _route_label(scope) -> str:
    """The route template (never the raw path: scanners must not create new series)."""
    route = scope.get("route")
    if route is not None:
        return route.path
    return "/static" if scope.get("path", "").startswith("/static/") else "unmatched"


class Server:
    """What the routes share: the models, their batchers, the metrics, readiness."""

    def __init__(self, models: list[ServedModel], config: ServeConfig):
        self.models = {m.id: m for m in models}
        self.config = config
        self.batchers: dict[str, Batcher] = {
            m.id: Batcher(
                m.run_batch,
                config.max_batch,
                config.max_wait,
                config.queue_size,
                m.id,
                on_batch=self._on_batch(m.id),
            )
            for m in models
        }
        self.metrics = ServeMetrics(queue_depths=lambda: {(i,): b.depth() for i, b in self.batchers.items()})
        self.decoders = anyio.CapacityLimiter(config.decoders)
        self.budget = DecodeBudget(config.decode_budget)
        self.large_decoders = anyio.CapacityLimiter(max(1, config.decoders - 1))
        self.ready = False
        self._cache: dict = {}
        self._cache_lock = threading.Lock()
        self._locks: dict = {}

    def _on_batch(self, model_id: str):
        def record(size: int, seconds: float) -> None:
            self.metrics.batch_size.observe(model_id, value=size)
            self.metrics.inference.observe(model_id, value=seconds)
            self.metrics.images.inc(model_id, amount=size)

        return record

    def pick(self, model_id: str | None) -> ServedModel:
        if model_id is None:
            return next(iter(self.models.values()))
        if model_id not in self.models:
            raise ApiError(404, f"model {model_id!r} is not served; served: {', '.join(self.models)}")
        return self.models[model_id]

    def cached(self, key, make):
        """`make()` once per key (summaries and charts take seconds to build); one lock per key, so
        a chart still waiting for its points does not hold up a summary."""
        with self._cache_lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._cache:
                self._cache[key] = make()
            return self._cache[key]

    def close(self) -> None:
        for b in self.batchers.values():
            b.close()


async def read_uploads(request: Request, max_files: int) -> list[tuple[str, bytes]]:
    """[(name, bytes)] from a multipart form (every file field) or a raw image body."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        form = await request.form(max_files=max_files, max_fields=max_files + 8)
        try:
            files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
            uploads = [(f.filename or "upload", await f.read()) for f in files]
        finally:
            await form.close()
        if not uploads:
            raise ApiError(
                400,
                "the multipart form has no file; send the image as a file field, "
                "e.g. curl -F image=@photo.jpg",
            )
    elif ctype.startswith(RAW_TYPES):
        uploads = [("body", await request.body())]
    else:
        raise ApiError(
            415,
            f"unsupported content type {ctype or '(none)'!r}: send multipart/form-data "
            "or the image bytes as image/* or application/octet-stream",
        )
    return uploads


async def prepare(server: Server, model: ServedModel, name: str, data: bytes, keep_photo: bool = False):
    """The network's input for one upload (with the decoded photo if `keep_photo`: a CAM is drawn
    over it), or the ApiError that says why not.

    Header first (cheap), then the decode's memory estimate is reserved from the budget, so
    large images wait for each other instead of all being decoded at once."""
    if not data:
        return ApiError(400, f"{name}: empty upload", image=name)
    try:
        probe = await anyio.to_thread.run_sync(
            model.probe, data, name, server.config.max_image_pixels, limiter=server.decoders
        )
        if probe.cost > server.budget.capacity:
            probe.close()
            return ApiError(
                413,
                f"{name}: decoding it needs about {probe.cost / 2**20:.0f} MiB, more than this server's "
                f"decode memory of {server.budget.capacity / 2**20:.0f} MiB (--decode-memory-mb); "
                "send a smaller image",
                image=name,
            )
        # large images take at most all decoders but one: a small photo never waits for them
        large = server.large_decoders if probe.cost > LARGE_DECODE else contextlib.nullcontext()
        async with server.budget.hold(probe.cost), large:
            decode = model.decode_keeping_photo if keep_photo else model.decode_probed
            return await anyio.to_thread.run_sync(decode, probe, limiter=server.decoders)
    except BadImage as e:
        return ApiError(422, f"{name}: {e.reason}", image=name)
    except TooLarge as e:
        return ApiError(413, f"{name}: {e.reason}", image=name)


def submit_all(server: Server, model_id: str, jobs: list[Job]) -> list:
    """Queue every image of a request, or none: on 503 the ones already queued are cancelled."""
    futures, retry = [], server.config.retry_after
    try:
        for job in jobs:
            futures.append(server.batchers[model_id].submit(job))
    except (QueueFull, ShuttingDown) as e:
        for f in futures:
            f.cancel()
        server.metrics.rejected.inc(model_id, amount=len(jobs))
        why = "the queue is full" if isinstance(e, QueueFull) else "the server is shutting down"
        raise ApiError(503, f"{why}; retry in {retry} s", headers={"Retry-After": str(retry)}) from None
    return futures


def create_app(models: list[ServedModel], config: ServeConfig | None = None) -> FastAPI:
    server = Server(models, config or ServeConfig())

    @contextlib.asynccontextmanager
    async def lifespan(app):
        for b in server.batchers.values():
            b.start()
        if server.config.warm_chart:
            CHART_POINTS.warm()
        server.ready = True
        yield
        server.ready = False
        await run_in_threadpool(server.close)  # finishes what is queued (graceful shutdown)
        await run_in_threadpool(CHART_POINTS.stop)

    app = FastAPI(
        title="convzoo serve",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        description="Image classification with the convzoo models (docs/serve.md). The "
        "interactive /docs page is off: it loads Swagger UI from a CDN, and this "
        "server works offline.",
    )
    app.state.server = server
    app.add_middleware(Guard, config=server.config, metrics=server.metrics)
    _error_handlers(app)
    _routes(app, server)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request, e: ApiError):
        return _error(e.status, e.message, e.headers, **e.extra)

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return _error(422, f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(Exception)
    async def unexpected(request, e: Exception):
        # a bug, not bad input: logged with its traceback; the client gets JSON, the server lives on
        log.exception("unexpected error on %s", request.url.path)
        return _error(500, f"internal error ({type(e).__name__})")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, e: StarletteHTTPException):
        return _error(e.status_code, str(e.detail), getattr(e, "headers", None))


PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "image": {
                            "type": "string",
                            "format": "binary",
                            "description": "one or more image files (any field name)",
                        }
                    },
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def _routes(app: FastAPI, server: Server) -> None:
    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def page():
        return FileResponse(os.path.join(STATIC, "index.html"))  # Guard adds the CSP

    @app.post("/v1/predict", openapi_extra=PREDICT_BODY, summary="Top-k classes of one or more images")
    async def predict(
        request: Request,
        model: str | None = Query(None, description="served model id (default: the first)"),
        topk: int = Query(5, ge=1, le=1000, description="how many classes per image"),
        cam: bool = Query(False, description="add a class activation map overlay (PNG data URL)"),
    ):
        start = time.perf_counter()
        served = server.pick(model)
        uploads = await read_uploads(request, server.config.max_files)
        names = [name for name, _ in uploads]
        prepared = await asyncio.gather(*(prepare(server, served, name, data, cam) for name, data in uploads))
        del uploads[:]  # the bytes are no longer needed while the batch runs
        if len(prepared) == 1 and isinstance(prepared[0], ApiError):
            raise prepared[0]  # one image: its error is the request's
        good = [t for t in prepared if not isinstance(t, ApiError)]
        jobs = [Job(t[0], topk, cam, t[1]) if isinstance(t, tuple) else Job(t, topk, cam) for t in good]
        futures = submit_all(server, served.id, jobs)
        try:
            outputs = iter(await asyncio.gather(*(asyncio.wrap_future(f) for f in futures)))
        except Exception as e:  # noqa: BLE001 - a failed forward pass: 500 with its reason, server lives
            log.exception("inference failed")
            raise ApiError(500, f"inference failed: {type(e).__name__}: {e}".splitlines()[0]) from None
        server.metrics.latency.observe(served.id, value=time.perf_counter() - start)
        results = [
            {"image": name, "error": p.message, "status": p.status}
            if isinstance(p, ApiError)
            else {"image": name, **next(outputs)}
            for name, p in zip(names, prepared)
        ]
        return {"model": served.id, "results": results}

    @app.get("/v1/models", summary="The served models with their WeightSpecs")
    async def models():
        return {"models": [m.describe_model() for m in server.models.values()]}

    @app.get("/v1/models/{model_id}/summary", summary="Per-layer output size, params, MACs, receptive field")
    async def summary(model_id: str):
        served = server.pick(model_id)
        return await run_in_threadpool(server.cached, ("summary", served.id), served.summary)

    @app.get(
        "/v1/models/{model_id}/chart.png",
        summary="Accuracy vs. cost, the served model highlighted",
        response_class=Response,
    )
    async def chart(model_id: str):
        served = server.pick(model_id)
        png = await run_in_threadpool(server.cached, ("chart", served.model), lambda: chart_png(served.model))
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    @app.head("/healthz", include_in_schema=False)
    @app.get("/healthz", summary="Liveness: the process answers (GET or HEAD)")
    async def healthz():
        return {"status": "ok"}

    @app.head("/readyz", include_in_schema=False)
    @app.get("/readyz", summary="Readiness: models loaded, not shutting down (GET or HEAD)")
    async def readyz():
        if not server.ready:
            return _error(503, "not ready (starting or shutting down)")
        return {"status": "ready", "models": list(server.models)}

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics (text format 0.0.4)")
    async def metrics():
        return PlainTextResponse(server.metrics.render(), media_type="text/plain; version=0.0.4")
