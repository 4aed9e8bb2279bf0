"""`convzoo chart`: PNG: published ImageNet accuracy vs. MACs, bubble size = params."""

from __future__ import annotations

import argparse

from ..errors import UserError
from ._common import JSON_HELP, print_json

HELP = "PNG: published ImageNet accuracy vs. MACs, bubble size = params"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=None, help="output PNG file (default accuracy_vs_macs.png / depth.png)")
    p.add_argument(
        "--metric", choices=["top1", "top5"], default="top1", help="published ImageNet accuracy to plot"
    )
    p.add_argument(
        "--kind",
        choices=["cost", "depth"],
        default="cost",
        help="cost: accuracy vs. MACs; depth: 'revolution of depth' (depth vs. top-5 error)",
    )
    p.add_argument("--json", action="store_true", help=JSON_HELP)


def run(args: argparse.Namespace) -> None:
    import os

    from ..analysis.chart import DEPTH_POINTS, chart_points, plot_accuracy_vs_macs, plot_depth

    args.out = args.out or ("depth.png" if args.kind == "depth" else "accuracy_vs_macs.png")
    if not args.out.lower().endswith(".png"):
        raise UserError(f"--out must be a .png file, got {args.out!r}")
    folder = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(folder):
        raise UserError(f"folder {folder} does not exist")
    if args.kind == "depth":
        plot_depth(args.out)
        if args.json:
            return print_json({"out": args.out, "kind": "depth", "models": len(DEPTH_POINTS)})
        return print(f"wrote {args.out}: depth vs. top-5 error of {len(DEPTH_POINTS)} ILSVRC networks")
    points = chart_points(args.metric)
    plot_accuracy_vs_macs(points, args.out, args.metric)
    if args.json:
        return print_json({"out": args.out, "kind": "cost", "metric": args.metric, "models": len(points)})
    print(f"wrote {args.out}: {len(points)} models ({args.metric})")
