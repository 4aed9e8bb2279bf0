"""`convzoo serve`: the classification page and JSON API (docs/serve.md)."""

from __future__ import annotations

import argparse
import sys

from ..errors import UserError
from ._common import DEVICE_HELP, add_backend_options

HELP = "a web page and an HTTP API for classification (pip install convzoo[serve])"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", help="the model to serve (pairs with the first --weights)")
    p.add_argument(
        "--model",
        dest="more_models",
        action="append",
        default=[],
        metavar="MODEL",
        help="another model to serve; models pair with --weights in order "
        "(serve resnet18 --weights a.safetensors --model googlenet --weights b.safetensors)",
    )
    p.add_argument(
        "--weights",
        action="append",
        default=[],
        metavar="W",
        help="weights file (or catalog name) for each model, in order",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=8000)
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


def model_ids(pairs_: list[tuple[str, str]]) -> list[str]:
    """The `model` selector of each pair: the model name, or name:weights when a model repeats (the
    file name without `.safetensors`, or the weights' catalog name)."""
    import os

    names = [m for m, _ in pairs_]

    def stem(weights: str) -> str:
        base = os.path.basename(weights)
        return base[: -len(".safetensors")] if base.endswith(".safetensors") else base

    ids = [m if names.count(m) == 1 else f"{m}:{stem(w)}" for m, w in pairs_]
    if len(set(ids)) != len(ids):
        raise UserError(f"the same model and weights are named twice: {', '.join(ids)}")
    return ids


def config(args: argparse.Namespace):
    from ..serve.app import ServeConfig

    if args.max_batch < 1 or args.queue_size < 1 or args.max_wait_ms < 0 or args.max_upload_mb <= 0:
        raise UserError(
            "--max-batch and --queue-size must be at least 1, --max-wait-ms at least 0, "
            "--max-upload-mb positive"
        )
    return ServeConfig(
        max_batch=args.max_batch,
        max_wait=args.max_wait_ms / 1000,
        queue_size=args.queue_size,
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        warm_chart=True,
    )


def build_app(args: argparse.Namespace):
    """The application for `args` with its models loaded (and compiled): errors surface here, before
    the port is bound."""
    from ..serve import require_extra

    require_extra()
    from ..serve.app import create_app
    from ..serve.model import ServedModel

    todo = pairs(args)
    cfg = config(args)
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
            backend=args.backend,
            calibration=args.calibration,
        )
        for (m, w), i in zip(todo, model_ids(todo))
    ]
    return create_app(models, cfg)


def run(args: argparse.Namespace) -> None:
    import signal

    app = build_app(args)
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=args.host,
            port=args.port,
            log_level="info",
            limit_concurrency=args.max_connections,
            timeout_graceful_shutdown=args.shutdown_timeout,
        )
    )
    # uvicorn shuts down gracefully on SIGTERM/SIGINT (stops accepting, finishes open requests, runs
    # the app's shutdown, which drains the batch queues) and then raises the signal again for the
    # handler that was there before it: a no-op here, so a clean shutdown exits 0, not 143.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    print(
        f"convzoo serve: http://{args.host}:{args.port}/ serving {', '.join(app.state.server.models)}",
        file=sys.stderr,
    )
    server.run()
