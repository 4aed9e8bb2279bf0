"""The accuracy-vs-efficiency picture: published ImageNet accuracy against MACs, bubble = params.

One bubble per registered zoo model that has a published number below. MACs and parameters
are not copied from anywhere: they are computed by `profile` at the model's paper input size
(on the meta device, so nothing is allocated). Models that are not registered (yet) are
skipped. Accuracies are percentages on the ILSVRC-2012 validation set, single model.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch

from ..errors import UserError
from ..registry import build, model_info
from ..weights import read_spec
from .profile import profile

METRICS = ("top1", "top5")

_TV = "torchvision IMAGENET1K_V1 weights, documented acc@1/acc@5 (center crop 224, resize 256)"
_RESNEXT = "Xie et al. 2016, arXiv:1611.05431, Table 3/5 (100 - top-1 error, 224 single crop)"

# model: (top-1 %, top-5 % or None, source). Paper errors are converted to accuracy (100 - err).
PUBLISHED: dict[str, tuple[float | None, float | None, str]] = {
    "alexnet_original": (59.3, 81.8, "Krizhevsky et al. 2012, Table 2 (1 CNN: 40.7% / 18.2% error)"),
    "nin": (59.36, None, "NIN-Imagenet Caffe model zoo readme (gist d802a5849de39225bcc6), center crop"),
    "googlenet_original": (
        None,
        89.93,
        "Szegedy et al. 2014, arXiv:1409.4842, Table 3 (1 model, 1 crop: 10.07% error)",
    ),
    "alexnet": (56.522, 79.066, _TV),
    "vgg11": (69.020, 88.628, _TV),
    "vgg11_bn": (70.370, 89.810, _TV),
    "vgg13": (69.928, 89.246, _TV),
    "vgg13_bn": (71.586, 90.374, _TV),
    "vgg16": (71.592, 90.382, _TV),
    "vgg16_bn": (73.360, 91.516, _TV),
    "vgg19": (72.376, 90.876, _TV),
    "vgg19_bn": (74.218, 91.842, _TV),
    "googlenet": (69.778, 89.530, _TV),
    "inception_v3": (77.294, 93.450, _TV + " (299)"),
    "resnet18": (69.758, 89.078, _TV),
    "resnet34": (73.314, 91.420, _TV),
    "resnet50": (76.130, 92.862, _TV),
    "resnet101": (77.374, 93.546, _TV),
    "resnet152": (78.312, 94.046, _TV),
    "resnext50_32x4d": (77.618, 93.698, _TV),
    "resnext101_32x8d": (79.312, 94.526, _TV),
    "resnext50_2x40d": (77.0, None, _RESNEXT),
    "resnext50_4x24d": (77.4, None, _RESNEXT),
    "resnext50_8x14d": (77.7, None, _RESNEXT),
    "resnext101_32x4d": (78.8, None, _RESNEXT),
}


@dataclass
class Point:
    model: str
    params: int
    macs: int
    accuracy: float
    source: str


def chart_points(metric: str = "top1") -> list[Point]:
    """Every registered model with a published `metric`, with params/MACs from `profile`."""
    return list(iter_chart_points(metric))


def iter_chart_points(metric: str = "top1"):
    """`chart_points` one model at a time (each is a profile, up to a second or two): a caller
    that may have to stop (`convzoo serve` shutting down) checks between points."""
    if metric not in METRICS:
        raise UserError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    for name, (top1, top5, source) in PUBLISHED.items():
        acc = top1 if metric == "top1" else top5
        if acc is None:
            continue
        try:
            info = model_info(name)
        except UserError:  # not registered (yet): no bubble
            continue
        with torch.device("meta"):
            model = build(info.name)
        prof = profile(model, info.input_size, name=info.name)
        yield Point(info.name, prof.params, prof.macs, acc, source)


@dataclass
class RunPoint:
    """A training run of the user's (`convzoo chart --run DIR`): its validation accuracy on its
    own data, and the cost of its network at the run's input size."""

    run: str
    model: str
    data: str
    num_classes: int
    input_size: int
    params: int
    macs: int
    accuracy: float
    metric: str


