"""`convzoo serve`: the classification page and JSON API (docs/serve.md)."""

from __future__ import annotations

import argparse

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


def run(args: argparse.Namespace) -> None:
    from ..serve import require_extra

    require_extra()  # before serve.launch, which imports FastAPI and uvicorn
    from ..serve.launch import ServeJob, launch

    job = ServeJob(
        models=tuple([args.model] if args.model else []) + tuple(args.more_models),
        weights=tuple(args.weights),
        names=tuple(args.names),
        host=args.host,
        port=args.port,
        device=args.device,
        backend=args.backend,
        precision=args.precision,
        calibration=args.calibration,
        compile=args.compile,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        queue_size=args.queue_size,
        max_upload_mb=args.max_upload_mb,
        max_connections=args.max_connections,
        allowed_hosts=tuple(args.allowed_hosts),
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        max_image_mp=args.max_image_mp,
        decode_memory_mb=args.decode_memory_mb,
        shutdown_timeout=args.shutdown_timeout,
    )
    launch(job)
