"""CIFAR-10 time to accuracy over seeds: one recipe and model, N seeds, the same training time each.

Extracts the JPEG CIFAR-10 (../shared/data/cifar10.tar.gz) to a temporary folder, trains MODEL
with RECIPE once per seed (`seed=K`: the initialisation, the data order and the augmentation's
coins) for `--minutes` of training time each (validation between epochs not counted), and
writes one JSON file to benchmarks/results/: machine, versions, git commit, date, settings, and
per seed the final test top-1, epochs done, training images/s and the speed probe before and
after; then the mean, the sample standard deviation, the minimum and the maximum of the top-1.

    PYTHONPATH=src python benchmarks/cifar10_seeds.py      # vgg8_cifar, airbench, seeds 0 1 2, 10 min each
    PYTHONPATH=src python benchmarks/cifar10_seeds.py --model resnet20_cifar --recipe cifar_fast
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import result_name  # noqa: E402
from cifar10_time_to_accuracy import REPO, SHARED, result_header, run_one, speed_probe  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vgg8_cifar")
    p.add_argument("--recipe", default="airbench")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one run per seed")
    p.add_argument("--minutes", type=float, default=10.0, help="training-time budget per run")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    p.add_argument("--tar", default=str(SHARED / "data" / "cifar10.tar.gz"))
    p.add_argument("--set", action="append", default=[], dest="sets", help="extra key=value for the recipe")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    p.add_argument(
        "--runs-dir", help="keep the run folders (weights, metrics) here instead of a temporary folder"
    )
    args = p.parse_args(argv)
    if not Path(args.tar).is_file():
        print(f"{args.tar} not found (set CONVZOO_SHARED or --tar)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    result = {
        **result_header("cifar10_seeds"),
        "model": args.model,
        "recipe": args.recipe,
        "minutes": args.minutes,
        "threads": args.threads,
        "sets": args.sets,
        "data": "JPEG CIFAR-10 from " + args.tar,
        "runs": {},
    }
    with tempfile.TemporaryDirectory(prefix="convzoo-cifar10-") as tmp:
        with tarfile.open(args.tar) as tar:
            tar.extractall(tmp, filter="data")
        data = f"cifar10:{Path(tmp) / 'cifar10'}"
        for seed in args.seeds:
            print(
                f"== {args.recipe} ({args.model}), seed {seed}, {args.minutes} min",
                file=sys.stderr,
                flush=True,
            )
            before = speed_probe()
            t = time.perf_counter()
            run = run_one(
                args.model,
                args.recipe,
                data,
                f"{args.runs_dir or tmp + '/runs'}/seed{seed}",
                args.minutes,
                [*args.sets, f"seed={seed}"],
            )
            run["speed_probe_images_per_second"] = {"before": before, "after": speed_probe()}
            run["wall_seconds"] = time.perf_counter() - t
            result["runs"][str(seed)] = run
            print(
                f"seed {seed}: top1 {run['top1']:.2f}  epochs {run['epochs_done']}",
                file=sys.stderr,
                flush=True,
            )
    top1 = [r["top1"] for r in result["runs"].values()]
    result["top1"] = {
        "mean": statistics.mean(top1),
        "stdev": statistics.stdev(top1) if len(top1) > 1 else None,
        "min": min(top1),
        "max": max(top1),
        "n": len(top1),
    }
    os.makedirs(args.out, exist_ok=True)
    what = f"{args.recipe}_{args.minutes:g}min_{args.threads}threads_{len(top1)}seeds"
    path = Path(args.out) / result_name(result["benchmark"], args.model, what, result["date"])
    path.write_text(json.dumps(result, indent=1) + "\n")
    for seed, r in result["runs"].items():
        probe = r["speed_probe_images_per_second"]
        rate = f"{r['images_per_second']:.0f} img/s"
        probes = f"speed probe {probe['before']:.0f} -> {probe['after']:.0f} img/s"
        print(f"seed {seed}  top1 {r['top1']:.2f}  epochs {r['epochs_done']}  {rate}  ({probes})")
    s = result["top1"]
    spread = f" +- {s['stdev']:.2f} (sample sd)" if s["stdev"] is not None else ""
    extremes = f"min {s['min']:.2f}, max {s['max']:.2f}, n={s['n']}"
    print(f"{args.model} {args.recipe}: top1 {s['mean']:.2f}{spread}, {extremes}")
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
