"""Small images at evaluation: enlarged then cropped back, or taken whole at their own size?

A 32-px model's WeightSpec without a resize size gets the ImageNet rule resize = crop / 0.875:
a 32x32 photo is enlarged to 37x37 and its central 32x32 kept (the border lost). This script
evaluates one trained 32-px model on the same decoded test images both ways and reports top-1
of each, with the paired counts (images only one of the two gets right) that say whether the
difference is more than noise.

    python benchmarks/small_input_eval.py --weights RUN/best.safetensors --data /tmp/cifar10/test

--data is a folder of class sub-folders (the CIFAR-10 test JPEGs: /work/shared/data/cifar10.tar.gz
extracted). Writes benchmarks/results/small_input_eval-<model>-<what>-<date>.json.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import torch

import _common


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", required=True)
    ap.add_argument("--data", required=True, help="folder of class sub-folders")
    ap.add_argument("--limit", type=int, default=None, help="first N images per class (default: all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--what", default="cifar10_test")
    args = ap.parse_args()
    _common.setup_threads(args.threads)

    from convzoo.data.images import load_image
    from convzoo.data.transforms import eval_transform
    from convzoo.factory import create_model

    spec_model = create_model(_model_of(args.weights), weights=args.weights).eval()
    spec = spec_model.weight_spec
    size = spec.crop_size or spec.input_size
    ways = {
        "whole": eval_transform(size, spec.mean, spec.std, resize_size=size),
        "enlarge_crop": eval_transform(size, spec.mean, spec.std, resize_size=round(size / 0.875)),
    }
    classes = sorted(d for d in os.listdir(args.data) if os.path.isdir(os.path.join(args.data, d)))
    if spec.labels and sorted(spec.labels) == classes:
        classes = list(spec.labels)  # the weights' own class order
    files = []
    for label, c in enumerate(classes):
        names = sorted(os.listdir(os.path.join(args.data, c)))[: args.limit]
        files += [(os.path.join(args.data, c, n), label) for n in names]
    sizes = set()
    correct: dict[str, list[bool]] = {k: [] for k in ways}
    start = time.perf_counter()
    for i in range(0, len(files), args.batch_size):
        chunk = files[i : i + args.batch_size]
        images = [load_image(p) for p, _ in chunk]
        sizes.update(im.size for im in images)
        labels = torch.tensor([t for _, t in chunk])
        with torch.inference_mode():
            for way, tf in ways.items():
                pred = spec_model(torch.stack([tf(im) for im in images])).argmax(1)
                correct[way] += (pred == labels).tolist()
    n = len(files)
    top1 = {k: 100.0 * sum(v) / n for k, v in correct.items()}
    only_whole = sum(a and not b for a, b in zip(correct["whole"], correct["enlarge_crop"]))
    only_crop = sum(b and not a for a, b in zip(correct["whole"], correct["enlarge_crop"]))
    # McNemar's test, normal approximation with continuity correction
    disc = only_whole + only_crop
    z = (abs(only_whole - only_crop) - 1) / math.sqrt(disc) if disc else 0.0
    _common.write_result(
        "small_input_eval",
        spec.model,
        args.what,
        {
            "weights": args.weights,
            "data": args.data,
            "images": n,
            "image_sizes": sorted(f"{w}x{h}" for w, h in sizes)[:5],
            "model_input": size,
            "top1": {
                f"whole ({size}x{size}, as it is)": round(top1["whole"], 2),
                f"enlarge_crop (to {round(size / 0.875)}, centre {size})": round(top1["enlarge_crop"], 2),
            },
            "only_whole_right": only_whole,
            "only_enlarge_crop_right": only_crop,
            "mcnemar_z": round(z, 2),
            "seconds": round(time.perf_counter() - start, 1),
            "command": "python benchmarks/small_input_eval.py " + " ".join(_argv()),
        },
    )


def _model_of(weights: str) -> str:
    from convzoo.weights import read_spec

    return read_spec(weights).model


def _argv() -> list[str]:
    import sys

    return sys.argv[1:]


if __name__ == "__main__":
    main()
