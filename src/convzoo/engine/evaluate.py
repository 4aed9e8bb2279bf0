"""Top-k accuracy over a split, center crop or ten-crop, streamed through a DataLoader.

Ten-crop (Krizhevsky et al. 2012, Sec. 4.1): the softmax outputs of the 4 corner crops, the
center crop and their horizontal flips are averaged, then ranked. The split is never held in
memory: only counts are accumulated. Top-5 on fewer than 5 classes is top-min(5, classes).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UserError
from .distributed import EvalSampler, all_reduce_sums, init_distributed, launched_by_torchrun, resolve_device  # noqa: F401 (re-exported)


def autocast(device: torch.device, precision: str):
    if precision == "auto":
        from .accel import default_precision
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
    return [int(hit[:, :min(k, maxk)].any(dim=1).sum()) for k in ks]


class Meter:
    """Running sums of loss and top-1/top-5 hits; accuracies in percent."""

    def __init__(self):
        self.n = self.loss = self.c1 = self.c5 = 0

    def add(self, loss_sum: float, c1: int, c5: int, n: int) -> None:
        self.loss += loss_sum
        self.c1 += c1
        self.c5 += c5
        self.n += n

    def result(self) -> dict:
        n = max(self.n, 1)
        return {"loss": self.loss / n, "top1": 100.0 * self.c1 / n, "top5": 100.0 * self.c5 / n,
                "images": self.n}


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, precision: str = "fp32",
             channels_last: bool = False, progress: bool = False) -> dict:
    """Loss, top-1/top-5 (percent), images and skipped count over `loader`.

    Batches are (images, labels, skipped) from `collate_skip_broken`; images [B,3,H,W] (center)
    or [B,10,3,H,W] (ten-crop: probabilities averaged over the crops; loss = NLL of the average).
    """
    model.eval()
    meter, skipped = Meter(), 0
    batches = loader
    if progress:
        from tqdm import tqdm
        batches = tqdm(loader, desc="eval", unit="batch", leave=False, dynamic_ncols=True, disable=None)
    for images, labels, n_skipped in batches:
        skipped += n_skipped
        if images.numel() == 0:
            continue
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        crops = images.shape[1] if images.dim() == 5 else 1
        images = images.flatten(0, 1) if crops > 1 else images
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            logits = model(images)
        probs = F.softmax(logits.float(), dim=1)
        if crops > 1:
            probs = probs.view(-1, crops, probs.shape[1]).mean(dim=1)
        loss = F.nll_loss(probs.clamp_min(1e-12).log(), labels, reduction="sum")
        c1, c5 = topk_correct(probs, labels)
        meter.add(float(loss), c1, c5, labels.numel())
    # under torchrun each rank saw its own share (EvalSampler: each image once): add them up
    meter.loss, meter.c1, meter.c5, meter.n, skipped = all_reduce_sums(
        [meter.loss, meter.c1, meter.c5, meter.n, skipped])
    return {**meter.result(), "skipped": skipped}


def evaluate_weights(model_name: str, weights: str, data_spec: str, split: str | None = None,
                     crop: str = "center", batch_size: int = 64, workers: int = 2, device: str = "auto",
                     precision: str = "auto", channels_last: bool | None = None, limit: int | None = None,
                     input_size: int | None = None, report: str | None = None,
                     scales: list[int] | None = None, compile: bool | None = None) -> dict:
    """`convzoo eval`: a weights file on a split, preprocessing from the weights' WeightSpec.

    `input_size` replaces the spec's crop size (resize = size / 0.875); `crop="dense"` is VGG's
    dense multi-scale evaluation over `scales` (engine/dense.py); `report` a folder for per-class
    accuracy, the confusion matrix and the most confidently misclassified images (engine/report.py).
    fp32/bf16 run the fast inference model (`accel.fast_inference`: BN folded, weights cast once,
    channels_last; torch.compile when `compile` is True, or None and the run repays it).
    """
    import dataclasses

    from ..data.datasets import build_dataset, default_splits
    from ..data.transforms import eval_transform_from_spec
    from ..registry import create_model
    from .finetune import eval_dataset
    from ..outputs import output_dir
    from .loaders import Mapped, check_limit, make_loader, subset_indices
    if crop not in ("center", "ten", "dense"):
        raise UserError(f"--crop must be center, ten or dense, got {crop!r}")
    check_limit(limit)
    if input_size is not None and (not isinstance(input_size, int) or input_size < 1):
        raise UserError(f"--input-size must be a positive integer, got {input_size!r}")
    if report is not None:
        output_dir(report, "--report")     # before any work: read-only, a file, empty
    world = init_distributed(device)     # under torchrun: each rank evaluates its share, sums all-reduced
    dev = world.device
    from .accel import FAST_INFERENCE_PRECISIONS, fast_inference, resolve_auto
    auto = resolve_auto({"precision": precision, "channels_last": channels_last}, dev)
    precision, channels_last = auto["precision"], auto["channels_last"]
    model = create_model(model_name, weights=weights)
    model_name = model.model_name
    spec = model.weight_spec
    if input_size is not None:
        if input_size < 1:
            raise UserError(f"--input-size must be positive, got {input_size}")
        spec = dataclasses.replace(spec, input_size=input_size, crop_size=input_size, resize_size=None)
    split = split or default_splits(data_spec)[1]
    dataset = eval_dataset(data_spec, split, spec.extra) or build_dataset(data_spec, split, transform=None)
    if dataset.num_classes != spec.num_classes:
        raise UserError(f"{data_spec} ({split}) has {dataset.num_classes} classes, the weights "
                        f"{weights} predict {spec.num_classes}")
    if crop == "dense" or report:     # per-image evaluation, one process (engine/report.py)
        from .dense import DenseHead, DenseTransform
        from .report import Positions, evaluate_detailed
        if isinstance(dataset, torch.utils.data.IterableDataset) or launched_by_torchrun():
            raise UserError("--report and --crop dense read a folder-style dataset in one process "
                            "(not shards:DIR, not under torchrun)")
        dense, run_precision, fast = None, precision, {}
        if crop == "dense":
            # DenseHead re-reads the model's avgpool/classifier/forward_features, which a folded
            # (traced) copy no longer has: dense evaluation keeps the plain model under autocast.
            model = model.to(dev)
            scales = scales or [256, 384, 512]
            dense = DenseHead(model).eval()
            transform = DenseTransform(scales, spec.mean, spec.std, spec.interpolation,
                                       min_size=spec.crop_size or spec.input_size)
        else:
            transform = eval_transform_from_spec(spec, crop=crop, native_size=dataset.native_size)
        positions = Positions(dataset, transform, subset_indices(len(dataset), limit, 0))
        loader = make_loader(positions, 1 if dense is not None else batch_size, workers, shuffle=False)
        if dense is None:
            model, run_precision, fast = fast_inference(model, precision, channels_last, dev, compile,
                                                        len(loader), "convzoo eval")
        r = evaluate_detailed(model, positions, loader, dev, run_precision, list(dataset.classes), report, dense)
        return _result(model_name, weights, data_spec, split, crop, r, precision, spec, scales, report, fast)
    transform = eval_transform_from_spec(spec, crop=crop, native_size=dataset.native_size)
    if isinstance(dataset, torch.utils.data.IterableDataset):       # shards:DIR streams its own share
        dataset.take(limit)
        dataset.transform, dataset.batch_size = transform, batch_size
        loader = make_loader(dataset, batch_size, workers, shuffle=False)
    else:
        mapped = Mapped(dataset, transform, subset_indices(len(dataset), limit, 0))
        sampler = EvalSampler(len(mapped), world.rank, world.world_size) if launched_by_torchrun() else None
        loader = make_loader(mapped, batch_size, workers, shuffle=False, sampler=sampler)
    try:
        num_batches = len(loader)
    except TypeError:                     # a stream of unknown length: compile only when asked
        num_batches = None
    # Under torchrun each rank runs its own copy (no DDP wrapper: inference needs no gradient sync).
    model, run_precision, fast = fast_inference(model.to(dev), precision, channels_last, dev, compile,
                                                num_batches, "convzoo eval")
    if run_precision not in FAST_INFERENCE_PRECISIONS and channels_last:   # fp16: plain model
        model = model.to(memory_format=torch.channels_last)
    else:
        channels_last = False             # the inference model converts its input itself
    r = evaluate(model, loader, dev, run_precision, channels_last, progress=world.is_main)
    return _result(model_name, weights, data_spec, split, crop, r, precision, spec, scales, report, fast)


def _result(model_name, weights, data_spec, split, crop, r, precision, spec, scales, report, fast) -> dict:
    return {"model": model_name, "weights": weights, "data": data_spec, "split": split, "crop": crop,
            "top1": r["top1"], "top5": r["top5"], "top1_error": 100.0 - r["top1"],
            "top5_error": 100.0 - r["top5"], "loss": r["loss"], "images": r["images"],
            "skipped": r["skipped"], "precision": precision, "input_size": spec.crop_size or spec.input_size,
            **({"scales": scales} if crop == "dense" else {}), **({"report": report} if report else {}),
            **fast}
