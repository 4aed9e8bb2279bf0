"""DataLoaders over the data layer's datasets: transforms applied late, seeded shuffling.

Datasets are built without a transform and wrapped, so the eval transform can depend on the
dataset's native size (32x32 sets are evaluated as they are). Shuffling draws from a generator
re-seeded with (seed, epoch) at every epoch, so epoch e's order - and the worker seeds torch
derives from the same generator - is the same whether or not the run was resumed.
"""

from __future__ import annotations

import os
import random
import signal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..data.datasets import collate_skip_broken
from ..errors import UserError


class Mapped(Dataset):
    """`dataset` with `transform` applied to each image; unreadable items (None) pass through."""

    def __init__(self, dataset, transform, indices=None):
        self.dataset, self.transform = dataset, transform
        self.indices = list(range(len(dataset))) if indices is None else list(indices)

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        item = self.dataset[self.indices[i]]
        if item is None:
            return None
        image, label = item
        return self.transform(image), label


def check_limit(limit, flag: str = "--limit") -> None:
    """A subset size is None (all) or a positive integer; 0 or -5 would silently mean "all"."""
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise UserError(f"{flag} must be a positive number of images, got {limit!r}")


WORKERS_PER_CPU = 4  # loader processes beyond this many per CPU only wait for one another


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity on this platform
        return os.cpu_count() or 1


def check_workers(workers: int, flag: str = "--workers") -> None:
    """Each loader worker is a process with its own copy of torch (hundreds of MB): a count far
    past the CPUs only costs memory and start-up (1000 asked for: hundreds of processes, no end)."""
    if workers < 0:
        raise UserError(f"{flag} must be 0 (load in this process) or more, got {workers}")
    cap = max(8, WORKERS_PER_CPU * usable_cpus())
    if workers > cap:
        raise UserError(
            f"{flag} {workers} is more than this machine can use ({usable_cpus()} CPUs: at most "
            f"{cap}, and one per CPU is usually enough)"
        )


ACTIVATION_FACTOR = 32  # a CNN's live activations at once, in input sizes (VGG's first layers: ~40)


def available_memory() -> int | None:
    """Bytes of memory this machine can still give (Linux MemAvailable; None elsewhere)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_input_memory(batch_size: int, input_size: int, crops: int = 1, flag: str = "--input-size") -> None:
    """UserError when one batch of `input_size` images (and the activations a CNN keeps for it)
    would need more memory than the machine has free: refused before the model is built, instead
    of gigabytes and then a traceback."""
    need = batch_size * crops * 3 * input_size * input_size * 4 * ACTIVATION_FACTOR
    free = available_memory()
    if free is not None and need > free:
        gib = 1024**3
        raise UserError(
            f"{flag} {input_size} with --batch-size {batch_size}"
            + (f" and {crops} crops" if crops > 1 else "")
            + f" needs about {need / gib:.1f} GiB (the batch and the activations a CNN keeps for it), "
            f"more than the {free / gib:.1f} GiB this machine has free: use a smaller size or batch"
        )


def subset_indices(n: int, limit: int | None, seed: int) -> list[int] | None:
    """A seeded random subset of `limit` of `n` indices, sorted (None: all)."""
    if not limit or limit >= n:
        return None
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n, generator=g)[:limit].tolist())


def _seed_worker(worker_id: int) -> None:
    # Ctrl-C reaches the whole process group: only the main process acts on it (it checkpoints at
    # the next step, resilience.StopRequest); a worker that died of it would end the run instead
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # torch seeds python's and its own RNG in each worker; numpy is left to us
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(
    dataset,
    batch_size: int,
    workers: int,
    shuffle: bool,
    drop_last: bool = False,
    pin_memory: bool = False,
    sampler=None,
) -> DataLoader:
    """`sampler` (distributed runs: engine.distributed.TrainSampler / EvalSampler) replaces `shuffle`."""
    check_workers(workers)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_skip_broken,
        drop_last=drop_last,
        pin_memory=pin_memory,
        worker_init_fn=_seed_worker if workers else None,
        generator=torch.Generator() if shuffle or sampler is not None else None,
        persistent_workers=False,
    )


def seed_epoch(loader: DataLoader, seed: int, epoch: int, rank: int = 0) -> None:
    """Epoch `epoch`'s order and worker seeds; ranks > 0 get their own augmentation streams."""
    if loader.generator is not None:
        loader.generator.manual_seed(seed * 100003 + epoch + rank * 1000003)
    for obj in (loader, loader.sampler, loader.dataset):  # InMemoryLoader, TrainSampler, ShardDataset
        if hasattr(obj, "set_epoch"):
            obj.set_epoch(epoch)
