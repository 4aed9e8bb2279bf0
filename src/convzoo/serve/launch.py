"""What `convzoo serve` runs: the served models, the application and the uvicorn server around it.

`ServeJob` says which models to serve under which ids, on which address, with which limits (every
value checked when it is built, before any weights are read); `launch(job)` loads the models
(errors surface before the port is bound), starts uvicorn with the deadlines of protocol.py and a
graceful shutdown on SIGTERM/SIGINT, says on stderr what it serves, and returns when the server
stops. Importing this module needs the `convzoo[serve]` extra (`serve.require_extra` first).
"""

from __future__ import annotations

import logging
import math
import os
import re
import signal
import sys
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

from ..errors import UserError
from ..inference.predict import check_calibration
from . import printable
from .app import LOCAL_HOSTS, ServeConfig, Server, create_app
from .model import ServedModel
from .protocol import guarded_protocol

GENERIC_STEMS = {"best", "last", "final", "weights", "model", "checkpoint"}
ID_CHARS = re.compile(r"[^A-Za-z0-9._:+-]")
WILDCARD_ADDRESSES = ("0.0.0.0", "::", "")  # every interface: no name of its own to answer


@dataclass(frozen=True)
class ServeJob:
    """One server's settings, as `convzoo serve` takes them; each is checked here (one-line
    UserErrors, the first found in flag order), before any weights are read.

    `models` pair with `weights` in order; `names` are the ids they are served as (?model=ID;
    empty: `model_ids` picks them). `allowed_hosts` are --allowed-hosts as given (each may be
    comma-separated); `hosts` is the full list answered. Times are in seconds, except
    `max_wait_ms`; sizes in the units their flags name."""

    models: tuple[str, ...]
    weights: tuple[str, ...]
    names: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    port: int = 8000
    device: str = "auto"
    backend: str = "auto"
    precision: str = "auto"
    calibration: str | None = None
    compile: bool = False
    max_batch: int = 16
    max_wait_ms: float = 5.0
    queue_size: int = 64
    max_upload_mb: float = 10.0
    max_connections: int = 256
    allowed_hosts: tuple[str, ...] = ()
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    max_image_mp: float = 50.0
    decode_memory_mb: float = 1024.0
    shutdown_timeout: float = 30.0

    def __post_init__(self) -> None:
        if not self.models:
            raise UserError("name a model to serve: convzoo serve MODEL --weights W")
        if len(self.models) != len(self.weights):
            raise UserError(
                f"{len(self.models)} model(s) but {len(self.weights)} --weights: "
                "give one --weights per model, in the same order"
            )
        self.check_numbers()
        model_ids(self.pairs, list(self.names))  # a clash is one line before any weights are read
        if self.precision == "int8" and self.calibration is None:
            raise UserError(
                "--precision int8 needs --calibration DIR: a folder of images like the ones you will serve"
            )
        check_calibration(self.precision, self.calibration)

    def check_numbers(self) -> None:
        """One line for the first value out of range."""
        rules = [
            ("--port", self.port, 1, 65535),
            ("--max-connections", self.max_connections, 1, 1_000_000),
            ("--max-batch", self.max_batch, 1, 4096),
            ("--queue-size", self.queue_size, 1, 1_000_000),
            ("--max-wait-ms", self.max_wait_ms, 0, 60_000),
            ("--max-upload-mb", self.max_upload_mb, 0.001, 4096),
            ("--header-timeout", self.header_timeout, 0.1, 3600),
            ("--body-timeout", self.body_timeout, 0.1, 3600),
            ("--shutdown-timeout", self.shutdown_timeout, 0, 3600),
            ("--max-image-mp", self.max_image_mp, 0.01, 1000),
            ("--decode-memory-mb", self.decode_memory_mb, 16, 1_048_576),
        ]
        for flag, value, low, high in rules:
            if not (math.isfinite(value) and low <= value <= high):
                raise UserError(f"{flag} {shown(value)} is out of range: use {shown(low)} to {shown(high)}")

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """(model, weights) of each served model, in order."""
        return list(zip(self.models, self.weights))

    @property
    def ids(self) -> list[str]:
        return model_ids(self.pairs, list(self.names))

    @property
    def hosts(self) -> tuple[str, ...]:
        """The Host header values answered: this machine's names, the bound host, --allowed-hosts."""
        extra = [h.strip() for item in self.allowed_hosts for h in item.split(",") if h.strip()]
        bound = [] if self.host in WILDCARD_ADDRESSES else [self.host]
        return tuple(dict.fromkeys([*LOCAL_HOSTS, *bound, *extra]))

    @property
    def served_backend(self) -> str:
        """--backend as each model runs it: `auto` with --compile is PyTorch (torch.compile's)."""
        return "torch" if self.compile and self.backend == "auto" else self.backend

    def app_config(self) -> ServeConfig:
        """The limits the application applies, in its units (seconds, bytes, pixels)."""
        return ServeConfig(
            max_batch=self.max_batch,
            max_wait=self.max_wait_ms / 1000,
            queue_size=self.queue_size,
            max_upload_bytes=int(self.max_upload_mb * 2**20),
            warm_chart=True,
            max_image_pixels=int(self.max_image_mp * 1e6),
            decode_budget=int(self.decode_memory_mb * 2**20),
            body_timeout=self.body_timeout,
            allowed_hosts=self.hosts,
        )


