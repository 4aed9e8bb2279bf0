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
    size = info.input_size if args.input_size is None else args.input_size
    if size < 1:
        raise UserError(f"--input-size must be positive, got {size}")
    try:
        prof = profile(meta_model(info.name), size, name=info.name)
    except RuntimeError as e:  # e.g. an input too small for the network's pooling
        raise UserError(f"{info.name} cannot run at {size}x{size}: {str(e).splitlines()[0]}") from None
    if args.filters:
        from ..analysis.filters import save_filter_grid
        from ..registry import create_model

        layer, n = save_filter_grid(create_model(info.name, weights=args.weights), args.filters)
        print(
            f"wrote {args.filters}: {n} filters of {layer}" + ("" if args.weights else " (untrained)"),
            file=sys.stderr,
        )
    if args.json:
        return print_json(prof.to_dict())
    print(format_table(prof, blocks_only=args.blocks))
