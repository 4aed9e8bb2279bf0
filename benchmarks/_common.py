"""Shared helpers of the benchmark scripts: model lookup, the sample photos, result files.

Every script times the baseline and the candidate in the same run, interleaved
(A B A B ...), and reports medians and their ratio: on a shared machine only ratios
measured together mean anything.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
RESULTS = ROOT / "benchmarks" / "results"
SHARED = Path(os.environ.get("CONVZOO_SHARED", ROOT.parent / "shared"))
SAMPLES_TAR = SHARED / "data" / "imagenet-samples.tar"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def setup_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def convzoo_model(name: str):
    """convzoo's model if registered, else torchvision's (same architecture and keys for the
    torchvision-compatible names) with a note saying so."""
    import torch

    from convzoo.factory import create_model
    from convzoo.registry import list_models

    torch.manual_seed(0)
    if name in list_models():
        return create_model(name), "convzoo"
    import torchvision

    return getattr(torchvision.models, name)(), "torchvision (convzoo's not in this tree yet)"


def torchvision_model(name: str):
    import torch
    import torchvision

    torch.manual_seed(0)
    return getattr(torchvision.models, name)()


def sample_files(tar: Path = SAMPLES_TAR) -> list[str]:
    """The 1,000 ImageNet photos, extracted once to a temporary folder (never into the repo)."""
    if not tar.is_file():
        sys.exit(f"{tar} not found (set CONVZOO_SHARED to the folder holding data/)")
    dest = Path(tempfile.gettempdir()) / "convzoo-imagenet-samples"
    if not (dest / ".done").exists():
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tar) as t:
            t.extractall(dest, filter="data")
        (dest / ".done").touch()
    return sorted(str(p) for p in dest.rglob("*.JPEG"))


def imagenet_label(path: str) -> int:
    """Index of the file's WordNet id among the 1,000 sorted ids (the usual convention)."""
    wnid = Path(path).name.split("_")[0]
    return _wnids().index(wnid)


def _wnids() -> list[str]:
    return sorted({Path(p).name.split("_")[0] for p in sample_files()})


def speedups(times: dict[str, list[float]], baseline: str, batch: int) -> dict:
    base = statistics.median(times[baseline])
    return {
        k: {
            "median_s": statistics.median(v),
            "images_per_second": batch / statistics.median(v),
            "speedup_vs_baseline": base / statistics.median(v),
            "runs": len(v),
        }
        for k, v in times.items()
    }


def result_name(benchmark: str, model: str, what: str, date: str) -> str:
    """The one naming scheme of benchmarks/results/: `<benchmark>-<model>-<what>-<YYYYMMDDTHHMMSS>.json`,
    the time being the file's own `date` (ISO 8601, UTC). `model` is the network measured (`data`
    for a benchmark without one), `what` the variant; '-' only separates the fields."""
    fields = [benchmark, model, what]
    if not all(fields) or any("-" in f for f in fields):
        raise ValueError(f"result name fields must be non-empty and free of '-': {fields}")
    stamp = date[:19].replace(":", "").replace("-", "")
    return "-".join(fields + [stamp]) + ".json"


def write_result(benchmark: str, model: str, what: str, payload: dict, device="cpu") -> Path:
    from convzoo.inference.bench import machine_info

    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": benchmark,
        "model": model,
        "what": what,
        "machine": machine_info(device),
        **payload,
    }
    path = RESULTS / result_name(benchmark, model, what, payload["machine"]["date"])  # every run kept
    path.write_text(json.dumps(payload, indent=1) + "\n")
    print(json.dumps(payload, indent=1))
    print(f"wrote {path.relative_to(ROOT)}", file=sys.stderr)
    return path
