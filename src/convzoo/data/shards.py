"""Data that streams: WebDataset-format tar shards, written by `convzoo pack` (data/pack.py), read
by `shards:DIR` (this module).

Format (readable by the `webdataset` library and by `tar`, written with the standard tarfile
module): `DIR/<split>-NNNNNN.tar`, each an uncompressed tar of samples stored as consecutive
members `<key>.<ext>` (the image file's bytes as they are: `jpg`, `jpeg`, `png`, ...; images that
exist only as pixels - synthetic, CIFAR batches, Fashion-MNIST - are stored as lossless PNG) and
`<key>.cls` (the class index as decimal text). The key is the image's index in the source split.
`DIR/convzoo-shards.json` (written last, so a half-written folder is refused) records the
classes, label set, native size, source SPEC and each shard's sample count.

Packing shuffles the training split once (seeded), so that shards mix classes - a folder
dataset is sorted by class and a shuffle buffer alone cannot undo that.

Streaming (`ShardDataset`, an IterableDataset), per epoch:
1. the shards are put in a seeded order (training) - the same on every rank;
2. their samples, concatenated, are cut into one contiguous range per rank: equal ranges of
   n // W for training (every rank takes the same number of steps; at most W - 1 samples an
   epoch are left out), ranges differing by at most one for evaluation (every sample exactly once);
3. a rank's range is cut into one contiguous range of whole batches per data-loader worker (so
   `len(loader)` is exact and no sample is read twice), and each worker reads only the shards
   its range touches (skipping members inside a shard costs a header read, not the data);
4. training samples pass through a shuffle buffer seeded by (seed, epoch, rank, worker).
An epoch's stream is a pure function of (seed, epoch, rank, world size, workers, batch size),
so a resumed or restarted run reads exactly what it would have read. Rank and world size come
from torchrun's RANK / WORLD_SIZE (inherited by data-loader workers) unless set explicitly.
"""

from __future__ import annotations

import json
import math
import os
import stat
import tarfile
import warnings

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from ..errors import UserError
from ..untrusted import MAX_NESTING, check_nesting, open_regular
from ..weights import MAX_CLASSES
from .images import BadImage, BrokenImageWarning, load_image

META = "convzoo-shards.json"
FORMAT = "convzoo-shards-1"
MAX_MEMBER_BYTES = 256 << 20  # one image file (or .cls) in a shard; a larger member is refused unread


def is_shard_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, META))


def read_meta(root: str) -> dict:
    path = os.path.join(root, META)
    try:
        with open_regular(path) as f:  # a FIFO in its place would block the open forever
            meta = json.load(f)
    except FileNotFoundError:
        raise UserError(
            f"{root} is not a packed shard folder ({META} missing; make one with `convzoo pack`)"
        ) from None
    except RecursionError:
        raise UserError(f"{path}: nested more than {MAX_NESTING} levels deep; not a shard index") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: unreadable ({e})") from None
    check_nesting(meta, path)
    if not isinstance(meta, dict):
        raise UserError(f"{path}: not a shard index (a JSON {type(meta).__name__}, not an object)")
    if meta.get("format") != FORMAT:
        raise UserError(f"{path}: format {meta.get('format')!r}, expected {FORMAT}")
    problem = meta_problem(meta, root)
    if problem:
        raise UserError(f"{path}: damaged shard index: {problem}; re-pack with `convzoo pack`")
    return meta


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def meta_problem(meta: dict, root: str) -> str | None:
    """What is wrong with a shard index (None: nothing). Counts drive `len()` and the ranks'
    ranges, so each must be a count that adds up; shard names must be files in `root`."""
    classes, splits = meta.get("classes"), meta.get("splits")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        return "classes must be a non-empty list of names"
    if len(classes) > MAX_CLASSES:  # what a WeightSpec, and so any model trained on them, allows
        return f"{len(classes):,} classes, more than the {MAX_CLASSES:,} a model can have"
    if not isinstance(splits, dict) or not splits:
        return "no splits"
    defaults = meta.get("default_splits")
    if not (isinstance(defaults, list) and len(defaults) == 2 and all(isinstance(d, str) for d in defaults)):
        return "default_splits must name the train and val splits"
    native = meta.get("native_size")
    if native is not None and not (_is_count(native) and native > 0):
        return f"native_size {meta['native_size']!r}"
    for name, split in splits.items():
        shards = split.get("shards") if isinstance(split, dict) else None
        if not isinstance(shards, list) or not all(isinstance(s, dict) for s in shards):
            return f"split {name!r} lists no shards"
        for s in shards:
            if (
                not _is_count(s.get("count"))
                or not isinstance(s.get("name"), str)
                or os.path.basename(s["name"]) != s["name"]
            ):
                return f"split {name!r}: shard entry {str(s)[:80]} needs a file name and a count >= 0"
        if not _is_count(split.get("count")) or split["count"] != sum(s["count"] for s in shards):
            return f"split {name!r}: count {split.get('count')!r} is not the sum of its shards' counts"
        for s in shards:
            problem = _shard_file_problem(os.path.join(root, s["name"]), s["count"])
            if problem:
                return problem
    return None


