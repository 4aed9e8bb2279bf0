"""`convzoo eval`'s model path against the plain model under autocast, on real photos.

before  the plain model (channels_last for bf16) under autocast
after   what `eval` runs: `accel.fast_inference` (BN folded, weights cast to bf16 once,
        channels_last, eager: a run this short does not repay torch.compile)

Both go through `inference.evaluate.evaluate` (softmax, top-k counting included) over the same
pre-decoded batches of the 1,000 ImageNet photos (resize 256, center crop 224, as `eval` does
for ResNet weights), interleaved A B A B; decoding is identical for both paths and excluded.
Random weights (seeded): the speed does not depend on them; top-1 agreement of the two paths
is reported as a sanity check.

    PYTHONPATH=src python benchmarks/bench_eval_paths.py                    # resnet50, bf16, 256 images
    PYTHONPATH=src python benchmarks/bench_eval_paths.py --precision fp32 --images 64
"""

import argparse
import statistics
import time

from _common import convzoo_model, imagenet_label, sample_files, setup_threads, write_result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    setup_threads(args.threads)

    import torch

    from convzoo.data.datasets import load_image
    from convzoo.data.transforms import eval_transform_from_spec
    from convzoo.engine import accel
    from convzoo.inference.evaluate import evaluate
    from convzoo.weights import WeightSpec

    files = sample_files()[: args.images]
    transform = eval_transform_from_spec(WeightSpec(model=args.model, num_classes=1000), crop="center")
    t0 = time.perf_counter()
    tensors = [transform(load_image(f)) for f in files]
    decode_s = time.perf_counter() - t0
    labels = torch.tensor([imagenet_label(f) for f in files])
    batches = [
        (torch.stack(tensors[i : i + args.batch_size]), labels[i : i + args.batch_size], 0)
        for i in range(0, len(tensors), args.batch_size)
    ]

    model, source = convzoo_model(args.model)
    model.eval()
    channels_last = args.precision == "bf16"  # resolve_auto: channels_last goes with bf16
    before = model.to(memory_format=torch.channels_last) if channels_last else model
    after, run_precision, info = accel.fast_inference(
        model, args.precision, channels_last, num_batches=len(batches)
    )
    paths = {
        "before_autocast_plain": lambda: evaluate(
            before, batches, torch.device("cpu"), args.precision, channels_last
        ),
        "after_fast_inference": lambda: evaluate(after, batches, torch.device("cpu"), run_precision),
    }
    with torch.no_grad():
        x = batches[0][0]
        with accel.autocast_context(args.precision):
            ref = before(accel.to_channels_last(x) if channels_last else x).float()
        agree = (after(x).argmax(1) == ref.argmax(1)).float().mean().item()

    times = {k: [] for k in paths}
    for fn in paths.values():  # warm-up: oneDNN primitive caches
        fn()
    for _ in range(args.rounds):
        for k, fn in paths.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    n = len(files)
    results = {
        k: {"median_s": statistics.median(v), "images_per_second": n / statistics.median(v), "runs": len(v)}
        for k, v in times.items()
    }
    base = results["before_autocast_plain"]["median_s"]
    for r in results.values():
        r["speedup_vs_before"] = base / r["median_s"]
    write_result(
        "eval_paths",
        args.model,
        args.precision,
        {
            "settings": {
                "model": args.model,
                "model_source": source,
                "weights": "random (seed 0)",
                "images": n,
                "batch_size": args.batch_size,
                "precision": args.precision,
                "channels_last": channels_last,
                "rounds": args.rounds,
                "threads": args.threads,
                "data": "imagenet-samples.tar, resize 256, center crop 224",
                **info,
            },
            "decode_seconds_once": decode_s,
            "top1_agreement_first_batch": agree,
            "results": results,
            "times_s": times,
        },
    )


if __name__ == "__main__":
    main()
