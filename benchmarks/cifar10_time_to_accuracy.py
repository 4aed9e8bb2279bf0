"""CIFAR-10 time to accuracy: `cifar_fast` beside the ResNet paper's recipe, same training time.

Extracts the JPEG CIFAR-10 (../shared/data/cifar10.tar.gz) to a temporary folder, trains MODEL
with `--recipe cifar_fast` and BASELINE with `--recipe resnet_cifar`, each for the same budget
of training time (`time_limit_minutes`: validation between epochs is not counted; both
schedules are stretched over the budget, so the paper's lr drops at 32k/48k of 64k iterations
become drops at 50% and 75% of the time), and writes one JSON file to benchmarks/results/:
machine, versions, git commit, date, settings, and per recipe the final test top-1, epochs
done and training images/s.

    PYTHONPATH=src python benchmarks/cifar10_time_to_accuracy.py            # 10 min each
    PYTHONPATH=src python benchmarks/cifar10_time_to_accuracy.py --minutes 2 --threads 1 \\
        --max-train-images 10000 --only cifar_fast                          # a short check
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import result_name  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CONVZOO_SHARED", REPO.parent / "shared"))


def machine() -> dict:
    cpu = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else platform.processor()
    )
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "platform": platform.platform(),
        "load_average_at_start": load,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def versions() -> dict:
    import torchvision

    import convzoo

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "convzoo": convzoo.__version__,
    }


def git_commit() -> dict:
    def git(*a):
        return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True).stdout.strip()

    return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain"))}


def result_header(benchmark: str) -> dict:
    """What every CIFAR-10 result file starts with: which benchmark, when, on what machine, with
    which versions and which commit."""
    return {
        "benchmark": benchmark,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
        "git": git_commit(),
    }


def speed_probe(steps: int = 4) -> float:
    """ResNet-20 channels-last training steps at batch 256 on random data, images/s (median); in
    bf16 where the CPU has bf16 units, else fp32 (what `precision: auto` trains in: an AVX2 CPU
    emulates bf16 about 10x slower).

    Recorded before and after each run: these shared machines change speed by 2x and more within
    an hour (828 and then 441 img/s were measured within one hour with nothing else running), and a
    time-budget result is only comparable beside the speed it had."""
    import statistics

    from convzoo import create_model
    from convzoo.engine.accel import cpu_has_fast_bf16

    torch.manual_seed(0)
    m = create_model("resnet20_cifar", num_classes=10).to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(256, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (256,))
    times = []
    for i in range(steps + 1):
        t = time.perf_counter()
        with torch.autocast("cpu", torch.bfloat16, enabled=cpu_has_fast_bf16()):
            loss = torch.nn.functional.cross_entropy(m(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:  # the first step warms up oneDNN
            times.append(time.perf_counter() - t)
    return 256 / statistics.median(times)


def run_one(model: str, recipe: str, data: str, out: str, minutes: float, extra_sets: list[str]) -> dict:
    from convzoo.recipes import resolve
    from convzoo.training.train import fit

    cfg = resolve(model, recipe, {"time_limit_minutes": minutes}, extra_sets, data_spec=data)
    t0 = time.perf_counter()
    summary = fit(cfg, out)
    wall = time.perf_counter() - t0
    rows = Path(out, "metrics.csv").read_text().splitlines()
    return {
        "model": model,
        "recipe": recipe,
        "settings": cfg.to_dict(),
        "top1": summary["top1"],
        "top5": summary["top5"],
        "best_top1": summary["best_top1"],
        "epochs_done": summary["epochs"],
        "images_per_second": summary["images_per_second"],
        "epoch_seconds_with_validation": summary["wall_seconds"],
        "wall_seconds_with_setup": wall,
        "train_images": summary["train_images"],
        "val_images": summary["val_images"],
        "metrics_csv": "\n".join(rows),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0, help="training-time budget per recipe")
    p.add_argument("--model", default="resnet20_cifar", help="model for cifar_fast")
    p.add_argument("--baseline-model", default="resnet20_cifar", help="model for resnet_cifar")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    p.add_argument("--tar", default=str(SHARED / "data" / "cifar10.tar.gz"))
    p.add_argument("--only", choices=("cifar_fast", "resnet_cifar"), help="run one recipe only")
    p.add_argument("--max-train-images", type=int, help="a seeded subset (short checks)")
    p.add_argument("--max-val-images", type=int, help="a seeded subset of the test split (short checks)")
    p.add_argument("--set", action="append", default=[], dest="sets", help="extra key=value for cifar_fast")
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
        **result_header("cifar10_time_to_accuracy"),
        "minutes": args.minutes,
        "threads": args.threads,
        "data": "JPEG CIFAR-10 from " + args.tar,
        "runs": {},
    }
    subset = [f"data.max_train_images={args.max_train_images}"] if args.max_train_images else []
    subset += [f"data.max_val_images={args.max_val_images}"] if args.max_val_images else []
    with tempfile.TemporaryDirectory(prefix="convzoo-cifar10-") as tmp:
        t = time.perf_counter()
        with tarfile.open(args.tar) as tar:
            tar.extractall(tmp, filter="data")
        result["extract_seconds"] = time.perf_counter() - t
        data = f"cifar10:{Path(tmp) / 'cifar10'}"
        plan = [("cifar_fast", args.model, subset + args.sets), ("resnet_cifar", args.baseline_model, subset)]
        for recipe, model, sets in plan:
            if args.only and recipe != args.only:
                continue
            print(f"== {recipe} ({model}), {args.minutes} min of training", file=sys.stderr, flush=True)
            runs = Path(args.runs_dir) if args.runs_dir else Path(tmp) / "runs"
            before = speed_probe()
            result["runs"][recipe] = run_one(model, recipe, data, str(runs / recipe), args.minutes, sets)
            result["runs"][recipe]["speed_probe_images_per_second"] = {
                "before": before,
                "after": speed_probe(),
            }
    os.makedirs(args.out, exist_ok=True)
    what = f"{args.minutes:g}min_{args.threads}thread" + ("s" if args.threads > 1 else "")
    n = args.max_train_images
    what += (f"_{n // 1000}k" if n % 1000 == 0 else f"_{n}img") if n else ""
    what += f"_{args.only}" if args.only else ""
    path = Path(args.out) / result_name(result["benchmark"], args.model, what, result["date"])
    path.write_text(json.dumps(result, indent=1) + "\n")
    for name, r in result["runs"].items():
        probe = r["speed_probe_images_per_second"]
        print(
            f"{name:13s} {r['model']:16s} top1 {r['top1']:.2f}  epochs {r['epochs_done']}  "
            f"{r['images_per_second']:.0f} img/s  "
            f"(speed probe {probe['before']:.0f} -> {probe['after']:.0f} img/s)"
        )
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
