"""`convzoo eval`: top-1/top-5 accuracy of a weights file on a split (center or ten-crop)."""

from __future__ import annotations

import argparse

from ._common import (
    DATA_HELP,
    JSON_HELP,
    MODEL_HELP,
    SPLIT_HELP,
    WEIGHTS_HELP,
    add_inference_options,
    int_list,
    print_json,
)

HELP = "top-1/top-5 accuracy of a weights file on a split (center or ten-crop)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--weights", required=True, help=WEIGHTS_HELP)
    p.add_argument("--data", required=True, metavar="SPEC", help=DATA_HELP)
    p.add_argument("--split", default=None, metavar="NAME", help=SPLIT_HELP)
    p.add_argument(
        "--crop",
        choices=["center", "ten", "dense"],
        default="center",
        help="dense: VGG's fully-convolutional multi-scale evaluation (VGG, AlexNet)",
    )
    p.add_argument(
        "--scales", default=None, help="--crop dense: test scales Q, e.g. 256,384,512 (default: 256,384,512)"
    )
    p.add_argument(
        "--input-size",
        type=int,
        default=None,
        help="evaluate at this crop size (default: the weights' input size)",
    )
    p.add_argument(
        "--report",
        default=None,
        metavar="DIR",
        help="write per-class accuracy, confusion matrix (CSV, PNG), misclassified images (default: none)",
    )
    p.add_argument(
        "--misclassified",
        type=int,
        default=100,
        metavar="N",
        help="--report: list the N most confident mistakes in misclassified.csv (0: all; default 100)",
    )
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        metavar="N",
        help="evaluate a seeded random subset of N images (default: all)",
    )
    add_inference_options(p, batch_size=64, workers=None, compile=True)
    p.add_argument("--json", action="store_true", help=JSON_HELP)


def run(args: argparse.Namespace) -> None:
    from ..engine.distributed import cleanup, is_main
    from ..inference.evaluation import EvalJob, evaluate_weights

    job = EvalJob(
        model=args.model,
        weights=args.weights,
        data=args.data,
        split=args.split,
        crop=args.crop,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        precision=args.precision,
        limit=args.limit,
        input_size=args.input_size,
        report=args.report,
        scales=tuple(int_list(args.scales, "--scales")) if args.scales else None,
        compile=args.compile,
        misclassified=args.misclassified,
        backend=args.backend,
        calibration=args.calibration,
    )
    r = evaluate_weights(job)
    report = is_main()  # under torchrun, rank 0 reports
    cleanup()
    if not report:
        return
    if args.json:
        return print_json(r)
    print(format_result(r))


def format_result(r: dict) -> str:
    """The result document `r` as the lines `eval` prints without --json."""
    top5 = (
        f"top-5 {r['top5']:.2f}% (error {r['top5_error']:.2f}%)"
        if r["top5"] is not None
        else f"no top-5 ({r['num_classes']} classes)"
    )
    lines = [
        f"{r['model']} on {r['data']} ({r['split']}, {r['images']} images, {r['crop']} crop): "
        f"top-1 {r['top1']:.2f}% (error {r['top1_error']:.2f}%), {top5}"
        + (f", {r['skipped']} unreadable skipped" if r["skipped"] else ""),
        "preprocessing: " + "; ".join(r["preprocessing"]["steps"][1:3]),
    ]
    if "train_top1" in r:
        lines.append(
            f"training measured top-1 {r['train_top1']:.2f}% on this split with PyTorch; "
            f"{r['backend']} {r['precision']} gives {r['top1']:.2f}% ({r['top1'] - r['train_top1']:+.2f} "
            f"points; the runtimes differ in rounding: --backend torch reproduces training's figure)"
        )
    if "report" in r:
        lines.append(
            f"report: {r['report']}/per_class.csv, confusion.csv, confusion.png, misclassified.csv "
            f"({r['misclassified_rows']} of {r['misclassified']} mistakes, the most confident first"
            + ("; --misclassified 0 lists all" if r["misclassified_rows"] < r["misclassified"] else "")
            + ")"
        )
    return "\n".join(lines)
