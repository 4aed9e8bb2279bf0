"""`convzoo summary`: per-layer output shape, params, MACs, receptive field, design checks."""

from __future__ import annotations

import argparse
import sys

from ..errors import UserError
from ._common import JSON_HELP, MODEL_HELP, meta_model, print_json

HELP = "per-layer output shape, params, MACs, receptive field, design checks"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--input-size", type=int, default=None, help="square input size (default: the paper's)")
    p.add_argument("--blocks", action="store_true", help="paper-level blocks only")
    p.add_argument(
        "--weights",
        default=None,
        help="convzoo weights or a catalog name: describe the model these weights make (their class "
        "count, input size and constructor options) and draw their --filters (default: none, the "
        "paper's model)",
    )
    p.add_argument(
        "--filters",
        default=None,
        metavar="OUT.png",
        help="write the first-layer filters as an image grid here (default: none)",
    )
    p.add_argument("--json", action="store_true", help=JSON_HELP)


def run(args: argparse.Namespace) -> None:
    from ..analysis.profile import format_table, profile
    from ..registry import model_info

    info = model_info(args.model)
    spec, kwargs = _weights_spec(args.weights, info.name) if args.weights else (None, {})
    default = (spec.crop_size or spec.input_size) if spec else info.input_size
    size = default if args.input_size is None else args.input_size
    if size < 1:
        raise UserError(f"--input-size must be positive, got {size}")
    try:
        prof = profile(meta_model(info.name, **kwargs), size, name=info.name)
    except RuntimeError as e:  # e.g. an input too small for the network's pooling
        raise UserError(f"{info.name} cannot run at {size}x{size}: {str(e).splitlines()[0]}") from None
    if args.filters:
        from ..analysis.filters import save_filter_grid
        from ..factory import create_model

        layer, n = save_filter_grid(create_model(info.name, weights=args.weights), args.filters)
        print(
            f"wrote {args.filters}: {n} filters of {layer}" + ("" if args.weights else " (untrained)"),
            file=sys.stderr,
        )
    made = _weights_record(args.weights, spec, kwargs) if spec else None
    if args.json:
        return print_json({**prof.to_dict(), **({"weights": made} if made else {})})
    print(format_table(prof, blocks_only=args.blocks))
    if made:
        labels = made["labels"] or []
        shown = ", ".join(labels[:5]) + (f", ... ({len(labels)} in all)" if len(labels) > 5 else "")
        options = ", ".join(f"{k}={v!r}" for k, v in made["model_kwargs"].items()) or "none"
        print(f"weights {args.weights}: {made['num_classes']} classes" + (f" ({shown})" if shown else ""))
        print(f"  constructor options: {options}")
        print("  preprocessing: " + "; ".join(made["preprocessing"]["steps"][1:]))


def _weights_spec(weights: str, model: str):
    """(WeightSpec, constructor kwargs) of the model `weights` make: their class count and
    options, read from the file's header without loading its tensors."""
    from ..factory import weights_spec

    _, spec = weights_spec(model, weights)
    return spec, {"num_classes": spec.num_classes, **spec.model_kwargs}


def _weights_record(weights: str, spec, kwargs: dict) -> dict:
    from ..data.transforms import describe_preprocessing

    return {
        "path": weights,
        "num_classes": spec.num_classes,
        "labels": spec.labels,
        "model_kwargs": dict(spec.model_kwargs),
        "preprocessing": describe_preprocessing(spec),
        "source": spec.source,
    }