# every sample is at least two tar members (image, .cls), each a 512-byte header and a block
MIN_SAMPLE_BYTES = 2 * 2 * 512


def _shard_file_problem(path: str, count: int) -> str | None:
    """A shard must be a regular file (a FIFO would block the reader forever, a link to
    /dev/zero reads as an empty tar) large enough for the samples the index counts in it (the
    counts set the epoch's length and with it the learning-rate schedule)."""
    try:
        st = os.stat(path)
    except OSError as e:
        return f"shard {os.path.basename(path)}: {e.strerror or e}"
    if not stat.S_ISREG(st.st_mode):
        return f"shard {os.path.basename(path)} is not a regular file (a FIFO, a device or a folder)"
    if count * MIN_SAMPLE_BYTES > st.st_size:
        return (
            f"shard {os.path.basename(path)} is {st.st_size:,} bytes, too small for the {count:,} "
            f"samples the index counts in it (at least {MIN_SAMPLE_BYTES} bytes each)"
        )
    return None


def default_splits(root: str) -> tuple[str, str]:
    return tuple(read_meta(root)["default_splits"])


# ---- streaming ------------------------------------------------------------------------------------
def _ranges(n: int, parts: int, i: int, even: bool) -> tuple[int, int]:
    """Part i of 0..n-1 cut into `parts` contiguous ranges (equal n // parts each when `even`)."""
    if even:
        per = n // parts
        return i * per, (i + 1) * per
    return i * n // parts, (i + 1) * n // parts


def _read_tar(path: str, skip: int, take: int):
    """Samples skip .. skip+take-1 of one shard as (key, ext, bytes, label); UserError when the
    shard ends before them (it holds fewer samples than its index says)."""
    got = 0
    try:
        for key, sample in _samples(path, skip, take):
            got += 1
            img = [e for e in sample if e != "cls"]
            if "cls" not in sample or len(img) != 1:
                raise UserError(
                    f"{path}: sample {key!r} needs one image and one .cls member, has {sorted(sample)}"
                )
            try:
                label = int(sample["cls"])
            except ValueError:
                raise UserError(f"{path}: sample {key!r} has a .cls member that is not an integer") from None
            yield key, img[0], sample[img[0]], label
        if got < take:
            raise UserError(
                f"{path}: holds {skip + got} samples, its index counts at least {skip + take}; the "
                f"shard was truncated or replaced: re-pack it with `convzoo pack`"
            )
    except (tarfile.TarError, OSError, EOFError) as e:
        # the image bytes inside are checked one by one later (a bad one is skipped with a
        # warning); a shard whose tar structure is broken cannot be read past that point
        raise UserError(
            f"{path}: damaged shard ({type(e).__name__}: {e}); re-pack it with `convzoo pack`"
        ) from None


def _check_member(path: str, member: tarfile.TarInfo) -> None:
    """pack writes plain members of one image each: a sparse member (which tarfile would fill with
    many GiB of zeros) or one larger than MAX_MEMBER_BYTES is refused before it is read."""
    if member.issparse() or member.size > MAX_MEMBER_BYTES:
        raise UserError(
            f"{path}: member {member.name!r} declares {member.size:,} bytes"
            f"{' as a sparse file' if member.issparse() else ''}, not an image `convzoo pack` "
            f"writes; refused (re-pack the data)"
        )


def _samples(path: str, skip: int, take: int):
    """(key, {ext: bytes}) for samples skip .. skip+take-1: consecutive members sharing a key."""
    seen, key = -1, None
    sample: dict[str, bytes] = {}
    with open_regular(path) as f, tarfile.open(fileobj=f, mode="r:") as tar:
        for member in tar:
            if not member.isfile():
                continue
            _check_member(path, member)
            k, _, ext = os.path.basename(member.name).partition(".")
            if k != key:
                if key is not None and skip <= seen:
                    yield key, sample
                seen += 1
                if seen >= skip + take:
                    return
                key, sample = k, {}
            if seen >= skip:
                data = tar.extractfile(member)
                assert data is not None  # a regular file (isfile above)
                sample[ext.lower()] = data.read()
        if key is not None and skip <= seen < skip + take:
            yield key, sample