def run_point(run_dir: str, metric: str = "top1") -> RunPoint:
    """The point of a run folder: `summary.json`'s best validation accuracy (else its last), the
    params and MACs of the network the run trained (its class count, input size and the
    constructor options of its weights, profiled on the meta device)."""
    path = os.path.join(run_dir, "summary.json")
    try:
        with open(path) as f:
            summary = json.load(f)
    except FileNotFoundError:
        raise UserError(f"--run {run_dir}: no summary.json (not a `convzoo train` run folder?)") from None
    except (OSError, ValueError) as e:
        raise UserError(f"--run {run_dir}: cannot read summary.json ({type(e).__name__})") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("model"), str):
        raise UserError(f"--run {run_dir}: summary.json has no model")
    acc = summary.get(f"best_{metric}")
    acc = summary.get(metric) if acc is None else acc
    if not isinstance(acc, (int, float)):
        why = (
            f"no top-5 ({summary.get('num_classes')} classes)"
            if metric == "top5" and (summary.get("num_classes") or 0) <= 5
            else f"no validation {metric} yet"
        )
        raise UserError(f"--run {run_dir}: {why}")
    info = model_info(summary["model"])
    kwargs: dict = {}
    weights = os.path.join(run_dir, "best.safetensors")
    if os.path.isfile(weights):
        kwargs = dict(read_spec(weights).model_kwargs)
    try:
        size = int(summary.get("input_size") or info.input_size)
        classes = int(summary.get("num_classes") or info.num_classes)
    except (TypeError, ValueError):
        raise UserError(f"--run {run_dir}: summary.json has a bad input_size or num_classes") from None
    with torch.device("meta"):
        model = build(info.name, num_classes=classes, **kwargs)
    prof = profile(model, size, name=info.name)
    return RunPoint(
        run_dir,
        info.name,
        str(summary.get("data", "")),
        classes,
        size,
        prof.params,
        prof.macs,
        float(acc),
        metric,
    )


# label positions tried in turn (points from the bubble centre): right-above first, then further out
LABEL_OFFSETS = [(4, 4), (4, -11), (4, 14), (4, -21), (4, 24), (4, -31), (4, 34), (4, -41), (4, 44)]


def _box(anchor, offset, text: str, fontsize: float):
    x, y = anchor[0] + offset[0], anchor[1] + offset[1]
    return x, y, x + 0.6 * fontsize * len(text), y + fontsize  # approximate text extent (points)


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def spread_labels(
    anchors: list[tuple[float, float]], texts: list[str], fontsize: float = 7
) -> list[tuple[int, int]]:
    """One offset (points) per label, the first of LABEL_OFFSETS whose box overlaps no label
    placed before it (labels placed left to right, so ResNeXt-50/101 next to ResNet-50/101
    do not print over each other); the last candidate when all collide."""
    placed: list[tuple[float, float, float, float]] = []
    offsets: list[tuple[int, int]] = [LABEL_OFFSETS[0]] * len(texts)
    for i in sorted(range(len(texts)), key=lambda i: (anchors[i][0], anchors[i][1])):
        for off in LABEL_OFFSETS:
            box = _box(anchors[i], off, texts[i], fontsize)
            if not any(_overlap(box, other) for other in placed):
                break
        placed.append(box)
        offsets[i] = off
    return offsets


