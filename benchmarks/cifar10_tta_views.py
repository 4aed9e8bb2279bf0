"""What each test-time view adds: one trained CIFAR-10 model evaluated on the JPEG test split
with the image alone, + its mirror (`data.test_flip`), + the views moved by 1 px (`test_shift`).

    PYTHONPATH=src python benchmarks/cifar10_tta_views.py RUN_DIR CIFAR10_DIR

RUN_DIR is a `convzoo train` run folder (its last.safetensors and config.yaml); writes a JSON
file to benchmarks/results/ with the three top-1 values, beside the machine and versions.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import result_name  # noqa: E402
from cifar10_time_to_accuracy import result_header  # noqa: E402
from convzoo import create_model  # noqa: E402
from convzoo.data.datasets import build_dataset  # noqa: E402
from convzoo.data.memory import InMemoryLoader, decode_split  # noqa: E402
from convzoo.inference.evaluate import evaluate  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("cifar10_dir")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = yaml.safe_load(Path(args.run_dir, "config.yaml").read_text())
    model = create_model(cfg["model"], num_classes=10, weights=str(Path(args.run_dir, "last.safetensors")))
    model = model.to(memory_format=torch.channels_last).eval()
    images, labels, _ = decode_split(build_dataset(f"cifar10:{args.cifar10_dir}", "test"), 32)
    d = cfg["data"]
    result = {
        **result_header("cifar10_tta_views"),
        "run_dir": args.run_dir,
        "model": cfg["model"],
        "precision": cfg["precision"],
        "images": len(labels),
        "top1": {},
    }
    for name, flip, shift in (
        ("image", False, 0),
        ("image+mirror", True, 0),
        ("image+mirror+1px shifts", True, 1),
    ):
        loader = InMemoryLoader(
            images, labels, 500, d["mean"], d["std"], train=False, test_flip=flip, test_shift=shift
        )
        with torch.no_grad():
            r = evaluate(model, loader, torch.device("cpu"), cfg["precision"], channels_last=True)
        result["top1"][name] = r["top1"]
        print(f"{name:26s} top1 {r['top1']:.2f}", flush=True)
    out = Path(args.out) / result_name(
        result["benchmark"], result["model"], result["precision"], result["date"]
    )
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
