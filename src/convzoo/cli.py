"""The `convzoo` command line. It only wires argparse to the modules that do the work.

Exit codes (DESIGN): 0 success, 2 bad usage or bad input (one line on stderr), 1 a bug.
Each sub-command has an `_add_<name>` (its arguments) and a `_run_<name>` (the call);
heavy modules are imported inside `_run_*` so `convzoo --help` stays instant.
"""

from __future__ import annotations

import argparse
import json
import sys

from .errors import RunFailed, UserError


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
    p.add_argument("--weights", default=None, help="convzoo weights (for --filters)")
    p.add_argument("--filters", default=None, metavar="OUT.png", help="first-layer filters as an image grid")
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
    if args.filters:
        from .analysis.filters import save_filter_grid
        from .registry import create_model
        layer, n = save_filter_grid(create_model(info.name, weights=args.weights), args.filters)
        print(f"wrote {args.filters}: {n} filters of {layer}" + ("" if args.weights else " (untrained)"),
              file=sys.stderr)
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
    from .engine.distributed import resolve_device
    res = bench(args.model, mode=args.mode, batch_size=args.batch_size, precision=args.precision,
                channels_last=args.channels_last, compile=args.compile, input_size=args.input_size,
                steps=args.steps, warmup=args.warmup, device=str(resolve_device(args.device)))
    if args.json:
        return _print_json(res)
    print(format_result(res))


# ---- train --------------------------------------------------------------------------------
def _add_train(sub):
    p = sub.add_parser("train", help="train a model with its paper's recipe into a run folder")
    p.add_argument("model")
    p.add_argument("--data", required=True, help="synthetic, a folder, or KIND:PATH")
    p.add_argument("--out", required=True, help="run folder (weights, checkpoint, metrics, plots)")
    p.add_argument("--recipe", default=None, help="shipped recipe name or YAML file (default: the family's)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default=None,
                   help="default auto: bf16 (+channels_last) on AMX/AVX512-BF16 CPUs and GPUs, else fp32")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    p.add_argument("--weights", default=None, help="fine-tune: start from these convzoo weights")
    p.add_argument("--freeze", default=None, metavar="STAGE", help="fine-tune: freeze up to this paper stage")
    p.add_argument("--head-lr-mult", type=float, default=None, help="fine-tune: lr multiplier of the head")
    p.add_argument("--val-split", type=float, default=None,
                   help="single class-folder tree: stratified seeded validation fraction (default 0.1)")
    p.add_argument("--sync-bn", action=argparse.BooleanOptionalAction, default=None,
                   help="batch norm statistics over all torchrun processes")
    p.add_argument("--accum-steps", type=int, default=None, help="batches per optimizer step (gradient accumulation)")
    p.add_argument("--checkpoint-minutes", type=float, default=None,
                   help="also write checkpoint.pt every N minutes inside an epoch (default 10; 0: every step)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe setting, dotted keys: --set optim.lr=0.05 (repeatable)")


def _run_train(args):
    import os

    from .engine.checkpoint import CHECKPOINT, load_checkpoint
    from .engine.resilience import RESUME_MAY_CHANGE, check_resume
    from .engine.train import check_config, fit
    from .recipes import parse_set, resolve
    from .registry import canonical_name
    model = canonical_name(args.model)
    flags = {"epochs": args.epochs, "batch_size": args.batch_size, "precision": args.precision,
             "channels_last": args.channels_last, "compile": args.compile, "workers": args.workers,
             "seed": args.seed, "device": args.device, "optim": {"lr": args.lr},
             "checkpoint_minutes": args.checkpoint_minutes, "sync_bn": args.sync_bn,
             "accum_steps": args.accum_steps, "data": {"val_split": args.val_split},
             "finetune": {"weights": args.weights, "freeze": args.freeze, "head_lr_mult": args.head_lr_mult}}
    if args.resume:
        cfg = load_checkpoint(os.path.join(args.out, CHECKPOINT))["config"]
        check_resume(cfg, model, args.data, {**flags, "recipe": args.recipe, **parse_set(args.sets)})
        for key in RESUME_MAY_CHANGE:
            if flags[key] is not None:
                cfg[key] = flags[key]
    else:
        cfg = {"model": model, "data_spec": args.data, **resolve(model, args.recipe, flags, args.sets)}
    check_config(cfg)
    fit(cfg, args.out, resume=args.resume)


# ---- eval ---------------------------------------------------------------------------------
def _add_eval(sub):
    p = sub.add_parser("eval", help="top-1/top-5 accuracy of a weights file on a split (center or ten-crop)")
    p.add_argument("model")
    p.add_argument("--weights", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default=None, help="default: the dataset's validation split")
    p.add_argument("--crop", choices=["center", "ten", "dense"], default="center",
                   help="dense: VGG's fully-convolutional multi-scale evaluation (VGG, AlexNet)")
    p.add_argument("--scales", default=None, help="--crop dense: test scales Q, e.g. 256,384,512")
    p.add_argument("--input-size", type=int, default=None, help="evaluate at this crop size")
    p.add_argument("--report", default=None, metavar="DIR",
                   help="write per-class accuracy, confusion matrix (CSV, PNG), misclassified images")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                   help="auto (default): bf16 where the hardware runs it natively, else fp32")
    p.add_argument("--limit", type=int, default=None, help="a seeded random subset of N images")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile (default: only when the run has enough batches to repay it)")
    p.add_argument("--json", action="store_true")


