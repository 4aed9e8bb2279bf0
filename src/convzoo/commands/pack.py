"""`convzoo pack`: write a dataset SPEC as WebDataset-format tar shards (stream with --data shards:DIR)."""

from __future__ import annotations

import argparse

from ..errors import UserError
from ._common import DATA_HELP, JSON_HELP, VAL_SPLIT_NAME_HELP, WORKERS_HELP, print_json

HELP = "write a dataset SPEC as WebDataset-format tar shards (stream with --data shards:DIR)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    # --data as in train/eval/features; the positional SPEC is the same value without the flag
    p.add_argument(
        "--data",
        default=None,
        metavar="SPEC",
        help=DATA_HELP + "; the dataset to pack (required, here or as SPEC)",
    )
    p.add_argument(
        "source",
        nargs="?",
        default=None,
        metavar="SPEC",
        help="the same as --data (required unless --data is given)",
    )
    p.add_argument("--out", required=True, help="folder for the shards (empty or new)")
    p.add_argument(
        "--shard-size", default="1000", help="images per shard (1000) or bytes per shard (256MB, 1GiB)"
    )
    p.add_argument(
        "--splits", default=None, help="comma-separated splits (default: the dataset's train and val)"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the training split's shuffle (and of synthetic)"
    )
    p.add_argument("--no-shuffle", action="store_true", help="keep the training split in its source order")
    p.add_argument("--workers", type=int, default=0, help=WORKERS_HELP)
    p.add_argument("--json", action="store_true", help=JSON_HELP + " (the shard index written)")
    p.add_argument(
        "--val-split",
        type=float,
        default=None,
        help="single class-folder tree: stratified seeded validation fraction (default 0.1)",
    )
    p.add_argument("--val-split-name", default=None, metavar="NAME", help=VAL_SPLIT_NAME_HELP)


def run(args: argparse.Namespace) -> None:
    from ..data.pack import pack
    from ..engine.loaders import check_workers

    check_workers(args.workers)
    if args.data and args.source and args.data != args.source:
        raise UserError(f"two datasets given ({args.source} and --data {args.data}): give one, as --data")
    spec = args.data or args.source
    if not spec:
        raise UserError("pack needs the dataset to pack: --data SPEC (synthetic, a folder, or KIND:PATH)")
    splits = [s for s in args.splits.split(",") if s] if args.splits else None
    meta = pack(
        spec,
        args.out,
        args.shard_size,
        splits,
        args.seed,
        not args.no_shuffle,
        args.workers,
        val_fraction=args.val_split,
        val_split_name=args.val_split_name,
    )
    if args.json:
        return print_json(meta)
    for split, info in meta["splits"].items():
        print(f"{split}: {info['count']} images in {len(info['shards'])} shards")
    print(f"wrote {args.out} ({len(meta['classes'])} classes); train with --data shards:{args.out}")
