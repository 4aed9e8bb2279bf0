"""`convzoo serve`: the classification page and JSON API (docs/serve.md)."""

from __future__ import annotations

import argparse
import re
import sys

from ..errors import UserError
from ._common import DEVICE_HELP, add_backend_options

HELP = "a web page and an HTTP API for classification (pip install convzoo[serve])"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model",
        nargs="?",
        help="the model to serve, paired with the first --weights (required, here or as --model)",
    )
    p.add_argument(
        "--model",
        dest="more_models",
        action="append",
        default=[],
        metavar="MODEL",
        help="another model to serve; models pair with --weights in order "
        "(serve resnet18 --weights a.safetensors --model googlenet --weights b.safetensors; default: none)",
    )
    p.add_argument(
        "--weights",
        action="append",
        default=[],
        metavar="W",
        help="weights file (or catalog name) for each model, in order (required: one per model)",
    )
    p.add_argument(
        "--name",
        dest="names",
        action="append",
        default=[],
        metavar="ID",
        help="the id each model is served as (?model=ID), in model order; default: the model's name, "
        "or model:RUN when a model is served twice (RUN: the weights' run folder, or the file name)",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=8000, help="TCP port to listen on")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    add_backend_options(p, calibration_default="required for int8")
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile each model at start-up, for every batch size up to --max-batch",
    )
    p.add_argument("--max-batch", type=int, default=16, help="most images in one forward pass")
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=5.0,
        help="how long a lone request waits for others to batch with (default 5)",
    )
    p.add_argument(
        "--queue-size",
        type=int,
        default=64,
        help="images waiting per model before requests get 503 + Retry-After",
    )
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="request body limit (413 above it)")
    p.add_argument(
        "--max-connections",
        type=int,
        default=256,
        help="open connections before uvicorn answers 503 (bounds memory held by uploads)",
    )
    p.add_argument(
        "--allowed-hosts",
        action="append",
        default=[],
        metavar="HOST",
        help="a Host header to answer besides the bound --host, localhost, 127.0.0.1 and ::1 "
        "(repeat, or comma-separated; *.example.org for a domain, * for any); others get 400, "
        "so a web page on another site cannot reach this server through DNS rebinding (default: none)",
    )
    p.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        help="seconds a client has to send a request's line and headers before 408 and close",
    )
    p.add_argument(
        "--body-timeout",
        type=float,
        default=60.0,
        help="seconds a client has to send a request's whole body before 408 and close",
    )
    p.add_argument(
        "--max-image-mp",
        type=float,
        default=50.0,
        help="most megapixels decoded per image (large JPEGs are decoded at reduced size first); "
        "larger images get 413",
    )
    p.add_argument(
        "--decode-memory-mb",
        type=float,
        default=1024.0,
        help="memory the images being decoded may take together; images wait for room, and one "
        "that would need more gets 413",
    )
    p.add_argument(
        "--shutdown-timeout",
        type=float,
        default=30.0,
        help="on SIGTERM, seconds to finish open requests before cancelling them",
    )


