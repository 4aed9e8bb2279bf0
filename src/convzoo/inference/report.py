"""`convzoo eval --report DIR` (and `--crop dense`): evaluation that keeps track of every image.

Per image it keeps only what the report needs (true class, predicted class, confidence), so a
large split still streams. Files written to DIR:
- per_class.csv: class index, name, images, top-1 correct, top-1 accuracy (%);
- confusion.csv: counts, rows = true class, columns = predicted class (sums to the images);
- confusion.png: the matrix coloured by row share, counts in the cells (up to 25 classes);
- misclassified.csv: the most confidently misclassified images (path, true, predicted,
  confidence of the prediction, probability of the true class), most confident first.
"""

from __future__ import annotations

import csv
import heapq
import os

import torch

from ..engine.loaders import Mapped
from ..outputs import disk_errors
from .dense import dense_probabilities
from .evaluate import Meter, autocast, crop_probabilities, progress_bar

MISCLASSIFIED_ROWS = 100


class Positions(Mapped):
    """Items `(transform(image), position)`: the label slot carries the position, so paths and
    true labels survive `collate_skip_broken` dropping unreadable images."""

    def __getitem__(self, i):
        item = self.dataset[self.indices[i]]
        return None if item is None else (self.transform(item[0]), i)

    def path(self, i: int) -> str:
        return str(self.dataset.samples[self.indices[i]][0])

    def target(self, i: int) -> int:
        return int(self.dataset.targets[self.indices[i]])


@torch.no_grad()
def evaluate_detailed(
    model,
    positions: Positions,
    loader,
    device,
    precision: str,
    classes: list[str],
    report_dir: str | None = None,
    dense=None,
    rows: int = MISCLASSIFIED_ROWS,
) -> dict:
    """Top-1/top-5/loss like `evaluate`, plus the report files when `report_dir` is given.
    `dense`: a DenseHead (images are tuples of scaled tensors, see inference/dense.py); `rows`: how
    many of the most confident mistakes misclassified.csv lists (0: all)."""
    model.eval()
    n = len(classes)
    meter, skipped = Meter(), 0
    confusion = torch.zeros(n, n, dtype=torch.long)
    worst: list[tuple[float, int, int, int, float]] = []  # min-heap of (confidence, pos, true, pred, p_true)
    for images, pos, n_skipped in progress_bar(loader, "eval (dense)" if dense is not None else "eval"):
        skipped += n_skipped
        if pos.numel() == 0:
            continue
        if dense is not None:
            probs = torch.stack(
                [dense_probabilities(dense, t, device, lambda: autocast(device, precision)) for t in images]
            ).cpu()
        else:
            probs = crop_probabilities(model, images, device, precision).cpu()
        targets = torch.tensor([positions.target(int(i)) for i in pos])
        meter.score(probs, targets)
        conf, pred = probs.max(1)
        confusion.index_put_((targets, pred), torch.ones_like(pred), accumulate=True)
        for i in (pred != targets).nonzero().flatten().tolist():
            entry = (float(conf[i]), int(pos[i]), int(targets[i]), int(pred[i]), float(probs[i, targets[i]]))
            (heapq.heappush if not rows or len(worst) < rows else heapq.heappushpop)(worst, entry)
    if report_dir:
        write_report(report_dir, confusion, sorted(worst, reverse=True), positions, classes)
    mistakes = int(confusion.sum() - confusion.diag().sum())
    return {**meter.result(), "skipped": skipped, "misclassified": mistakes, "misclassified_rows": len(worst)}


def write_report(
    out: str, confusion: torch.Tensor, worst: list, positions: Positions, classes: list[str]
) -> None:
    with disk_errors(out):  # a full disk or a folder gone read-only: one line
        _write_report(out, confusion, worst, positions, classes)


def _write_report(
    out: str, confusion: torch.Tensor, worst: list, positions: Positions, classes: list[str]
) -> None:
    os.makedirs(out, exist_ok=True)
    images, correct = confusion.sum(1), confusion.diag()
    with open(os.path.join(out, "per_class.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "class", "images", "correct", "top1"])
        for i, name in enumerate(classes):
            acc = 100.0 * int(correct[i]) / int(images[i]) if images[i] else ""
            w.writerow([i, name, int(images[i]), int(correct[i]), f"{acc:.4g}" if acc != "" else ""])
    with open(os.path.join(out, "confusion.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["true\\predicted", *classes])
        for name, row in zip(classes, confusion.tolist()):
            w.writerow([name, *row])
    with open(os.path.join(out, "misclassified.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "true", "predicted", "confidence", "true_probability"])
        for conf, pos, t, p, pt in worst:
            w.writerow([positions.path(pos), classes[t], classes[p], f"{conf:.4f}", f"{pt:.4f}"])
    plot_confusion(confusion, classes, os.path.join(out, "confusion.png"))


ANNOTATE_MAX_CLASSES = 25  # beyond this the numbers no longer fit in their cells


def plot_confusion(confusion: torch.Tensor, classes: list[str], path: str) -> None:
    """The matrix coloured by row share (each true class's images sum to 100 %), each cell
    showing its image count and row share when there are at most ANNOTATE_MAX_CLASSES classes;
    class names at a size that stays readable (none beyond 40 classes: confusion.csv has them)."""
    from matplotlib.figure import Figure  # lazy: ~0.5 s, paid only by runs that draw a report

    counts = confusion.long()
    rows = counts.float() / counts.sum(1, keepdim=True).clamp_min(1)
    n = len(classes)
    label_size = 12 if n <= 10 else 10 if n <= 20 else 7
    side = max(5.0, min(2.5 + 0.45 * n, 20))
    fig = Figure(figsize=(side + 1.2, side), dpi=110)
    ax = fig.subplots()
    im = ax.imshow(rows.numpy(), cmap="Blues", vmin=0, vmax=1)
    if n <= 40:
        tilt = (
            {"rotation": 0}
            if n <= 5
            else {"rotation": 45, "ha": "right", "rotation_mode": "anchor"}
            if n <= 20
            else {"rotation": 90}
        )
        ax.set_xticks(range(n), classes, fontsize=label_size, **tilt)
        ax.set_yticks(range(n), classes, fontsize=label_size)
    if n <= ANNOTATE_MAX_CLASSES:
        cell = 13 if n <= 5 else 11 if n <= 10 else 8 if n <= 16 else 6
        for i in range(n):
            for j in range(n):
                share = float(rows[i, j])
                text = f"{int(counts[i, j])}" + (f"\n{share:.0%}" if n <= 16 else "")
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=cell,
                    color="white" if share > 0.55 else "black",
                )
    ax.set_xlabel("predicted class", fontsize=label_size)
    ax.set_ylabel("true class", fontsize=label_size)
    accuracy = 100.0 * float(counts.diag().sum()) / max(1, int(counts.sum()))
    ax.set_title(
        f"{int(counts.sum())} images, top-1 {accuracy:.1f} %: images per cell, colour = share of the row",
        fontsize=max(9, label_size - 1),
    )
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cbar.set_label("share of the true class's images")
    fig.tight_layout()
    fig.savefig(path, format="png")
