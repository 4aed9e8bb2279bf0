"""ResNet-50 inference, batch 32 at 224x224: convzoo's defaults vs torchvision eager fp32 NCHW.

Goal: >= 4x torchvision's model in eager fp32 NCHW on the 2-core CPU.
Variants (timed interleaved with the baseline, same input):
  baseline   torchvision resnet50, eval, fp32, NCHW, eager, torch.inference_mode
  default    convzoo default: BN folded, bf16 weights (frozen), channels_last, eager
  compiled   the same, torch.compile with frozen weights (compile time reported apart)
  int8       static PTQ (FX graph mode, x86 backend), calibrated on random batches
             (its accuracy cost is measured in bench_bf16_agreement.py --int8)

    PYTHONPATH=src python benchmarks/bench_resnet50_infer.py                 # baseline + default
    PYTHONPATH=src python benchmarks/bench_resnet50_infer.py --variants compiled
Each invocation stays under ~2 minutes on 2 cores; results -> benchmarks/results/.
"""

import argparse
import time

from _common import convzoo_model, setup_threads, speedups, torchvision_model, write_result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", default="default", help="comma list of default,compiled,int8")
    args = ap.parse_args()
    setup_threads(args.threads)

    import torch

    from convzoo.engine import accel
    from convzoo.inference.bench import interleaved, make_infer_step

    x = torch.randn(args.batch_size, 3, args.input_size, args.input_size)
    base = torchvision_model(args.model).eval()
    steps = {"baseline_fp32_nchw_eager": make_infer_step(base, x)}
    model, source = convzoo_model(args.model)
    precision = accel.default_precision("cpu")
    extra = {}
    for v in args.variants.split(","):
        if v == "default":
            steps["convzoo_default"] = make_infer_step(
                accel.prepare_for_inference(model, precision, channels_last=True), x
            )
        elif v == "compiled":
            fast = accel.prepare_for_inference(model, precision, channels_last=True, compile=True)
            t0 = time.perf_counter()
            make_infer_step(fast, x)()
            extra["compile_seconds"] = time.perf_counter() - t0
            steps["convzoo_compiled"] = make_infer_step(fast, x)
        elif v == "int8":
            q = accel.quantize_int8(model, [torch.randn_like(x) for _ in range(2)])
            steps["convzoo_int8"] = make_infer_step(q, x)
        else:
            raise SystemExit(f"unknown variant {v}")
    times = interleaved(steps, rounds=args.rounds, warmup=1)
    write_result(
        "infer",
        args.model,
        args.variants.replace(",", "_"),
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
                "bn_folded": True,
            },
            "results": speedups(times, "baseline_fp32_nchw_eager", args.batch_size),
            "times_s": times,
            **extra,
        },
    )


if __name__ == "__main__":
    main()
