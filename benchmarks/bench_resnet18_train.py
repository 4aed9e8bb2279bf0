"""ResNet-18 training step, batch 32 at 224x224: convzoo's defaults vs torchvision eager fp32.

Goal: >= 2x torchvision's eager fp32 NCHW with the same SGD step (lr 0.1,
momentum 0.9, weight decay 1e-4, cross-entropy; zero_grad -> forward -> backward -> step).
  baseline   torchvision resnet18, train mode, fp32, NCHW, eager
  default    convzoo default: bf16 autocast (fp32 master weights, no GradScaler needed
             for bf16), channels_last model and input, eager

    PYTHONPATH=src python benchmarks/bench_resnet18_train.py
"""

import argparse

from _common import convzoo_model, setup_threads, speedups, torchvision_model, write_result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    setup_threads(args.threads)

    import torch

    from convzoo.engine import accel
    from convzoo.inference.bench import interleaved, make_train_step

    x = torch.randn(args.batch_size, 3, args.input_size, args.input_size)
    y = torch.randint(0, 1000, (args.batch_size,))
    base = torchvision_model(args.model)
    model, source = convzoo_model(args.model)
    precision = accel.default_precision("cpu")
    model = accel.prepare_for_training(model, channels_last=True)
    steps = {
        "baseline_fp32_nchw_eager": make_train_step(base, x, y, "fp32"),
        "convzoo_default": make_train_step(model, accel.to_channels_last(x), y, precision),
    }
    times = interleaved(steps, rounds=args.rounds, warmup=1)
    write_result(
        "train_step",
        args.model,
        "default",
        {
            "settings": {
                "model": args.model,
                "model_source": source,
                "batch_size": args.batch_size,
                "input_size": args.input_size,
                "rounds": args.rounds,
                "threads": args.threads,
                "default_precision": precision,
                "channels_last": True,
                "optimizer": "SGD lr 0.1 momentum 0.9 wd 1e-4",
            },
            "results": speedups(times, "baseline_fp32_nchw_eager", args.batch_size),
            "times_s": times,
        },
    )


if __name__ == "__main__":
    main()
