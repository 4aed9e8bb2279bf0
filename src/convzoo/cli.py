"""The `convzoo` command line. It only wires argparse to the modules that do the work.

Exit codes (DESIGN): 0 success, 2 bad usage or bad input (one line on stderr), 1 a bug.
Each sub-command has an `_add_<name>` (its arguments) and a `_run_<name>` (the call);
heavy modules are imported inside `_run_*` so `convzoo --help` stays instant.
"""

from __future__ import annotations

import argparse
import json
import sys

from .errors import UserError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, instead of argparse's usage dump
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=1)
    sys.stdout.write("\n")


def _meta_model(name: str, **kw):
    import torch
    from .registry import create_model
    with torch.device("meta"):
        return create_model(name, **kw)


# ---- list ---------------------------------------------------------------------------------
def _add_list(sub):
    p = sub.add_parser("list", help="list the models (glob PATTERN) with params, MACs, input size, paper")
    p.add_argument("pattern", nargs="?", default="*", help="shell glob over model names, e.g. 'resnext*'")
    p.add_argument("--json", action="store_true", help="print one JSON list")


def _run_list(args):
    from .analysis.profile import profile
    from .registry import list_models, model_info
    rows = []
    for name in list_models(args.pattern):
        info = model_info(name)
        prof = profile(_meta_model(name), info.input_size, name=name)
        rows.append({"name": name, "params": prof.params, "macs": prof.macs,
                     "input_size": info.input_size, "paper": info.paper})
    if not rows:
        raise UserError(f"no model matches {args.pattern!r}")
    if args.json:
        return _print_json(rows)
    print(f"{'model':<24} {'params (M)':>10} {'MACs (G)':>9} {'input':>5}  paper")
    for r in rows:
        print(f"{r['name']:<24} {r['params'] / 1e6:>10.2f} {r['macs'] / 1e9:>9.3f} {r['input_size']:>5}  {r['paper']}")


# ---- summary ------------------------------------------------------------------------------
def _add_summary(sub):
    p = sub.add_parser("summary", help="per-layer output shape, params, MACs, receptive field, design checks")
    p.add_argument("model")
    p.add_argument("--input-size", type=int, default=None, help="square input size (default: the paper's)")
    p.add_argument("--blocks", action="store_true", help="paper-level blocks only")
    p.add_argument("--json", action="store_true", help="print one JSON document")


def _run_summary(args):
    from .analysis.profile import format_table, profile
    from .registry import model_info
    info = model_info(args.model)
    size = args.input_size or info.input_size
    if size < 1:
        raise UserError(f"--input-size must be positive, got {size}")
    try:
        prof = profile(_meta_model(info.name), size, name=info.name)
    except RuntimeError as e:  # e.g. an input too small for the network's pooling
        raise UserError(f"{info.name} cannot run at {size}x{size}: {str(e).splitlines()[0]}") from None
    if args.json:
        return _print_json(prof.to_dict())
    print(format_table(prof, blocks_only=args.blocks))


# ---- bench --------------------------------------------------------------------------------
def _add_bench(sub):
    p = sub.add_parser("bench", help="images/s, latency per batch and MFU of a train or inference step")
    p.add_argument("model")
    p.add_argument("--mode", choices=["train", "infer"], default="infer")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--precision", default=None,
                   help="fp32|bf16|fp16|int8 (default: bf16 where the CPU/GPU runs it natively, else fp32)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC memory format (default: on for CPU/CUDA)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile (default: only where it pays back, i.e. not in a short benchmark)")
    p.add_argument("--input-size", type=int, default=None, help="square input size (default: the paper's)")
    p.add_argument("--steps", type=int, default=10, help="timed steps (the median is reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--json", action="store_true", help="print one JSON document")


def _run_bench(args):
    from .bench import bench, format_result
    if args.device.startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            raise UserError(f"--device {args.device}: no CUDA device here")
    res = bench(args.model, mode=args.mode, batch_size=args.batch_size, precision=args.precision,
                channels_last=args.channels_last, compile=args.compile, input_size=args.input_size,
                steps=args.steps, warmup=args.warmup, device=args.device)
    if args.json:
        return _print_json(res)
    print(format_result(res))


# ---- chart --------------------------------------------------------------------------------
def _add_chart(sub):
    p = sub.add_parser("chart", help="PNG: published ImageNet accuracy vs. MACs, bubble size = params")
    p.add_argument("--out", default="accuracy_vs_macs.png", help="output PNG file")
    p.add_argument("--metric", choices=["top1", "top5"], default="top1")


def _run_chart(args):
    import os
    from .analysis.chart import chart_points, plot_accuracy_vs_macs
    if not args.out.lower().endswith(".png"):
        raise UserError(f"--out must be a .png file, got {args.out!r}")
    folder = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(folder):
        raise UserError(f"folder {folder} does not exist")
    points = chart_points(args.metric)
    plot_accuracy_vs_macs(points, args.out, args.metric)
    print(f"wrote {args.out}: {len(points)} models ({args.metric})")


# ---- demo ---------------------------------------------------------------------------------
def _add_demo(sub):
    sub.add_parser("demo", help="the main job offline on the built-in dataset (what `make demo` runs)")


def _run_demo(args):
    from .demo import run_demo
    run_demo()


COMMANDS = ["list", "summary", "chart", "bench", "demo"]


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    parser = _Parser(prog="convzoo", description="The classic ImageNet CNNs, as their papers drew them.")
    parser.add_argument("--version", action="version", version=f"convzoo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMANDS:
        globals()[f"_add_{name}"](sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        globals()[f"_run_{args.command}"](args)
    except UserError as e:
        print(f"convzoo {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `convzoo list | head`
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
