"""`convzoo predict` over a folder of ImageNet photos, end to end, against the network alone.

Contenders, interleaved (A B C A B C ...), each over the same --images photos of
imagenet-samples.tar (a folder of symlinks in /tmp, never in the repo), medians of images/s:

  network_only     the model `predict` runs (`--backend auto` for the job), on ready-made
                   batches of 32 random 224x224 inputs: the ceiling for the folder
  predict_default  `convzoo predict MODEL FOLDER` as it runs by default: decoding threads beside
                   the forward pass (`--workers` auto), JPEGs decoded at reduced size (PIL draft)
  predict_serial   the same with `--workers 0`: every image decoded in turn with the network

The ratio predict_default / network_only is the share of the network's speed a user gets end
to end (goal: >= 0.8 on ResNet-50), taken within each round (the median of those is printed).
Weights are random (the speed does not depend on them); the graph cache is a temporary folder,
made before the timed rounds.

    PYTHONPATH=src python benchmarks/bench_predict_e2e.py --model resnet50 --images 256 --rounds 2
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import tempfile
import time
from pathlib import Path

from _common import sample_files, setup_threads, write_result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--images", type=int, default=256, help="photos per pass (of the 1,000)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip", default="", help="contenders to leave out, comma-separated")
    args = ap.parse_args()
    setup_threads(args.threads)
    import torch

    from convzoo.factory import create_model
    from convzoo.inference.predict import PredictJob, inference_model, predict
    from convzoo.weights import WeightSpec, save_weights

    files = sample_files()[: args.images]
    tmp = Path(tempfile.mkdtemp(prefix="convzoo-e2e-"))
    os.environ["CONVZOO_CACHE"] = str(tmp / "cache")
    folder = tmp / "photos"
    folder.mkdir()
    for f in files:
        os.symlink(f, folder / Path(f).name)
    torch.manual_seed(0)
    weights = str(tmp / f"{args.model}.safetensors")
    save_weights(weights, create_model(args.model).eval(), WeightSpec(args.model, 1000))

    notes: dict = {}
    t0 = time.perf_counter()
    err = io.StringIO()
    with contextlib.redirect_stderr(err):  # the choice it makes, kept for the result file
        _, fast, _, _ = inference_model(args.model, weights, "cpu", images=None)
    notes["network_only_model"] = err.getvalue().strip()
    notes["model_build_s"] = round(time.perf_counter() - t0, 1)
    size = 224
    batch = torch.randn(32, 3, size, size)

    def network_only():
        left = len(files)
        with torch.inference_mode():
            while left > 0:
                fast(batch[: min(32, left)])
                left -= 32
        return len(files)

    def run_predict(workers):
        def go():
            stats: dict = {}
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                predict(PredictJob(args.model, weights, (str(folder),), device="cpu", workers=workers), stats)
            notes.setdefault(f"predict_workers_{workers}_stderr", err.getvalue().strip().splitlines())
            return stats["images"]

        return go

    contenders = {
        "network_only": network_only,
        "predict_default": run_predict(None),
        "predict_serial": run_predict(0),
    }
    for k in filter(None, args.skip.split(",")):
        contenders.pop(k, None)
    network_only()  # warm: first calls of the compiled graph
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(args.rounds):
        for k, fn in contenders.items():
            t = time.perf_counter()
            n = fn()
            times[k].append(n / (time.perf_counter() - t))
    rows = {k: {"images_per_second": statistics.median(v), "runs": v} for k, v in times.items()}
    base = rows.get("network_only", {}).get("images_per_second")
    print(f"\n{args.model}, {len(files)} photos, {args.threads} threads, {args.rounds} interleaved rounds")
    for k, r in rows.items():
        r["vs_network_only"] = r["images_per_second"] / base if base else None
        if base:  # each round's ratio: load that changes between rounds hits both sides of it alike
            per_round = [a / b for a, b in zip(times[k], times["network_only"])]
            r["vs_network_only_per_round"] = per_round
            r["vs_network_only_median_of_rounds"] = statistics.median(per_round)
        ratio = (
            f"{r['vs_network_only_median_of_rounds']:.2f}x (median of the rounds' ratios)" if base else "-"
        )
        print(f"{k:<16} {r['images_per_second']:7.1f} img/s  {ratio}")
    write_result(
        "predict_e2e",
        args.model,
        f"n{len(files)}",
        {"settings": vars(args), "rows": rows, "notes": notes},
    )


if __name__ == "__main__":
    main()
