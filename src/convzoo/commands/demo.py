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
    out = fresh_folder(OUT)  # an earlier demo's run stays: it may be someone's only copy
    weights = os.path.join(out, "best.safetensors")
    _step(train, [MODEL, "--data", "synthetic", "--out", out, "--recipe", "demo"])
    _step(eval_, [MODEL, "--weights", weights, "--data", "synthetic", "--crop", "center", "--workers", "0"])
    _step(eval_, [MODEL, "--weights", weights, "--data", "synthetic", "--crop", "ten", "--workers", "0"])
    images = _write_images(os.path.join(out, "images"))
    _step(predict, [MODEL, "--weights", weights, *images, "--top-k", "3"])
    print(f"\nrun folder: {out}/ (metrics.csv, summary.json, config.yaml, checkpoint.pt, *.safetensors)")
    print(f"plots: {os.path.join(out, 'loss.png')}, {os.path.join(out, 'top1.png')}")
    print(f"resume or extend it: convzoo train {MODEL} --data synthetic --out {out} --resume --epochs 20")


def fresh_folder(base: str) -> str:
    """`base` when it does not exist yet, else the first free `base-2`, `base-3`, ... (never deleted)."""
    if not os.path.exists(base):
        return base
    n = 2
    while os.path.exists(f"{base}-{n}"):
        n += 1
    print(f"{base} holds an earlier demo (kept); this one goes to {base}-{n}", flush=True)
    return f"{base}-{n}"
