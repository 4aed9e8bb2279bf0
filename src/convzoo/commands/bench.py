"""`convzoo bench`: images/s, latency per batch and MFU of a train or inference step."""

from __future__ import annotations

import argparse

from ._common import BACKEND_HELP, DEVICE_HELP, JSON_HELP, MODEL_HELP, print_json

HELP = "images/s, latency per batch and MFU of a train or inference step"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument(
        "--mode",
        choices=["train", "infer"],
        default="infer",
        help="time a training step (forward, backward, SGD) or an inference forward pass",
    )
    p.add_argument("--batch-size", type=int, default=32, help="images per step")
    p.add_argument(
        "--precision",
        default="auto",
        metavar="{auto,fp32,bf16,fp16,int8}",
        help="auto (default): bf16 where it is fast here (a GPU with bf16; a CPU whose bf16 matmuls "
        "measured >= 1.5x fp32, once, cached), else fp32; int8: CPU inference (PyTorch's FX "
        "quantization, or the --backend's int8 graph)",
    )
    p.add_argument(
        "--backend", choices=["auto", "torch", "onnxruntime", "openvino"], default="auto", help=BACKEND_HELP
    )
    p.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="NHWC memory format (default: on for CPU/CUDA)",
    )
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile (default: only where it pays back, i.e. not in a short benchmark)",
    )
    p.add_argument("--input-size", type=int, default=None, help="square input size (default: the paper's)")
    p.add_argument("--steps", type=int, default=10, help="timed steps (the median is reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--json", action="store_true", help=JSON_HELP)


def run(args: argparse.Namespace) -> None:
    from ..engine.distributed import resolve_device
    from ..inference.bench import bench

    precision = None if args.precision == "auto" else args.precision
    res = bench(
        args.model,
        mode=args.mode,
        batch_size=args.batch_size,
        precision=precision,
        channels_last=args.channels_last,
        compile=args.compile,
        input_size=args.input_size,
        steps=args.steps,
        warmup=args.warmup,
        device=str(resolve_device(args.device)),
        backend=args.backend,
    )
    if args.json:
        return print_json(res)
    print(format_result(res))


MEMORY_KINDS = {
    "rss": "peak resident set size of the process while the model was built, warmed and timed",
    "rss_lifetime": "peak resident set size of the process since it started (no clear_refs here)",
    "cuda_allocated": "peak of torch.cuda.max_memory_allocated over the run",
}


def format_result(r: dict) -> str:
    lat = r["latency"]
    lines = [
        f"{r['model']} {r['mode']} batch {r['batch_size']} at {r['input_size']}x{r['input_size']}, "
        f"{r['precision']}, "
        + (
            f"{'channels_last' if r['channels_last'] else 'NCHW'}, {'compiled' if r['compiled'] else 'eager'}"
            if r.get("backend", "torch") == "torch"
            else f"--backend {r['backend']}"
        ),
        f"  images/s      {r['images_per_second']:.1f}",
        f"  latency/batch {lat['median_ms']:.1f} ms (p10 {lat['p10_ms']:.1f}, p90 {lat['p90_ms']:.1f};"
        f" median of {r['steps']} steps after {r['warmup']} warm-up)",
        f"  MFU           {100 * r['mfu']:.1f}% ({r['achieved_flops_per_second'] / 1e9:.1f} GFLOP/s of "
        f"{r['peak_flops_per_second'] / 1e9:.1f} GFLOP/s {r['peak']})",
    ]
    lines.append(f"  peak memory   {r['peak_memory_mib']:.0f} MiB ({MEMORY_KINDS[r['peak_memory_kind']]})")
    if r.get("backend_reason"):
        lines.append(f"  backend       {r['backend']} ({r['backend_reason']})")
    if r.get("int8_agreement"):
        a = r["int8_agreement"]
        lines.append(
            f"  int8          top-1 agreement with fp32 {a['percent']:.2f} % on {a['images']} {a['where']} "
            f"({a['quantizer']})"
        )
    if r.get("mfu_note"):
        lines.append(f"  MFU note      {r['mfu_note']}")
    if "compile_seconds" in r:
        lines.append(f"  compile       {r['compile_seconds']:.1f} s (not in the step times)")
    if r.get("compile_note"):
        lines.append(f"  compile       {r['compile_note']}")
    return "\n".join(lines)
