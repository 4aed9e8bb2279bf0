"""Pooled features of a named layer for every image of a split: what `convzoo features` runs.

`FeaturesJob` says which layer of which weights on which split, and where the .npy goes (checked
when it is built); `features_to_file(job)` loads the model with its WeightSpec, reads the split,
runs it through the model with a hook on the layer and writes the features with the image list
beside them, returning the result document `features --json` prints. The hook and the pooling
are analysis/features.py's.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from ..analysis.features import extract_features, resolve_layer
from ..data.source import source_from_record
from ..data.transforms import eval_transform_from_spec
from ..engine.distributed import resolve_device
from ..engine.loaders import check_limit, make_loader, subset_indices
from ..errors import UserError
from ..factory import create_model
from ..outputs import atomic_write, output_file
from ..weights import spec_of
from .evaluate import autocast, progress_bar
from .report import Positions

PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # autocast's: the plain PyTorch model, no graph backend


@dataclass(frozen=True)
class FeaturesJob:
    """One extraction's settings, as `convzoo features` takes them; their values are checked here
    (one-line UserErrors), the output path and the device in `features_to_file`, before any work.

    `layer` is a paper row of the model's `paper_stages()` (`conv4_x`, `inception_4e`, `fc7`) or
    a submodule path (`layer3.1`); `out` a FILE.npy, the image list going to FILE.txt."""

    model: str
    weights: str
    data: str
    layer: str
    out: str
    split: str | None = None  # None: the dataset's validation split
    batch_size: int = 64
    workers: int = 2
    device: str = "auto"
    precision: str = "auto"
    limit: int | None = None  # a seeded random subset of this many images

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.workers < 0:
            raise UserError("--batch-size must be >= 1 and --workers >= 0")
        if not self.out.endswith(".npy"):
            raise UserError(f"--out must be a .npy file, got {self.out!r}")
        check_limit(self.limit)
        if self.precision not in PRECISIONS:
            raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    @property
    def image_list(self) -> str:
        """FILE.txt beside FILE.npy: the path of each row's image, one a line, in row order."""
        return os.path.splitext(self.out)[0] + ".txt"


def features_to_file(job: FeaturesJob) -> dict:
    """`job.layer`'s pooled outputs ([N, C] float32) for every readable image of the split,
    preprocessing from the weights' WeightSpec, written to `job.out` (the image list to
    `job.image_list`; a full disk keeps the old files): the result document of `features --json`
    (model, layer, images, dim, out, list, skipped)."""
    output_file(job.out, "--out")
    dev = resolve_device(job.device)
    # The plain model under autocast, not eval's fast inference model: BN folding traces the
    # model into a flat graph, where a hook on an inner block (`layer3.1`) would never fire.
    model = create_model(job.model, weights=job.weights).to(dev).eval()
    resolve_layer(model, job.layer)  # an unknown layer is one line before the split is read
    positions = split_positions(job, model)
    order: list[int] = []  # dataset positions of the rows, unreadable images left out
    feats = extract_features(
        model, job.layer, batches(job, positions, order), dev, lambda: autocast(dev, job.precision)
    )
    atomic_write(job.out, lambda f: np.save(f, feats))
    paths = "".join(positions.path(i) + "\n" for i in order).encode()
    atomic_write(job.image_list, lambda f: f.write(paths))
    return {
        "model": model.model_name,
        "layer": job.layer,
        "images": len(order),
        "dim": int(feats.shape[1]),
        "out": job.out,
        "list": job.image_list,
        "skipped": len(positions) - len(order),
    }


def split_positions(job: FeaturesJob, model: nn.Module) -> Positions:
    """The job's split (or its seeded subset), preprocessed as `model`'s WeightSpec says."""
    spec = spec_of(model)
    dataset = source_from_record(job.data, spec.extra).dataset(job.split, labelled=False)
    return Positions(
        dataset,
        eval_transform_from_spec(spec, native_size=dataset.native_size),
        subset_indices(len(dataset), job.limit, 0),
    )


def batches(job: FeaturesJob, positions: Positions, order: list[int]) -> Iterator[torch.Tensor]:
    """The image batches of `positions` in order, appending to `order` the position of each image
    as it is handed out (an unreadable image is dropped by the loader, and so from `order`)."""
    loader = make_loader(positions, job.batch_size, job.workers, shuffle=False)
    for images, pos, _ in progress_bar(loader, "features"):
        if pos.numel():
            order.extend(pos.tolist())
            yield images
