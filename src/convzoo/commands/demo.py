"""`convzoo demo` (what `make demo` runs): train, evaluate and use a network offline, on the
built-in synthetic dataset.

The same commands a user types: `convzoo train` (ResNet-20, the CIFAR network of He et al.
2015, with the short `demo` recipe), `convzoo eval` center and ten-crop, `convzoo predict` on a
few generated images; the run folder holds the weights, checkpoint, metrics and plots.
A couple of minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
from types import ModuleType

from . import eval as eval_
from . import predict, train

HELP = "the main job offline on the built-in dataset (what `make demo` runs)"
MODEL = "resnet20_cifar"
OUT = os.path.join("runs", "demo")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """No options: the demo is one fixed sequence."""


def _step(command: ModuleType, argv: list[str]) -> None:
    """Run one command module exactly as `convzoo NAME ARGV` would parse it."""
    name = command.__name__.rsplit(".", 1)[1]
    print(f"\n$ convzoo {name} {' '.join(argv)}", flush=True)
    parser = argparse.ArgumentParser(prog=f"convzoo {name}")
    command.add_arguments(parser)
    command.run(parser.parse_args(argv))


def _write_images(folder: str, count: int = 4) -> list[str]:
    """A few validation images of the synthetic set, as PNG files (what a user would have)."""
    from ..data.datasets import build_dataset

    os.makedirs(folder, exist_ok=True)
    dataset = build_dataset("synthetic", "val")
    paths = []
    for i in range(count):
        image, label = dataset[i * 97 % len(dataset)]
        path = os.path.join(folder, f"{i}_{dataset.classes[label]}.png")
        image.save(path)
        paths.append(path)
    return paths


def run(args: argparse.Namespace) -> None:
    import torch

    # 2 cores on the machines this targets; OMP_NUM_THREADS wins (e.g. 1 on a busy shared machine,
    # where two OpenMP threads were measured 10x slower than one)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or max(1, min(2, os.cpu_count() or 1))))
    if os.path.isdir(OUT):  # a fresh run each time (runs/ is ours: `make clean` removes it)
        shutil.rmtree(OUT)
    weights = os.path.join(OUT, "best.safetensors")
    _step(train, [MODEL, "--data", "synthetic", "--out", OUT, "--recipe", "demo"])
    _step(eval_, [MODEL, "--weights", weights, "--data", "synthetic", "--crop", "center", "--workers", "0"])
    _step(eval_, [MODEL, "--weights", weights, "--data", "synthetic", "--crop", "ten", "--workers", "0"])
    images = _write_images(os.path.join(OUT, "images"))
    _step(predict, [MODEL, "--weights", weights, *images, "--top-k", "3"])
    print(f"\nrun folder: {OUT}/ (metrics.csv, summary.json, config.yaml, checkpoint.pt, *.safetensors)")
    print(f"plots: {os.path.join(OUT, 'loss.png')}, {os.path.join(OUT, 'top1.png')}")
    print(f"resume or extend it: convzoo train {MODEL} --data synthetic --out {OUT} --resume --epochs 20")