def _run_eval(args):
    from .engine.evaluate import evaluate_weights
    if args.batch_size < 1 or args.workers < 0:
        raise UserError("--batch-size must be >= 1 and --workers >= 0")
    from .engine.distributed import cleanup, is_main
    scales = _int_list(args.scales, "--scales") if args.scales else None
    r = evaluate_weights(args.model, args.weights, args.data, args.split, args.crop, args.batch_size,
                         args.workers, args.device, args.precision, limit=args.limit,
                         input_size=args.input_size, report=args.report, scales=scales, compile=args.compile)
    report = is_main()           # under torchrun, rank 0 reports
    cleanup()
    if not report:
        return
    if args.json:
        return _print_json(r)
    print(f"{r['model']} on {r['data']} ({r['split']}, {r['images']} images, {r['crop']} crop): "
          f"top-1 {r['top1']:.2f}% (error {r['top1_error']:.2f}%), top-5 {r['top5']:.2f}% "
          f"(error {r['top5_error']:.2f}%)" + (f", {r['skipped']} unreadable skipped" if r["skipped"] else ""))
    if args.report:
        print(f"report: {args.report}/per_class.csv, confusion.csv, confusion.png, misclassified.csv")


def _int_list(text: str, flag: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{flag} expects comma-separated integers, got {text!r}") from None


# ---- predict ------------------------------------------------------------------------------
def _add_predict(sub):
    p = sub.add_parser("predict", help="top-k labels with probabilities for images or folders")
    p.add_argument("model")
    p.add_argument("images", nargs="+", metavar="IMAGE|DIR")
    p.add_argument("--weights", required=True)
    p.add_argument("--labels", default=None, help="imagenet1k, places365 or a file (default: the weights' own)")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=0, help="threads decoding images")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                   help="auto (default): bf16 where the hardware runs it natively, else fp32")
    p.add_argument("--cam", default=None, metavar="DIR", help="save class activation map overlays (PNG) here")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile (default: only when there are enough batches to repay it)")
    p.add_argument("--json", action="store_true")


def _run_predict(args):
    from .predict import format_table, predict
    results = predict(args.model, args.weights, args.images, args.labels, args.topk, args.device,
                      args.batch_size, args.workers, args.precision, args.cam, args.compile)
    if args.json:
        return _print_json(results)
    print(format_table(results))


# ---- features -----------------------------------------------------------------------------
def _add_features(sub):
    p = sub.add_parser("features", help="pooled features of a named layer for every image (.npy + list)")
    p.add_argument("model")
    p.add_argument("--weights", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default=None, help="default: the dataset's validation split")
    p.add_argument("--layer", required=True, help="paper stage (conv4_x, inception_4e, fc7) or submodule path")
    p.add_argument("--out", required=True, help="FILE.npy; the image list goes to FILE.txt")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                   help="auto (default): bf16 where the hardware runs it natively, else fp32")
    p.add_argument("--limit", type=int, default=None, help="a seeded random subset of N images")


def _run_features(args):
    from .analysis.features import features_to_file
    if args.batch_size < 1 or args.workers < 0:
        raise UserError("--batch-size must be >= 1 and --workers >= 0")
    r = features_to_file(args.model, args.weights, args.data, args.layer, args.out, args.split,
                         args.batch_size, args.workers, args.device, args.precision, args.limit)
    print(f"wrote {r['out']} ({r['images']} x {r['dim']}, {r['layer']}) and {r['list']}"
          + (f"; {r['skipped']} unreadable skipped" if r["skipped"] else ""))


# ---- chart --------------------------------------------------------------------------------
def _add_chart(sub):
    p = sub.add_parser("chart", help="PNG: published ImageNet accuracy vs. MACs, bubble size = params")
    p.add_argument("--out", default=None, help="output PNG file (default accuracy_vs_macs.png / depth.png)")
    p.add_argument("--metric", choices=["top1", "top5"], default="top1")
    p.add_argument("--kind", choices=["cost", "depth"], default="cost",
                   help="cost: accuracy vs. MACs; depth: 'revolution of depth' (depth vs. top-5 error)")


