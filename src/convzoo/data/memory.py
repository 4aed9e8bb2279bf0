"""Small-image datasets held in memory: decode once, cache as uint8, augment whole batches.

For 32x32 data (CIFAR-10: 50,000 x 3 x 32 x 32 = 150 MB as uint8) the per-image pipeline -
open a JPEG, build a PIL image, run a Compose, collate - costs more CPU than a small network's
training step. Here the split is decoded once into one uint8 tensor [N, 3, S, S] (cached under
`$CONVZOO_CACHE` or ~/.cache/convzoo, keyed by the files' paths, labels, sizes and mtimes, so an
edited folder is decoded again), and each batch is augmented with a few tensor ops.

The augmentation is the `cifar` preset of `transforms.train_transform`, batched: zero-pad by
`padding` pixels (`data.crop_padding`; 4 at 32 px), take a random S x S crop (each image its
own offsets, uniform over 0..2*padding), flip horizontally with probability 1/2, then scale to
[0, 1] and normalise - the same distribution as RandomCrop(S, padding) + RandomHorizontalFlip +
ToDtype + Normalize. With `data.flip: alternate` the flips follow `alternate_flips` instead.
Evaluation batches are the images as they are (docs/DESIGN.md's rule for 32x32 data), optionally
paired with their mirror image ([B, 2, 3, S, S]: `evaluate` averages the two softmaxes).

Unreadable images are skipped while decoding with the dataset's usual warning, and counted.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

from ..errors import UserError

__all__ = ["cache_dir", "decode_split", "crop_flip", "random_crop_flip", "InMemoryLoader"]


def cache_dir() -> str:
    return os.environ.get("CONVZOO_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "convzoo")


def _fingerprint(dataset, size: int, order) -> str | None:
    """A key over the chosen samples (path, label, file size, mtime) and the size; None: not files."""
    h = hashlib.sha256(f"convzoo-memory-1 {size} {dataset.classes}".encode())
    for i in order:
        path, label = dataset.samples[i]
        try:
            st = os.stat(path)
        except OSError:
            return None  # not a file (array datasets): decoding is cheap, nothing to cache
        h.update(f"{os.path.abspath(path)}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def _to_array(img, size: int) -> np.ndarray:
    """A PIL image -> uint8 [3, size, size]; other sizes are resized + centre-cropped like eval."""
    if img.size != (size, size):
        from torchvision.transforms.v2 import functional as TF

        img = TF.center_crop(TF.resize(img, size), size)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)


def decode_split(
    dataset, size: int, indices=None, cache: bool = True
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(images uint8 [N, 3, size, size], labels int64 [N], skipped) of a dataset built without a transform.

    `indices` (optional): decode only these items, in this order (a subset has its own cache entry).
    """
    if getattr(dataset, "transform", None) is not None:
        raise UserError("in-memory data needs the dataset without a transform")
    order = range(len(dataset)) if indices is None else list(indices)
    key = _fingerprint(dataset, size, order) if cache and hasattr(dataset, "samples") else None
    path = os.path.join(cache_dir(), f"memory-{key}.npz") if key else None
    cached = _read_cache(path, size, len(order)) if path else None
    if cached is not None:
        images, labels, skipped = cached
    else:
        kept, targets, skipped = [], [], 0
        for i in order:
            item = dataset[i]
            if item is None:  # unreadable: the dataset has warned once, naming the file
                skipped += 1
                continue
            kept.append(_to_array(item[0], size))
            targets.append(int(item[1]))
        images = np.stack(kept) if kept else np.zeros((0, 3, size, size), np.uint8)
        labels = np.asarray(targets, dtype=np.int64)
        if path:
            _write_cache(path, images, labels, skipped)
    return torch.from_numpy(images), torch.from_numpy(labels), skipped


