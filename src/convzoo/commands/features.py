"""`convzoo features`: pooled features of a named layer for every image (.npy + list)."""

from __future__ import annotations

import argparse

from ._common import (
    DATA_HELP,
    JSON_HELP,
    MODEL_HELP,
    SPLIT_HELP,
    WEIGHTS_HELP,
    add_inference_options,
    print_json,
)

HELP = "pooled features of a named layer for every image (.npy + list)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--weights", required=True, help=WEIGHTS_HELP)
    p.add_argument("--data", required=True, metavar="SPEC", help=DATA_HELP)
    p.add_argument("--split", default=None, metavar="NAME", help=SPLIT_HELP)
    p.add_argument(
        "--layer", required=True, help="paper stage (conv4_x, inception_4e, fc7) or submodule path"
    )
    p.add_argument("--out", required=True, help="FILE.npy; the image list goes to FILE.txt")
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        metavar="N",
        help="a seeded random subset of N images (default: all)",
    )
    # features are read from an inner layer of the PyTorch module: no graph backend
    add_inference_options(p, batch_size=64, workers=2, compile=False, backend=False)
    p.add_argument("--json", action="store_true", help=JSON_HELP)


def run(args: argparse.Namespace) -> None:
    from ..inference.features import FeaturesJob, features_to_file

    job = FeaturesJob(
        model=args.model,
        weights=args.weights,
        data=args.data,
        layer=args.layer,
        out=args.out,
        split=args.split,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        precision=args.precision,
        limit=args.limit,
    )
    r = features_to_file(job)
    if args.json:
        return print_json(r)
    print(
        f"wrote {r['out']} ({r['images']} x {r['dim']}, {r['layer']}) and {r['list']}"
        + (f"; {r['skipped']} unreadable skipped" if r["skipped"] else "")
    )