def shown(value: float) -> str:
    """A number as its flag was written: 8000, 0.5, nan."""
    return f"{value:g}" if not math.isfinite(value) or not float(value).is_integer() else str(int(value))


def model_ids(pairs: list[tuple[str, str]], names: list[str] | None = None) -> list[str]:
    """The `model` selector of each pair: `--name` when given; else the model name, or model:RUN
    when a model repeats (RUN: the weights' run folder for run files such as best.safetensors,
    else the file name without `.safetensors`, or the weights' catalog name)."""
    if names:
        if len(names) != len(pairs):
            raise UserError(
                f"{len(pairs)} model(s) but {len(names)} --name: give one --name per model, in order"
            )
        bad = [n for n in names if not n or ID_CHARS.search(n)]
        if bad:
            raise UserError(f"--name {bad[0]!r}: use letters, digits and . _ : + - only")
        ids = list(names)
    else:
        models = [m for m, _ in pairs]
        ids = [m if models.count(m) == 1 else f"{m}:{run_name(w)}" for m, w in pairs]
    if len(set(ids)) != len(ids):
        twice = sorted({i for i in ids if ids.count(i) > 1})
        raise UserError(
            f"two models would be served as {', '.join(twice)}: "
            "give each its own id with --name, in model order"
        )
    return ids


def run_name(weights: str) -> str:
    """What tells apart two weights of one model: the run folder of a run file (best.safetensors),
    else the file name without `.safetensors` (or the catalog name), in id characters."""
    base = os.path.basename(weights)
    stem = base[: -len(".safetensors")] if base.endswith(".safetensors") else base
    folder = os.path.basename(os.path.dirname(os.path.abspath(weights)))
    return ID_CHARS.sub("_", folder if stem in GENERIC_STEMS and folder else stem)


def build_app(job: ServeJob) -> FastAPI:
    """The application for `job` with its models loaded (and compiled): errors surface here,
    before the port is bound."""
    models = [
        ServedModel(
            m,
            w,
            id=i,
            device=job.device,
            precision=job.precision,
            compile=job.compile,
            max_batch=job.max_batch,
            backend=job.served_backend,
            calibration=job.calibration,
        )
        for (m, w), i in zip(job.pairs, job.ids)
    ]
    return create_app(models, job.app_config())


def launch(job: ServeJob) -> None:
    """Serve `job` until SIGTERM or SIGINT, then finish the open requests and return."""
    app = build_app(job)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=job.host,
            port=job.port,
            log_level="info",
            limit_concurrency=job.max_connections,
            # typed int, used as asyncio.timeout's delay: fractions of a second work
            timeout_graceful_shutdown=job.shutdown_timeout,  # type: ignore[arg-type]
            # uvicorn's h11 protocol with deadlines for slow request heads and bodies, and idle
            # keep-alive connections answered, not reset, on shutdown (serve/protocol.py)
            http=guarded_protocol(job.header_timeout, job.body_timeout, min(1.0, job.shutdown_timeout)),
        )
    )
    # uvicorn shuts down gracefully on SIGTERM/SIGINT (stops accepting, finishes open requests, runs
    # the app's shutdown, which drains the batch queues) and then raises the signal again for the
    # handler that was there before it: a no-op here, so a clean shutdown exits 0, not 143.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    sanitize_logs()
    print(start_lines(job, app.state.server), file=sys.stderr)
    server.run()


def start_lines(job: ServeJob, served: Server) -> str:
    """What the server says on start: its address, each model with its weights and first labels,
    and the Host headers it answers. Ids, file names and labels come from weights files: escaped,
    never raw to the terminal."""
    lines = [f"convzoo serve: http://{printable(job.host)}:{job.port}/ serving {len(served.models)} model(s)"]
    for m in served.models.values():
        labels = ", ".join(printable(x) for x in m.names[:5]) + (", ..." if len(m.names) > 5 else "")
        lines.append(
            f"  {printable(m.id)}: {printable(m.model)}, weights {printable(m.weights_path)}, "
            f"{len(m.names)} classes ({labels})"
        )
    lines.append(f"  answering Host: {', '.join(printable(h) for h in served.config.allowed_hosts)}")
    return "\n".join(lines)


class PrintableArgs(logging.Filter):
    """Every string argument of a log record escaped (`serve.printable`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(printable(a) if isinstance(a, str) else a for a in record.args)
        return True


def sanitize_logs() -> None:
    """uvicorn's access log prints the decoded request path (`/%1b[2J` becomes an escape
    sequence): every string argument of its records is escaped first."""
    for name in ("uvicorn.access", "uvicorn.error", "convzoo.serve"):
        logging.getLogger(name).addFilter(PrintableArgs())