class ShardDataset(IterableDataset):
    """One split of a packed folder, streamed; items `(transform(image), label)`, None if unreadable.

    `shuffle` and `even` (equal share per rank) default to True for the training split;
    `batch_size` should be set to the DataLoader's so workers split at batch boundaries;
    `decode=False` yields the raw `(key, ext, bytes, label)` instead.
    """

    def __init__(
        self,
        root: str,
        split: str,
        transform=None,
        seed: int = 0,
        shuffle: bool | None = None,
        buffer_size: int = 1000,
        decode: bool = True,
    ):
        meta = read_meta(root)
        if split not in meta["splits"]:
            raise UserError(f"shards:{root} has no split {split!r}: use one of {', '.join(meta['splits'])}")
        self.root, self.split, self.transform, self.seed = root, split, transform, seed
        self.shards = [(os.path.join(root, s["name"]), s["count"]) for s in meta["splits"][split]["shards"]]
        self.total = sum(c for _, c in self.shards)
        is_train = split == meta["default_splits"][0]
        self.shuffle = is_train if shuffle is None else shuffle
        self.even = self.shuffle
        self.buffer_size, self.decode, self.batch_size = buffer_size, decode, 1
        self.classes = list(meta["classes"])
        self.num_classes = len(self.classes)
        self.native_size = meta["native_size"]
        self.label_set = meta["label_set"]
        self.epoch = 0
        self.rank: int | None = None
        self.world_size: int | None = None
        self._warned: set[str] = set()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def take(self, n: int | None) -> ShardDataset:
        """Keep the first `n` samples of the split in packed order (a seeded random subset of a
        training split, which `pack` shuffled); None keeps all."""
        if n:
            kept, left = [], int(n)
            for path, count in self.shards:
                if left <= 0:
                    break
                kept.append((path, min(count, left)))
                left -= count
            self.shards, self.total = kept, sum(c for _, c in kept)
        return self

    def _partition(self) -> tuple[int, int]:
        world = self.world_size if self.world_size is not None else int(os.environ.get("WORLD_SIZE", 1))
        rank = self.rank if self.rank is not None else int(os.environ.get("RANK", 0))
        return rank, world

    def __len__(self) -> int:
        rank, world = self._partition()
        a, b = _ranges(self.total, world, rank, self.even)
        return b - a

    def _shard_order(self) -> list[tuple[str, int]]:
        if not self.shuffle:
            return self.shards
        perm = np.random.default_rng([self.seed, self.epoch, 11]).permutation(len(self.shards))
        return [self.shards[i] for i in perm]

    def records(self, worker: int = 0, workers: int = 1):
        """This rank's and this worker's raw samples for the current epoch, before shuffling."""
        rank, world = self._partition()
        a, b = _ranges(self.total, world, rank, self.even)
        n, bs = b - a, max(1, self.batch_size)
        batches = math.ceil(n / bs)
        lo = a + min(n, worker * batches // workers * bs)
        hi = a + min(n, (worker + 1) * batches // workers * bs)
        start = 0
        for path, count in self._shard_order():
            if start + count > lo and start < hi:
                skip = max(0, lo - start)
                yield from _read_tar(path, skip, min(count, hi - start) - skip)
            start += count

    def _shuffled(self, items, worker: int):
        rng = np.random.default_rng([self.seed, self.epoch, self._partition()[0], worker, 13])
        buf: list = []
        for item in items:
            if len(buf) < self.buffer_size:
                buf.append(item)
                continue
            j = int(rng.integers(len(buf)))
            yield buf[j]
            buf[j] = item
        for j in rng.permutation(len(buf)):
            yield buf[j]

    def _decode(self, key: str, ext: str, data: bytes, label: int):
        name = f"{self.root}:{key}.{ext}"
        try:
            img = load_image(name, draft_size=getattr(self.transform, "draft_size", None), data=data)
        except BadImage as e:
            if name not in self._warned:
                self._warned.add(name)
                warnings.warn(f"skipping unreadable image {e}", BrokenImageWarning, stacklevel=2)
            return None
        if not 0 <= label < self.num_classes:
            raise UserError(
                f"{name}: label {label} outside the shards' {self.num_classes} classes "
                f"(0..{self.num_classes - 1})"
            )
        return (self.transform(img) if self.transform is not None else img), label

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        items = self.records(worker, workers)
        if self.shuffle and self.buffer_size > 1:
            items = self._shuffled(items, worker)
        for key, ext, data, label in items:
            yield (key, ext, data, label) if not self.decode else self._decode(key, ext, data, label)


def build_shards(root: str, split: str, transform=None, seed: int = 0) -> ShardDataset:
    return ShardDataset(root, split, transform=transform, seed=seed)
