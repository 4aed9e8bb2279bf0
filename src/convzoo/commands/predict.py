"""`convzoo predict`: top-k labels with probabilities for images or folders."""

from __future__ import annotations

import argparse

from ._common import JSON_HELP, MODEL_HELP, WEIGHTS_HELP, add_inference_options, print_json

HELP = "top-k labels with probabilities for images or folders"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("images", nargs="+", metavar="IMAGE|DIR", help="image files, or folders read recursively")
    p.add_argument("--weights", required=True, help=WEIGHTS_HELP)
    p.add_argument(
        "--labels", default=None, help="imagenet1k, places365 or a file (default: the weights' own)"
    )
    p.add_argument(
        "--top-k",
        "--topk",
        dest="topk",
        type=int,
        default=5,
        metavar="K",
        help="the K most probable classes (default 5)",
    )
    p.add_argument(
        "--cam",
        default=None,
        metavar="DIR",
        help="save class activation map overlays (PNG) here (default: none)",
    )
    add_inference_options(p, batch_size=32, workers=None, compile=True)
    p.add_argument("--json", action="store_true", help=JSON_HELP)


def run(args: argparse.Namespace) -> None:
    from ..inference.predict import PredictJob, predict

    job = PredictJob(
        model=args.model,
        weights=args.weights,
        paths=tuple(args.images),
        labels=args.labels,
        topk=args.topk,
        device=args.device,
        batch_size=args.batch_size,
        workers=args.workers,
        precision=args.precision,
        cam_dir=args.cam,
        compile=args.compile,
        backend=args.backend,
        calibration=args.calibration,
    )
    results = predict(job)
    if args.json:
        return print_json(results)
    print(format_table(results))


def format_table(results: list[dict]) -> str:
    lines = []
    for r in results:
        lines.append(r["image"])
        if "error" in r:
            lines.append(f"  error: {r['error']}")
            continue
        for rank, p in enumerate(r["predictions"], 1):
            lines.append(f"  {rank}. {p['probability'] * 100:6.2f}%  {p['label']}  (#{p['index']})")
        if "indoor_outdoor" in r:
            io = r["indoor_outdoor"]
            lines.append(f"  scene: {io['vote']} (outdoor score {io['outdoor_score']:.2f})")
    return "\n".join(lines)
