"""`convzoo features`: pooled features of a named layer for every image (.npy + list)."""

from __future__ import annotations

import argparse
import os

from ..errors import UserError
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
    if args.batch_size < 1 or args.workers < 0:
        raise UserError("--batch-size must be >= 1 and --workers >= 0")
    r = features_to_file(
        args.model,
        args.weights,
        args.data,
        args.layer,
        args.out,
        args.split,
        args.batch_size,
        args.workers,
        args.device,
        args.precision,
        args.limit,
    )
    if args.json:
        return print_json(r)
    print(
        f"wrote {r['out']} ({r['images']} x {r['dim']}, {r['layer']}) and {r['list']}"
        + (f"; {r['skipped']} unreadable skipped" if r["skipped"] else "")
    )


def features_to_file(
    model_name: str,
    weights: str,
    data_spec: str,
    layer: str,
    out: str,
    split: str | None = None,
    batch_size: int = 64,
    workers: int = 2,
    device: str = "auto",
    precision: str = "auto",
    limit: int | None = None,
) -> dict:
    import numpy as np

    from ..analysis.features import extract_features, resolve_layer
    from ..data.source import source_from_record
    from ..data.transforms import eval_transform_from_spec
    from ..engine.distributed import resolve_device
    from ..engine.loaders import make_loader, subset_indices
    from ..factory import create_model
    from ..inference.evaluate import autocast, progress_bar
    from ..inference.report import Positions
    from ..weights import spec_of

    if not out.endswith(".npy"):
        raise UserError(f"--out must be a .npy file, got {out!r}")
    from ..engine.loaders import check_limit
    from ..outputs import atomic_write, output_file

    output_file(out, "--out")
    check_limit(limit)
    dev = resolve_device(device)
    # The plain model under autocast, not eval's fast inference model: BN folding traces the
    # model into a flat graph, where a hook on an inner block (`layer3.1`) would never fire.
    model = create_model(model_name, weights=weights).to(dev).eval()
    resolve_layer(model, layer)
    spec = spec_of(model)
    dataset = source_from_record(data_spec, spec.extra).dataset(split, labelled=False)
    positions = Positions(
        dataset,
        eval_transform_from_spec(spec, native_size=dataset.native_size),
        subset_indices(len(dataset), limit, 0),
    )
    order: list[int] = []

    def batches():
        loader = make_loader(positions, batch_size, workers, shuffle=False)
        for images, pos, _ in progress_bar(loader, "features"):
            if pos.numel():
                order.extend(pos.tolist())
                yield images

    feats = extract_features(model, layer, batches(), dev, lambda: autocast(dev, precision))
    names = os.path.splitext(out)[0] + ".txt"
    atomic_write(out, lambda f: np.save(f, feats))  # a full disk: one line, the old file kept
    atomic_write(names, lambda f: f.write("".join(positions.path(i) + "\n" for i in order).encode()))
    return {
        "model": model.model_name,
        "layer": layer,
        "images": len(order),
        "dim": int(feats.shape[1]),
        "out": out,
        "list": names,
        "skipped": len(positions) - len(order),
    }
