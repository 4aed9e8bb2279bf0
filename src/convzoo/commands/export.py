"""`convzoo export`: ONNX or torch.export (pt2) graph + JSON sidecar."""

from __future__ import annotations

import argparse
import sys

from ._common import JSON_HELP, MODEL_HELP, WEIGHTS_HELP, print_json

HELP = "ONNX or torch.export (pt2) graph + JSON sidecar"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--weights", required=True, help=WEIGHTS_HELP)
    p.add_argument(
        "--format",
        required=True,
        choices=["onnx", "pt2"],
        help="onnx: an ONNX graph; pt2: a torch.export program (torch.export.load)",
    )
    p.add_argument("--out", required=True, help="output file; FILE.json is written beside it")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.add_argument("--opset", type=int, default=None, help="ONNX opset version (default: the exporter's)")
    p.add_argument(
        "--dynamic-size",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="dynamic height/width (default: wherever the network runs at other sizes, "
        "which every shipped model does; a fixed-size network says why on stderr)",
    )


def run(args: argparse.Namespace) -> None:
    import dataclasses

    from ..factory import create_model
    from ..interop.export import check_target, export_model

    check_target(args.format, args.out)
    model = create_model(args.model, weights=args.weights)
    r = export_model(model, args.format, args.out, opset=args.opset, dynamic_size=args.dynamic_size)
    if args.json:
        return print_json(dataclasses.asdict(r))
    check = (
        f"checked with {r.checked_with} on a batch of 3: max |diff| {r.max_abs_diff:.2e} "
        f"(logits up to {r.max_abs_logit:.2e})"
        if r.checked_with
        else "not checked (onnxruntime not installed)"
    )
    print(
        f"wrote {r.path} ({r.format}, input {r.input_shape}, {r.num_classes} logits) and {r.sidecar}; {check}"
    )
    if r.fixed_size_reason:
        print(
            f"convzoo export: {args.model}: spatial size fixed at "
            f"{r.input_shape[2]}x{r.input_shape[3]}: {r.fixed_size_reason}",
            file=sys.stderr,
        )