def pairs(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(model, weights) in order: the positional MODEL first, then each --model."""
    names = ([args.model] if args.model else []) + list(args.more_models)
    if not names:
        raise UserError("name a model to serve: convzoo serve MODEL --weights W")
    if len(names) != len(args.weights):
        raise UserError(
            f"{len(names)} model(s) but {len(args.weights)} --weights: "
            "give one --weights per model, in the same order"
        )
    return list(zip(names, args.weights))


GENERIC_STEMS = {"best", "last", "final", "weights", "model", "checkpoint"}
ID_CHARS = re.compile(r"[^A-Za-z0-9._:+-]")


def model_ids(pairs_: list[tuple[str, str]], names: list[str] | None = None) -> list[str]:
    """The `model` selector of each pair: `--name` when given; else the model name, or model:RUN
    when a model repeats (RUN: the weights' run folder for run files such as best.safetensors,
    else the file name without `.safetensors`, or the weights' catalog name)."""
    import os

    if names:
        if len(names) != len(pairs_):
            raise UserError(
                f"{len(pairs_)} model(s) but {len(names)} --name: give one --name per model, in order"
            )
        bad = [n for n in names if not n or ID_CHARS.search(n)]
        if bad:
            raise UserError(f"--name {bad[0]!r}: use letters, digits and . _ : + - only")
        ids = list(names)
    else:
        models = [m for m, _ in pairs_]

        def run_name(weights: str) -> str:
            base = os.path.basename(weights)
            stem = base[: -len(".safetensors")] if base.endswith(".safetensors") else base
            folder = os.path.basename(os.path.dirname(os.path.abspath(weights)))
            return ID_CHARS.sub("_", folder if stem in GENERIC_STEMS and folder else stem)

        ids = [m if models.count(m) == 1 else f"{m}:{run_name(w)}" for m, w in pairs_]
    if len(set(ids)) != len(ids):
        twice = sorted({i for i in ids if ids.count(i) > 1})
        raise UserError(
            f"two models would be served as {', '.join(twice)}: "
            "give each its own id with --name, in model order"
        )
    return ids


def config(args: argparse.Namespace):
    from ..serve.app import ServeConfig

    check_numbers(args)
    return ServeConfig(
        max_batch=args.max_batch,
        max_wait=args.max_wait_ms / 1000,
        queue_size=args.queue_size,
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        warm_chart=True,
        max_image_pixels=int(args.max_image_mp * 1e6),
        decode_budget=int(args.decode_memory_mb * 2**20),
        body_timeout=args.body_timeout,
        allowed_hosts=allowed_hosts(args),
    )


def check_numbers(args: argparse.Namespace) -> None:
    """One line for the first value out of range, before any model is loaded."""
    import math

    rules = [
        ("--port", args.port, 1, 65535),
        ("--max-connections", args.max_connections, 1, 1_000_000),
        ("--max-batch", args.max_batch, 1, 4096),
        ("--queue-size", args.queue_size, 1, 1_000_000),
        ("--max-wait-ms", args.max_wait_ms, 0, 60_000),
        ("--max-upload-mb", args.max_upload_mb, 0.001, 4096),
        ("--header-timeout", args.header_timeout, 0.1, 3600),
        ("--body-timeout", args.body_timeout, 0.1, 3600),
        ("--shutdown-timeout", args.shutdown_timeout, 0, 3600),
        ("--max-image-mp", args.max_image_mp, 0.01, 1000),
        ("--decode-memory-mb", args.decode_memory_mb, 16, 1_048_576),
    ]

    def shown(v) -> str:
        return f"{v:g}" if not math.isfinite(v) or not float(v).is_integer() else str(int(v))

    for flag, value, low, high in rules:
        if not (math.isfinite(value) and low <= value <= high):
            raise UserError(f"{flag} {shown(value)} is out of range: use {shown(low)} to {shown(high)}")


def allowed_hosts(args: argparse.Namespace) -> tuple[str, ...]:
    """The Host header values answered: this machine's names, the bound --host, --allowed-hosts."""
    from ..serve.app import LOCAL_HOSTS

    extra = [h.strip() for item in args.allowed_hosts for h in item.split(",") if h.strip()]
    bound = [] if args.host in ("0.0.0.0", "::", "") else [args.host]
    return tuple(dict.fromkeys([*LOCAL_HOSTS, *bound, *extra]))


def build_app(args: argparse.Namespace):
    """The application for `args` with its models loaded (and compiled): errors surface here, before
    the port is bound."""
    from ..serve import require_extra

    require_extra()
    from ..serve.app import create_app
    from ..serve.model import ServedModel

    todo = pairs(args)
    cfg = config(args)
    model_ids(todo, args.names)  # a clash is one line before any weights are read
    if args.precision == "int8" and args.calibration is None:
        raise UserError(
            "--precision int8 needs --calibration DIR: a folder of images like the ones you will serve"
        )
    if args.calibration is not None and args.precision != "int8":
        raise UserError("--calibration applies to --precision int8")
    models = [
        ServedModel(
            m,
            w,
            id=i,
            device=args.device,
            precision=args.precision,
            compile=args.compile,
            max_batch=cfg.max_batch,
            backend="torch" if args.compile and args.backend == "auto" else args.backend,  # compile: PyTorch
            calibration=args.calibration,
        )
        for (m, w), i in zip(todo, model_ids(todo, args.names))
    ]
    return create_app(models, cfg)


def run(args: argparse.Namespace) -> None:
    import signal

    app = build_app(args)
    import uvicorn

    from ..serve import printable
    from ..serve.protocol import guarded_protocol

    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=args.host,
            port=args.port,
            log_level="info",
            limit_concurrency=args.max_connections,
            timeout_graceful_shutdown=args.shutdown_timeout,
            # uvicorn's h11 protocol with deadlines for slow request heads and bodies, and idle
            # keep-alive connections answered, not reset, on shutdown (serve/protocol.py)
            http=guarded_protocol(args.header_timeout, args.body_timeout, min(1.0, args.shutdown_timeout)),
        )
    )
    # uvicorn shuts down gracefully on SIGTERM/SIGINT (stops accepting, finishes open requests, runs
    # the app's shutdown, which drains the batch queues) and then raises the signal again for the
    # handler that was there before it: a no-op here, so a clean shutdown exits 0, not 143.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    _sanitize_logs()
    served = app.state.server
    # ids, file names and labels come from weights files: escaped, never raw to the terminal
    lines = [
        f"convzoo serve: http://{printable(args.host)}:{args.port}/ serving {len(served.models)} model(s)"
    ]
    for m in served.models.values():
        labels = ", ".join(printable(x) for x in m.names[:5]) + (", ..." if len(m.names) > 5 else "")
        lines.append(
            f"  {printable(m.id)}: {printable(m.model)}, weights {printable(m.weights_path)}, "
            f"{len(m.names)} classes ({labels})"
        )
    lines.append(f"  answering Host: {', '.join(printable(h) for h in served.config.allowed_hosts)}")
    print("\n".join(lines), file=sys.stderr)
    server.run()


def _sanitize_logs() -> None:
    """uvicorn's access log prints the decoded request path (`/%1b[2J` becomes an escape
    sequence): every string argument of its records is escaped first."""
    import logging

    from ..serve import printable

    class Printable(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            if isinstance(record.args, tuple):
                record.args = tuple(printable(a) if isinstance(a, str) else a for a in record.args)
            return True

    for name in ("uvicorn.access", "uvicorn.error", "convzoo.serve"):
        logging.getLogger(name).addFilter(Printable())