def _run_chart(args):
    import os
    from .analysis.chart import DEPTH_POINTS, chart_points, plot_accuracy_vs_macs, plot_depth
    args.out = args.out or ("depth.png" if args.kind == "depth" else "accuracy_vs_macs.png")
    if not args.out.lower().endswith(".png"):
        raise UserError(f"--out must be a .png file, got {args.out!r}")
    folder = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(folder):
        raise UserError(f"folder {folder} does not exist")
    if args.kind == "depth":
        plot_depth(args.out)
        return print(f"wrote {args.out}: depth vs. top-5 error of {len(DEPTH_POINTS)} ILSVRC networks")
    points = chart_points(args.metric)
    plot_accuracy_vs_macs(points, args.out, args.metric)
    print(f"wrote {args.out}: {len(points)} models ({args.metric})")


# ---- demo ---------------------------------------------------------------------------------
def _add_demo(sub):
    sub.add_parser("demo", help="the main job offline on the built-in dataset (what `make demo` runs)")


def _run_demo(args):
    from .demo import run_demo
    run_demo()


# ---- convert ------------------------------------------------------------------------------
def _add_convert(sub):
    p = sub.add_parser("convert", help="torchvision / timm / Places365 / other checkpoints -> convzoo weights")
    p.add_argument("--from", dest="kind", required=True, choices=["torchvision", "timm", "places365", "remap"],
                   help="where the checkpoint comes from (remap: any implementation, by order and shape)")
    p.add_argument("src", help=".pth / .pth.tar / .pt (loaded with weights_only=True) or .safetensors")
    p.add_argument("--model", required=True, help="convzoo model name")
    p.add_argument("--out", required=True, help="output .safetensors file (weights + WeightSpec)")
    p.add_argument("--verbose", action="store_true", help="print the key mapping used")


def _run_convert(args):
    from .interop import convert
    from .weights import save_weights
    log = (lambda s: print(s, file=sys.stderr)) if args.verbose else _notes_only
    state, spec = convert(args.kind, args.src, args.model, log=log)
    save_weights(args.out, state, spec)
    print(f"wrote {args.out}: {spec.model}, {spec.num_classes} classes, from {spec.source} "
          f"{spec.converted_from}; input {spec.input_size} (resize {spec.resize_size}, crop {spec.crop_size}, "
          f"{spec.interpolation}), mean {list(spec.mean)}, std {list(spec.std)}"
          + (", transform_input" if spec.extra.get("transform_input") else ""))


def _notes_only(line: str) -> None:
    if line.startswith("note:"):
        print(line, file=sys.stderr)


# ---- export -------------------------------------------------------------------------------
def _add_export(sub):
    p = sub.add_parser("export", help="ONNX or torch.export (pt2) graph + JSON sidecar")
    p.add_argument("model")
    p.add_argument("--weights", required=True, help="convzoo .safetensors weights")
    p.add_argument("--format", required=True, choices=["onnx", "pt2"])
    p.add_argument("--out", required=True, help="output file; FILE.json is written beside it")


def _run_export(args):
    from .interop.export import export_model
    r = export_model(args.model, args.weights, args.format, args.out)
    check = (f"checked with {r.checked_with} on a batch of 3: max |diff| {r.max_abs_diff:.2e} "
             f"(logits up to {r.max_abs_logit:.2e})"
             if r.checked_with else "not checked (onnxruntime not installed)")
    print(f"wrote {r.path} ({r.format}, input {r.input_shape}, {r.num_classes} logits) and {r.sidecar}; {check}")


# ---- pack ---------------------------------------------------------------------------------
def _add_pack(sub):
    p = sub.add_parser("pack", help="write a dataset SPEC as WebDataset-format tar shards (stream with --data shards:DIR)")
    p.add_argument("source", help="data SPEC: synthetic, a folder, or KIND:PATH")
    p.add_argument("--out", required=True, help="folder for the shards (empty or new)")
    p.add_argument("--shard-size", default="1000", help="images per shard (1000) or bytes per shard (256MB, 1GiB)")
    p.add_argument("--splits", default=None, help="comma-separated splits (default: the dataset's train and val)")
    p.add_argument("--seed", type=int, default=0, help="seed of the training split's shuffle (and of synthetic)")
    p.add_argument("--no-shuffle", action="store_true", help="keep the training split in its source order")
    p.add_argument("--workers", type=int, default=0, help="processes reading and encoding images")


def _run_pack(args):
    from .data.shards import pack
    if args.workers < 0:
        raise UserError(f"--workers must be >= 0, got {args.workers}")
    splits = [s for s in args.splits.split(",") if s] if args.splits else None
    meta = pack(args.source, args.out, args.shard_size, splits, args.seed, not args.no_shuffle, args.workers)
    for split, info in meta["splits"].items():
        print(f"{split}: {info['count']} images in {len(info['shards'])} shards")
    print(f"wrote {args.out} ({len(meta['classes'])} classes); train with --data shards:{args.out}")


COMMANDS = ["list", "summary", "chart", "train", "eval", "predict", "convert", "export", "bench", "pack", "features", "demo"]


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
    except RunFailed as e:  # e.g. a diverged training run: not bad input, but no traceback either
        print(f"convzoo {args.command}: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `convzoo list | head`
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
