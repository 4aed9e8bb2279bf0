"""Helpers every command shares: JSON output and flag parsing."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import UserError

WORKERS_HELP = "parallel image decoders/loaders; 0 = decode in the main process"
DEVICE_HELP = "auto (default: cuda when available, else cpu), cpu, cuda, cuda:N"
PRECISION_HELP = "auto (default): bf16 where it measured fast here, else fp32"
BACKEND_PRECISION_HELP = (
    "auto (default): bf16 where it measured fast here, else fp32; int8 with --backend "
    "onnxruntime or openvino (calibrated on --calibration images)"
)
BACKEND_HELP = (
    "auto (default): the fastest installed runtime for the job, where making the graph pays back "
    "(OpenVINO or ONNX Runtime: in fp32 both are timed on the graph once and the faster runs; "
    "PyTorch on GPUs and for features only it has), said on stderr; "
    "torch: PyTorch; onnxruntime, openvino: the same network as an ONNX graph (exported once, "
    "cached) run by that runtime on the CPU; see docs/performance.md"
)
CALIBRATION_HELP = (
    "--precision int8: a folder (or image files) to calibrate activation ranges on, first 128 "
    "sorted (default: the images being classified)"
)
JSON_HELP = "print one JSON document on stdout (logs and progress go to stderr)"
MODEL_HELP = "model name (`convzoo list`); with --weights it must be the model the weights were made for"
WEIGHTS_HELP = (
    "convzoo .safetensors weights file, or a catalog name such as resnet50.tv2_in1k "
    "(`convzoo weights`); its class count, labels and preprocessing are used"
)
DATA_HELP = "synthetic, a folder, or KIND:PATH (docs/data-layouts.md)"
SPLIT_HELP = "the split to read (default: the dataset's validation split)"
VAL_SPLIT_NAME_HELP = "a folder's validation sub-folder (default: the first of val, validation, valid, test)"


def deprecated_alias(new: str) -> type[argparse.Action]:
    """An `argparse` action for an old spelling kept working: stores into the new option's
    `dest` and says on stderr which name to use instead."""

    class _Action(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            print(f"{parser.prog}: warning: {option_string} is deprecated; use {new}", file=sys.stderr)
            setattr(namespace, self.dest, values)

    return _Action


def print_json(obj) -> None:
    """`--json`: exactly one JSON document on stdout (logs go to stderr)."""
    json.dump(obj, sys.stdout, indent=1)
    sys.stdout.write("\n")


def int_list(text: str, flag: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{flag} expects comma-separated integers, got {text!r}") from None


def meta_model(name: str, **kw):
    """The model on the meta device: shapes and counts without allocating weights."""
    import torch

    from ..factory import create_model

    with torch.device("meta"):
        return create_model(name, **kw)


def add_inference_options(
    p, batch_size: int, workers: int | None, compile: bool = True, backend: bool = True
) -> None:
    """The options every command that runs a model on images shares (eval, features, predict):
    one spelling, one meaning, one help text each."""
    import argparse

    p.add_argument(
        "--batch-size", type=int, default=batch_size, help=f"images per forward pass (default {batch_size})"
    )
    default = f"{workers}" if workers is not None else "auto: one per CPU up to 4, said on stderr"
    p.add_argument("--workers", type=int, default=workers, help=WORKERS_HELP + f" (default {default})")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    if backend:
        add_backend_options(p)
    else:
        p.add_argument(
            "--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto", help=PRECISION_HELP
        )
    if compile:
        p.add_argument(
            "--compile",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="torch.compile (default: only when the run has enough batches to repay it)",
        )


def add_backend_options(p, calibration_default: str = "the images being classified") -> None:
    """--backend, --precision (with int8) and --calibration: eval, predict and serve."""
    p.add_argument(
        "--backend", choices=["auto", "torch", "onnxruntime", "openvino"], default="auto", help=BACKEND_HELP
    )
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16", "fp16", "int8"],
        default="auto",
        help=BACKEND_PRECISION_HELP,
    )
    p.add_argument(
        "--calibration",
        default=None,
        metavar="PATH",
        help=CALIBRATION_HELP.replace("the images being classified", calibration_default),
    )
