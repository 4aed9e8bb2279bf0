"""`convzoo chart`: PNG: published ImageNet accuracy vs. MACs, bubble size = params."""

from __future__ import annotations

import argparse

from ..errors import UserError
from ._common import JSON_HELP, print_json

HELP = "PNG: published ImageNet accuracy vs. MACs, bubble size = params; --run places your own runs"


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
    p.add_argument(
        "--run",
        dest="runs",
        action="append",
        default=[],
        metavar="DIR",
        help="a `convzoo train` run folder to place beside the papers' networks: its best "
        "validation accuracy (on its own data) against its network's MACs at its input size; "
        "repeatable, --kind cost only (default: none)",
    )
    p.add_argument("--json", action="store_true", help=JSON_HELP)


def run(args: argparse.Namespace) -> None:
    import dataclasses
    import os

    from ..analysis.chart import DEPTH_POINTS, chart_points, plot_accuracy_vs_macs, plot_depth, run_point

    args.out = args.out or ("depth.png" if args.kind == "depth" else "accuracy_vs_macs.png")
    if not args.out.lower().endswith(".png"):
        raise UserError(f"--out must be a .png file, got {args.out!r}")
    folder = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(folder):
        raise UserError(f"folder {folder} does not exist")
    if args.kind == "depth":
        if args.runs:
            raise UserError("--run places a run on the accuracy-vs-cost chart: use it with --kind cost")
        plot_depth(args.out)
        if args.json:
            return print_json({"out": args.out, "kind": "depth", "models": len(DEPTH_POINTS)})
        return print(f"wrote {args.out}: depth vs. top-5 error of {len(DEPTH_POINTS)} ILSVRC networks")
    runs = [run_point(d, args.metric) for d in args.runs]  # bad folders refused before any work
    points = chart_points(args.metric)
    plot_accuracy_vs_macs(points, args.out, args.metric, runs=runs)
    if args.json:
        return print_json(
            {
                "out": args.out,
                "kind": "cost",
                "metric": args.metric,
                "models": len(points),
                "runs": [dataclasses.asdict(r) for r in runs],
            }
        )
    print(f"wrote {args.out}: {len(points)} models ({args.metric})")
    for r in runs:
        print(
            f"  your run {r.run}: {r.model} ({r.num_classes} classes, {r.input_size}px), "
            f"{r.macs / 1e9:.3f} G MACs, {r.params / 1e6:.2f} M params, "
            f"{r.metric} {r.accuracy:.2f} % on {r.data}"
        )
