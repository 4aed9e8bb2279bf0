"""The FastAPI application of `convzoo serve` (routes and error format in docs/serve.md).

Request path of POST /v1/predict: the body is read under a byte limit (413 as soon as the
Content-Length or the bytes received pass it, without reading the rest), each image is decoded
and preprocessed in a worker thread (at most `decoders` at once, which bounds the memory that
large photos take), queued on the model's `Batcher` (503 + Retry-After when full) and awaited;
the event loop itself never decodes or runs the network. Every error is a JSON object
{"error": "...", ...} with a 4xx/5xx status.
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

from .batcher import Batcher, QueueFull, ShuttingDown
from .metrics import ServeMetrics
from .model import CHART_POINTS, Job, ServedModel, chart_png

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
RAW_TYPES = ("image/", "application/octet-stream")
log = logging.getLogger("convzoo.serve")


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


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None, **extra):
        self.status, self.message, self.headers, self.extra = status, message, headers, extra


def _error(status: int, message: str, headers: dict | None = None, **extra) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


class BodyLimit:
    """ASGI middleware: caps request bodies and counts responses for /metrics.

    A declared Content-Length over the limit is answered 413 before any body byte is read; a
    chunked body is counted as it arrives and refused the moment it passes the limit."""

    def __init__(self, app, max_bytes: int, metrics: ServeMetrics):
        self.app, self.max_bytes, self.metrics = app, max_bytes, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        code = [500]

        async def counted_send(message):
            if message["type"] == "http.response.start":
                code[0] = message["status"]
            await send(message)

        try:
            declared = dict(scope["headers"]).get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
                refusal = _error(413, self._too_large(f"Content-Length {int(declared)}"))
                await refusal(scope, receive, counted_send)
                return
            await self.app(scope, self._limited(receive), counted_send)
        finally:
            self.metrics.requests.inc(_route_label(scope), str(code[0]))

    def _too_large(self, what: str) -> str:
        return f"upload too large: {what} bytes exceeds the limit of {self.max_bytes} bytes (--max-upload-mb)"

    def _limited(self, receive):
        seen = [0]

        async def limited():
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > self.max_bytes:
                    raise ApiError(413, self._too_large(f"more than {seen[0]}"))
            return message

        return limited


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
    for name, data in uploads:
        if not data:
            raise ApiError(400, f"{name}: empty upload", image=name)
    return uploads


def decode_all(model: ServedModel, uploads: list[tuple[str, bytes]]) -> list:
    from ..data.images import BadImage

    tensors = []
    for name, data in uploads:
        try:
            tensors.append(model.decode(data, name))
        except BadImage as e:
            raise ApiError(422, f"{name}: {e.reason}", image=name) from None
    return tensors


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
    from .. import __version__

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
    app.add_middleware(BodyLimit, max_bytes=server.config.max_upload_bytes, metrics=server.metrics)
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
    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(
            os.path.join(STATIC, "index.html"),
            headers={"Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:"},
        )

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
        tensors = await anyio.to_thread.run_sync(decode_all, served, uploads, limiter=server.decoders)
        jobs = [Job(t, topk, cam) for t in tensors]
        futures = submit_all(server, served.id, jobs)
        try:
            outputs = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
        except Exception as e:  # noqa: BLE001 - a failed forward pass: 500 with its reason, server lives
            log.exception("inference failed")
            raise ApiError(500, f"inference failed: {type(e).__name__}: {e}".splitlines()[0]) from None
        server.metrics.latency.observe(served.id, value=time.perf_counter() - start)
        results = [{"image": name, **out} for (name, _), out in zip(uploads, outputs)]
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

    @app.get("/healthz", summary="Liveness: the process answers")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: models loaded, not shutting down")
    async def readyz():
        if not server.ready:
            return _error(503, "not ready (starting or shutting down)")
        return {"status": "ready", "models": list(server.models)}

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics (text format 0.0.4)")
    async def metrics():
        return PlainTextResponse(server.metrics.render(), media_type="text/plain; version=0.0.4")
