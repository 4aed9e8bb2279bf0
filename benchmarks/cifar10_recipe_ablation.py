"""CIFAR-10 recipe ablation: which `cifar_fast` settings buy accuracy per epoch.

A time-budget run measures the machine as much as the recipe (these shared machines change speed
2x within an hour), so the recipe's choices are compared here at a FIXED number of epochs
(default 5, the schedule compressed to them: warmup 1/15 of it, progressive resizing as in the
recipe), full 50,000-image train split, tested on the 10,000 test images with the recipe's
test-time augmentation. Accuracy after a fixed number of epochs does not depend on the machine's
speed; each variant's training images/s are recorded beside it, to check that a setting does not
win accuracy by losing speed (a time-budget run pays for both).

Each variant is `cifar_fast` with the settings below; one seed each (seed 0), so differences of
a few tenths are noise. Writes benchmarks/results/cifar10_recipe_ablation-MODEL-Nepochs_Tthreads-<stamp>.json.

    PYTHONPATH=src python benchmarks/cifar10_recipe_ablation.py                       # all, ~6 min each
    PYTHONPATH=src python benchmarks/cifar10_recipe_ablation.py --variants old,new --epochs 3

With --runs-dir, a variant whose run folder there already finished with the same settings is
read back instead of trained again (so an interrupted ablation continues where it stopped).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tarfile
import tempfile
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import result_name  # noqa: E402
from cifar10_time_to_accuracy import REPO, SHARED, result_header  # noqa: E402

# The recipe before this ablation, then one change at a time, then the changes together.
OLD = {
    "batch_size": 256,
    "data.flip": "random",
    "data.crop_padding": None,
    "optim.lr": 0.1,
    "loss.label_smoothing": 0.1,
}
VARIANTS = {
    "old": {},
    "alternate_flip": {"data.flip": "alternate"},
    "crop_padding_2": {"data.crop_padding": 2},
    "label_smoothing_0.2": {"loss.label_smoothing": 0.2},
    "batch_128": {"batch_size": 128},
    "alternate_flip+crop_padding_2": {"data.flip": "alternate", "data.crop_padding": 2},
    "batch_128+alternate_flip+crop_padding_2": {
        "batch_size": 128,
        "data.flip": "alternate",
        "data.crop_padding": 2,
    },
    "batch_64+alternate_flip+crop_padding_2": {
        "batch_size": 64,
        "data.flip": "alternate",
        "data.crop_padding": 2,
    },
    "batch_32+alternate_flip+crop_padding_2": {
        "batch_size": 32,
        "data.flip": "alternate",
        "data.crop_padding": 2,
    },
    "batch_64+alternate_flip+crop_padding_2+lr_0.05": {
        "batch_size": 64,
        "data.flip": "alternate",
        "data.crop_padding": 2,
        "optim.lr": 0.05,
    },
    "batch_64+alternate_flip+crop_padding_2+lr_0.2": {
        "batch_size": 64,
        "data.flip": "alternate",
        "data.crop_padding": 2,
        "optim.lr": 0.2,
    },
}


def settings(variant: dict, epochs: int) -> dict:
    fixed = {"time_limit_minutes": None, "epochs": epochs, "schedule.warmup_epochs": round(epochs / 15, 2)}
    return {**fixed, **OLD, **variant}


def as_sets(flat: dict) -> list[str]:
    return [f"{k}={'null' if v is None else v}" for k, v in flat.items()]


def lookup(cfg: dict, dotted: str, default):
    for part in dotted.split("."):
        if part not in cfg:
            return default
        cfg = cfg[part]
    return cfg


def finished_with(run: Path, flat: dict, defaults: dict) -> dict | None:
    """The run's summary if it finished with these settings (read back, not retrained). A key
    missing from its config.yaml is read as the key's base.yaml default: the run was made before
    the key existed, so it ran the behaviour that the default keeps."""
    try:
        summary = json.loads((run / "summary.json").read_text())
        cfg = yaml.safe_load((run / "config.yaml").read_text())
    except (OSError, ValueError):
        return None
    same = summary.get("finished") and all(
        lookup(cfg, k, lookup(defaults, k, None)) == v for k, v in flat.items()
    )
    return summary if same else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of: {', '.join(VARIANTS)}")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--model", default="resnet20_cifar")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--tar", default=str(SHARED / "data" / "cifar10.tar.gz"))
    p.add_argument("--runs-dir", help="keep (and reuse) the run folders here")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = p.parse_args(argv)
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not Path(args.tar).is_file():
        print(
            f"unknown variants {unknown}"
            if unknown
            else f"{args.tar} not found (set CONVZOO_SHARED or --tar)",
            file=sys.stderr,
        )
        return 2
    torch.set_num_threads(args.threads)
    from convzoo.recipes import read_recipe, resolve
    from convzoo.training.train import fit

    defaults = read_recipe(str(REPO / "src" / "convzoo" / "recipes" / "base.yaml"))

    result = {
        **result_header("cifar10_recipe_ablation"),
        "epochs": args.epochs,
        "threads": args.threads,
        "model": args.model,
        "data": "JPEG CIFAR-10 from " + args.tar,
        "variants": {},
    }
    with tempfile.TemporaryDirectory(prefix="convzoo-ablation-") as tmp:
        runs = Path(args.runs_dir or Path(tmp) / "runs")
        data_dir = runs / "cifar10"
        if not data_dir.is_dir():  # a stable path: the in-memory cache is keyed by it
            with tarfile.open(args.tar) as tar:
                tar.extractall(runs, filter="data")
        for name in names:
            flat = settings(VARIANTS[name], args.epochs)
            run = runs / name
            summary = finished_with(run, flat, defaults)
            if summary is None:
                print(
                    f"== {name}: {' '.join(as_sets(VARIANTS[name])) or 'cifar_fast as before'}",
                    file=sys.stderr,
                    flush=True,
                )
                cfg = resolve(args.model, "cifar_fast", {}, as_sets(flat), data_spec=f"cifar10:{data_dir}")
                summary = fit(cfg, str(run))
            rows = (run / "metrics.csv").read_text().splitlines()
            result["variants"][name] = {
                "settings": flat,
                "top1": summary["top1"],
                "top5": summary["top5"],
                "images_per_second": summary["images_per_second"],
                "wall_seconds_with_validation": summary["wall_seconds"],
                "metrics_csv": "\n".join(rows),
            }
    os.makedirs(args.out, exist_ok=True)
    what = f"{args.epochs}epochs_{args.threads}threads"
    path = Path(args.out) / result_name(result["benchmark"], args.model, what, result["date"])
    path.write_text(json.dumps(result, indent=1) + "\n")
    base = result["variants"].get("old", {}).get("top1")
    for name, r in result["variants"].items():
        delta = f"  {r['top1'] - base:+.2f}" if base is not None else ""
        print(f"{name:48s} top1 {r['top1']:6.2f}{delta}  {r['images_per_second']:5.0f} img/s")
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