def _read_cache(path: str, size: int, count: int):
    """(images, labels, skipped) from a cache file that is whole and fits this request, else None
    (a miss: decoded again and rewritten). A truncated or damaged file, or arrays of the wrong
    shape or type (bad labels would index past the classes), never reach training."""
    if not os.path.isfile(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            images, labels, skipped = z["images"], z["labels"], int(z["skipped"])
    except Exception:  # zipfile, numpy and zlib each raise their own types for damaged files
        return None
    n = len(labels)
    ok = (
        images.dtype == np.uint8
        and images.shape == (n, 3, size, size)
        and labels.dtype == np.int64
        and labels.ndim == 1
        and n + skipped == count
        and skipped >= 0
        and (n == 0 or labels.min() >= 0)
    )
    return (images, labels, skipped) if ok else None


def _write_cache(path: str, images, labels, skipped: int) -> None:
    """Best effort: a cache that cannot be written (full disk, read-only home) only costs time."""
    tmp = f"{path}.{os.getpid()}.tmp.npz"
    try:
        os.makedirs(cache_dir(), exist_ok=True)
        np.savez(tmp, images=images, labels=labels, skipped=np.int64(skipped))
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the new one
    except OSError:
        if os.path.exists(tmp):
            os.remove(tmp)


def crop_flip(
    images: torch.Tensor, padding: int, offsets: torch.Tensor, flips: torch.Tensor, fill: str = "zero"
) -> torch.Tensor:
    """Pad [B, C, H, W] by `padding` (`fill`: zero, or reflect - the image mirrored at its border,
    so a moved crop shows no black edge), crop H x W at offsets[b] = (dy, dx), mirror where flips[b]."""
    b, c, h, w = images.shape
    padded = torch.nn.functional.pad(
        images, (padding,) * 4, mode="reflect" if fill == "reflect" else "constant"
    )
    rows = (offsets[:, 0, None] + torch.arange(h))[:, None, :, None]  # [B, 1, H, 1]
    cols = offsets[:, 1, None] + torch.arange(w)  # [B, W]
    cols = torch.where(flips[:, None], cols.flip(1), cols)[:, None, None, :]  # [B, 1, 1, W]
    return padded[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]


def random_crop_flip(
    images: torch.Tensor,
    padding: int,
    generator: torch.Generator | None = None,
    flips: torch.Tensor | None = None,
    fill: str = "zero",
) -> torch.Tensor:
    """Random crops (and random flips, unless `flips` [B] bool says which images to mirror)."""
    b = images.shape[0]
    offsets = torch.randint(0, 2 * padding + 1, (b, 2), generator=generator)
    if flips is None:
        flips = torch.rand(b, generator=generator) < 0.5
    return crop_flip(images, padding, offsets, flips, fill)


class _Sized:
    """`loader.dataset`: its length (what the engine reads) and the tensors the loader batches from."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)


class InMemoryLoader:
    """Batches (images float [B,3,S,S] or [B,2,3,S,S], labels, skipped=0) like the DataLoaders.

    Training: shuffled with `generator` (re-seeded per epoch by `loaders.seed_epoch`), augmented
    with `random_crop_flip`; `flip="alternate"` mirrors each image in every other epoch instead of
    at random (`alternate_flips`). Evaluation: in order, as they are (+ the mirror with `test_flip`,
    + shifted views with `test_shift`: `eval_views`).
    """

    def __init__(
        self,
        images,
        labels,
        batch_size: int,
        mean,
        std,
        *,
        train: bool,
        padding: int = 4,
        fill: str = "zero",
        augment: bool = True,
        test_flip: bool = False,
        test_shift: int = 0,
        progressive=None,
        flip: str = "random",
        seed: int = 0,
    ):
        self.dataset = _Sized(images, labels)
        self.progressive, self.size = (progressive if train else None), images.shape[-1]
        self.train_size = self.size  # set per epoch by `set_progress` (data.progressive)
        self.batch_size, self.train, self.padding, self.fill = batch_size, train, padding, fill
        self.augment, self.test_flip = augment and train, test_flip and not train
        self.test_shift = 0 if train else test_shift
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.generator = torch.Generator() if train else None
        self.flip, self.seed, self.epoch = flip, seed, 0
        self.sampler, self.num_workers = None, 0  # what seed_epoch / resilience read from a DataLoader

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)

    def set_progress(self, progress: float) -> int:
        """Set (and return) the training size for a run `progress` (0..1) through its schedule."""
        if self.progressive is not None:
            min_size, until = self.progressive
            self.train_size = progressive_size(self.size, min_size, until, progress)
        return self.train_size

    def set_epoch(self, epoch: int) -> None:  # called by loaders.seed_epoch
        self.epoch = epoch

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() / 255 - self.mean) / self.std

    def __iter__(self):
        n = len(self.dataset)
        order = torch.randperm(n, generator=self.generator) if self.train else torch.arange(n)
        epoch_flips = (
            alternate_flips(n, self.seed, self.epoch) if self.augment and self.flip == "alternate" else None
        )
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            x = self.dataset.images[idx]
            if self.augment:
                x = random_crop_flip(
                    x,
                    self.padding,
                    self.generator,
                    None if epoch_flips is None else epoch_flips[idx],
                    self.fill,
                )
            x = self.normalize(x)
            if self.train_size != self.size:
                # antialiased, as a camera at lower resolution would see it (not a subsampling)
                x = torch.nn.functional.interpolate(
                    x, size=(self.train_size,) * 2, mode="bilinear", antialias=True, align_corners=False
                )
            if self.test_flip or self.test_shift:
                x = torch.stack(eval_views(x, self.test_flip, self.test_shift), dim=1)
            yield x, self.dataset.labels[idx], 0


def alternate_flips(n: int, seed: int, epoch: int) -> torch.Tensor:
    """Which of `n` images to mirror in `epoch` [n] bool: a seeded coin per image in epoch 0, the
    opposite in every odd epoch (Jordan 2024, airbench: "alternating flip"). Each pair of epochs
    then shows every image once as it is and once mirrored - random flips repeat one view of
    about half the images over two epochs, which a short run, with a dozen epochs, notices."""
    first = torch.rand(n, generator=torch.Generator().manual_seed(seed * 7919 + 17)) < 0.5
    return first ^ bool(epoch % 2)


def eval_views(x: torch.Tensor, flip: bool, shift: int) -> list[torch.Tensor]:
    """The views of a batch whose softmaxes `evaluate` averages: the images, their mirror images
    (`flip`), and the images moved by `shift` px down-right and up-left, reflect-padded, with
    their mirrors (Jordan's airbench test-time augmentation: the training crops move the
    content by up to 4 px, so a shifted view is one the network knows as well)."""
    views = [x]
    if shift:
        padded = torch.nn.functional.pad(x, (shift,) * 4, mode="reflect")
        h, w = x.shape[-2:]
        views += [padded[..., :h, :w], padded[..., 2 * shift :, 2 * shift :]]
    return views + [v.flip(3) for v in views] if flip else views


def progressive_size(full: int, min_size: int, until: float, progress: float) -> int:
    """Progressive resizing (Howard's fast.ai DAWNBench entry; Tan & Le 2021, EfficientNetV2):
    early epochs see smaller images, which cost less (ResNet-20: 24 px trains 1.7x faster than
    32 px on one core) and teach the coarse features first; the size grows linearly from
    `min_size` at the start to `full` at fraction `until` of the schedule, in steps of 4 px
    (few distinct shapes, so oneDNN reuses its kernels), and stays `full` after that, so the
    last part of the run - and its batch-norm statistics - matches the test images' size."""
    if progress >= until or min_size >= full:  # (images already that small: nothing to grow)
        return full
    size = min_size + (full - min_size) * max(0.0, progress) / until
    return min(full, max(min_size, 4 * int(size // 4)))


class MemorySettings(Protocol):
    """The data settings the in-memory loaders read (recipes.config.DataConfig has them, checked)."""

    @property
    def augment(self) -> str: ...
    @property
    def mean(self) -> Sequence[float]: ...
    @property
    def std(self) -> Sequence[float]: ...
    @property
    def crop_padding(self) -> int | None: ...
    @property
    def crop_fill(self) -> str: ...
    @property
    def flip(self) -> str: ...
    @property
    def test_flip(self) -> bool: ...
    @property
    def test_shift(self) -> int: ...
    @property
    def progressive(self) -> Sequence | None: ...


def in_memory_loaders(
    train_set, val_set, d: MemorySettings, batch_size: int, seed: int, size: int, train_idx, val_idx
):
    """(train, val) InMemoryLoaders for the recipe's data settings `d` (`augment`: cifar or none;
    every value already checked by the run's config, except what depends on the image size)."""
    if d.augment not in ("cifar", "none"):
        raise UserError(f"data.in_memory supports data.augment cifar or none, not {d.augment!r}")
    padding = d.crop_padding
    if padding is None:
        padding = max(1, round(4 * size / 32))
    elif padding > size // 2:
        raise UserError(
            f"data.crop_padding must be an integer 0..{size // 2} (pixels) or null, got {padding!r}"
        )
    loaders = []
    for split, dataset, idx, train in (
        ("train", train_set, train_idx, True),
        ("val", val_set, val_idx, False),
    ):
        n = len(dataset) if idx is None else len(idx)
        print(f"{split}: {n} images into memory (cache {cache_dir()})", file=sys.stderr, flush=True)
        images, labels, skipped = decode_split(dataset, size, idx)
        if skipped:
            print(f"{split}: {skipped} unreadable images skipped", file=sys.stderr, flush=True)
        loaders.append(
            InMemoryLoader(
                images,
                labels,
                batch_size,
                d.mean,
                d.std,
                train=train,
                padding=padding,
                fill=d.crop_fill,
                augment=d.augment == "cifar",
                flip=d.flip,
                seed=seed,
                test_flip=d.test_flip,
                test_shift=d.test_shift,
                progressive=d.progressive,
            )
        )
    return tuple(loaders)
