"""Top-k accuracy over a split, center crop or ten-crop, streamed through a DataLoader.

Ten-crop (Krizhevsky et al. 2012, Sec. 4.1): the softmax outputs of the 4 corner crops, the
center crop and their horizontal flips are averaged, then ranked. The split is never held in
memory: only counts are accumulated. Top-5 on fewer than 5 classes is top-min(5, classes).
"""

from __future__ import annotations

import contextlib
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from ..engine.accel import default_precision
from ..engine.distributed import all_reduce_sums
from ..engine.loaders import usable_cpus
from ..errors import UserError


def progress_bar(iterable, desc: str, total: int | None = None, unit: str = "batch", enabled: bool = True):
    """A tqdm bar on stderr while it is a terminal (nothing when redirected, as in `train`)."""
    if not enabled:
        return iterable
    if total is None:
        try:
            total = len(iterable)
        except TypeError:
            total = None
    return tqdm(
        iterable,
        desc=desc,
        total=total,
        unit=unit,
        leave=False,
        dynamic_ncols=True,
        file=sys.stderr,
        disable=None,
    )


MAX_AUTO_WORKERS = 4  # decoders beyond this rarely keep up better; each costs memory


def auto_workers(images: int | None, batch_size: int) -> tuple[int, str]:
    """`--workers` by default (eval and predict alike): (decoders beside the forward pass, why).
    One per CPU, at most MAX_AUTO_WORKERS, so decoding overlaps the network; none for a job of
    one batch, where there is nothing to overlap and starting decoders would cost more."""
    cpus = usable_cpus()
    if images is not None and images <= batch_size:
        return 0, f"auto: {images} image(s), one batch: decoded in turn with the forward pass"
    n = max(1, min(cpus, MAX_AUTO_WORKERS))
    return n, f"auto: one per CPU ({cpus}), at most {MAX_AUTO_WORKERS}, beside the forward pass"


def autocast(device: torch.device, precision: str):
    if precision == "auto":
        precision = default_precision(device)
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if dtype is None:
        raise UserError(f"unknown precision {precision!r}; choose fp32, bf16 or fp16")
    return torch.autocast(device.type, dtype=dtype)


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, ks=(1, 5)) -> list[int]:
    """Number of rows whose target is among the k highest scores, for each k (capped at classes)."""
    maxk = min(max(ks), logits.shape[1])
    top = logits.topk(maxk, dim=1).indices
    hit = top.eq(targets.view(-1, 1))
    return [int(hit[:, : min(k, maxk)].any(dim=1).sum()) for k in ks]


class Meter:
    """Running sums of loss and top-1/top-5 hits; accuracies in percent."""

    def __init__(self):
        self.n = self.loss = self.c1 = self.c5 = 0

    def add(self, loss_sum: float, c1: int, c5: int, n: int) -> None:
        self.loss += loss_sum
        self.c1 += c1
        self.c5 += c5
        self.n += n

    def score(self, probs: torch.Tensor, targets: torch.Tensor) -> None:
        """Add a batch of class probabilities [B, classes] and their true classes [B]."""
        loss = F.nll_loss(probs.clamp_min(1e-12).log(), targets, reduction="sum")
        c1, c5 = topk_correct(probs, targets)
        self.add(float(loss), c1, c5, targets.numel())

    def result(self) -> dict:
        n = max(self.n, 1)
        return {
            "loss": self.loss / n,
            "top1": 100.0 * self.c1 / n,
            "top5": 100.0 * self.c5 / n,
            "images": self.n,
        }


def crop_probabilities(
    model: nn.Module, images: torch.Tensor, device: torch.device, precision: str, channels_last: bool = False
) -> torch.Tensor:
    """Softmax probabilities [B, classes] of a batch [B,3,H,W], or of a batch of crops
    [B,N,3,H,W] averaged over each image's N crops (ten-crop: Krizhevsky et al. 2012, Sec. 4.1)."""
    images = images.to(device, non_blocking=True)
    crops = images.shape[1] if images.dim() == 5 else 1
    images = images.flatten(0, 1) if crops > 1 else images
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with autocast(device, precision):
        logits = model(images)
    probs = F.softmax(logits.float(), dim=1)
    return probs.view(-1, crops, probs.shape[1]).mean(dim=1) if crops > 1 else probs


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader,
    device: torch.device,
    precision: str = "fp32",
    channels_last: bool = False,
    progress: bool = False,
    per_class: int = 0,
) -> dict:
    """Loss, top-1/top-5 (percent), images and skipped count over `loader`.

    Batches are (images, labels, skipped) from `collate_skip_broken`; images [B,3,H,W] (center)
    or [B,10,3,H,W] (ten-crop: probabilities averaged over the crops; loss = NLL of the average).
    With `per_class` (the number of classes) it also counts, per true class, the top-1 hits and
    the images (`per_class`: [[hits, images], ...]).
    """
    model.eval()
    meter, skipped = Meter(), 0
    hits, seen = torch.zeros(per_class, dtype=torch.long), torch.zeros(per_class, dtype=torch.long)
    for images, labels, n_skipped in progress_bar(loader, "eval", enabled=progress):
        skipped += n_skipped
        if images.numel() == 0:
            continue
        labels = labels.to(device, non_blocking=True)
        probs = crop_probabilities(model, images, device, precision, channels_last)
        meter.score(probs, labels)
        if per_class:
            truth, right = labels.cpu(), (probs.argmax(dim=1) == labels).cpu()
            seen += torch.bincount(truth, minlength=per_class)[:per_class]
            hits += torch.bincount(truth[right], minlength=per_class)[:per_class]
    # under torchrun each rank saw its own share (EvalSampler: each image once): add them up
    sums = all_reduce_sums([meter.loss, meter.c1, meter.c5, meter.n, skipped, *hits.tolist(), *seen.tolist()])
    meter.loss, meter.c1, meter.c5, meter.n, skipped = sums[:5]
    result = {**meter.result(), "skipped": skipped}
    if per_class:
        result["per_class"] = [
            [int(h), int(n)] for h, n in zip(sums[5 : 5 + per_class], sums[5 + per_class :])
        ]
    return result