def plot_accuracy_vs_macs(
    points: list[Point],
    out,
    metric: str = "top1",
    highlight: str | None = None,
    runs: list[RunPoint] | None = None,
) -> None:
    """Scatter: x = MACs (G, log scale), y = accuracy, bubble area proportional to params.
    `out`: a path or a binary file object. `highlight`: a model whose bubble is ringed in red
    and labelled in bold (`convzoo serve` marks the model it serves). `runs`: the user's own
    runs (`run_point`), drawn as red stars labelled with their data, since their accuracy is on
    that data, not on ImageNet."""
    from matplotlib.figure import Figure  # no pyplot: renders with the Agg canvas, no GUI state

    fig = Figure(figsize=(11, 7), dpi=100)
    ax = fig.subplots()
    if points:
        xs = [p.macs / 1e9 for p in points]
        ys = [p.accuracy for p in points]
        sizes = [p.params / 1e6 * 6 for p in points]  # 1M params -> 6 pt^2
        ax.scatter(xs, ys, s=sizes, alpha=0.45, c=range(len(points)), cmap="tab20", edgecolors="k")
        ax.set_xscale("log")
        ax.autoscale_view()
        anchors = ax.transData.transform(list(zip(xs, ys))) * 72 / fig.dpi  # in points
        offsets = spread_labels([tuple(a) for a in anchors], [p.model for p in points], fontsize=7)
        for p, x, y, off, size in zip(points, xs, ys, offsets, sizes):
            mark = p.model == highlight
            ax.annotate(
                p.model,
                (x, y),
                fontsize=10 if mark else 7,
                fontweight="bold" if mark else "normal",
                color="crimson" if mark else "black",
                xytext=off,
                textcoords="offset points",
                arrowprops=None
                if off == LABEL_OFFSETS[0]
                else {"arrowstyle": "-", "lw": 0.4, "color": "0.4"},
            )
            if mark:
                ax.scatter(
                    [x], [y], s=max(size * 2, 80), facecolors="none", edgecolors="crimson", linewidths=2.5
                )
        for m in (10, 50, 100):  # bubble-size legend
            ax.scatter([], [], s=m * 6, alpha=0.45, color="gray", edgecolors="k", label=f"{m}M params")
    for r in runs or []:
        x, y = r.macs / 1e9, r.accuracy
        ax.scatter(
            [x], [y], s=max(r.params / 1e6 * 6, 220), marker="*", color="crimson", edgecolors="k", zorder=3
        )
        data = os.path.basename(r.data.rstrip("/")) or r.data
        ax.annotate(
            f"your run: {r.model} on {data}\n({r.num_classes} classes, {r.input_size}px): {y:.1f} %",
            (x, y),
            fontsize=9,
            fontweight="bold",
            color="crimson",
            xytext=(8, -4),
            textcoords="offset points",
            va="top",
        )
    if runs:
        ax.set_xscale("log")
    if points:
        ax.legend(loc="lower right", labelspacing=1.5, borderpad=1.2, frameon=True)
    ax.set_xlabel(
        "multiply-accumulates per image (G, convzoo profile at the paper input size"
        + ("; your runs at theirs)" if runs else ")")
    )
    name = "top-1" if metric == "top1" else "top-5"
    ax.set_ylabel(
        f"published ImageNet {name} accuracy (%)"
        + (f"; your runs: validation {name} on their data" if runs else "")
    )
    ax.set_title("Accuracy vs. cost of the classic ImageNet CNNs (bubble area = parameters)")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, format="png")


# "Revolution of Depth": ILSVRC classification top-5 error (%) of the winning / runner-up entries
# against their depth in weight layers, as the lecture's summary table (and He et al.'s ResNet
# talk) draw it; typed from the papers; tests/test_finetune.py checks them against the package's
# data/reference/paper_numbers.json `published_errors.top5`, an independent transcription.
# (name, depth, top-5 error %, source)
DEPTH_POINTS: list[tuple[str, int, float, str]] = [
    ("AlexNet", 8, 16.4, "Krizhevsky et al. 2012, ILSVRC-2012 entry (Sec. 6)"),
    ("VGG", 19, 7.3, "Simonyan & Zisserman 2014, arXiv:1409.1556, ILSVRC-2014 submission (Table 7)"),
    ("GoogLeNet", 22, 6.7, "Szegedy et al. 2014, arXiv:1409.4842, ILSVRC-2014 (Table 2)"),
    ("ResNet", 152, 3.57, "He et al. 2015, arXiv:1512.03385, ILSVRC-2015 ensemble (Table 5)"),
]


def plot_depth(out: str) -> None:
    """Bars: depth (layers) per network, annotated with its published top-5 error."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5), dpi=100)
    ax = fig.subplots()
    names = [f"{n}\n({e}% top-5 error)" for n, _, e, _ in DEPTH_POINTS]
    depths = [d for _, d, _, _ in DEPTH_POINTS]
    bars = ax.bar(names, depths, color=["#9ecae1", "#6baed6", "#4292c6", "#08519c"])
    for b, d in zip(bars, depths):
        ax.annotate(f"{d} layers", (b.get_x() + b.get_width() / 2, d), ha="center", va="bottom", fontsize=9)
    ax2 = ax.twinx()
    ax2.plot(range(len(DEPTH_POINTS)), [e for _, _, e, _ in DEPTH_POINTS], "o-", color="crimson")
    ax2.set_ylabel("ILSVRC top-5 error (%)", color="crimson")
    ax2.set_ylim(0, max(e for _, _, e, _ in DEPTH_POINTS) * 1.2)
    ax.set_ylabel("depth (weight layers)")
    ax.set_title("Revolution of depth: ILSVRC classification")
    fig.tight_layout()
    fig.savefig(out, format="png")
