"""Data SPECs -> datasets: the built-in synthetic set, class folders, ImageNet, Places365,
CIFAR-10 (folders or the official python batches), Fashion-MNIST (idx files).

Every dataset has `classes`, `num_classes`, `native_size`, `label_set`, `samples` and `targets`,
and yields `(transform(image), label)`; an image file that cannot be used yields `None` with a
warning naming the file (once per file and process), and `collate_skip_broken` drops and counts
those, so one bad file never stops a run or kills a data-loader worker. Folders are scanned once
with `os.scandir` (names only, no image is opened) and sorted, so the order and the labels are
the same on every machine and every rank.
"""

from __future__ import annotations

import csv
import gzip
import math
import os
import re
import warnings
import zlib

import numpy as np
import torch
from PIL import Image

from ..errors import UserError
from ..untrusted import read_at_most
from . import labels as _labels
from . import shards
from .cifar_pickle import load_cifar_batch
from .folders import image_files, is_image, list_subdirs
from .images import BadImage, BrokenImageWarning, load_image
from .matfile import read_ilsvrc_meta
from .spec import KINDS, SPLITS, DataSpec, default_splits, resolve_spec
from .synthetic import SyntheticDataset

__all__ = [
    "DataSpec",
    "resolve_spec",
    "build_dataset",
    "default_splits",
    "collate_skip_broken",
    "load_image",
    "BadImage",
    "BrokenImageWarning",
    "SyntheticDataset",
    "KINDS",
]


def collate_skip_broken(batch):
    """DataLoader collate_fn: drop `None` items -> (images, labels, number_skipped).

    Images are stacked when they are tensors (a list is returned for PIL images, i.e. no
    transform); a batch with nothing left gives empty tensors (check `labels.numel()`).
    """
    kept = [item for item in batch if item is not None]
    skipped = len(batch) - len(kept)
    if not kept:
        return torch.empty(0), torch.empty(0, dtype=torch.long), skipped
    images = [item[0] for item in kept]
    labels = torch.tensor([int(item[1]) for item in kept], dtype=torch.long)
    if all(isinstance(x, torch.Tensor) for x in images):
        images = torch.stack(images)
    return images, labels, skipped


# ----------------------------------------------------------------------------------- datasets


class _Base(torch.utils.data.Dataset):
    label_set = "folder"
    native_size: int | None = None

    def __init__(self, samples, classes, transform=None, label_set=None, native_size=None, split=None):
        self.samples = samples
        self.targets = [label for _, label in samples]
        self.classes = list(classes)
        self.num_classes = len(self.classes)
        self.transform = transform
        self.split = split
        self.label_set = label_set or self.label_set
        self.native_size = native_size

    def __len__(self) -> int:
        return len(self.samples)

    def _out(self, img, label):
        return (self.transform(img) if self.transform is not None else img), label


class ImageFileDataset(_Base):
    """Items read from files with `load_image`; unreadable files -> None and one warning."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._warned: set[str] = set()

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        try:
            img = load_image(path, draft_size=getattr(self.transform, "draft_size", None))
        except BadImage as e:
            if e.path not in self._warned:
                self._warned.add(e.path)
                warnings.warn(f"skipping unreadable image {e}", BrokenImageWarning, stacklevel=2)
            return None
        return self._out(img, label)


class ArrayDataset(_Base):
    """Items from a uint8 array [N, H, W] (grayscale -> 3 channels) or [N, H, W, 3]."""

    def __init__(self, images: np.ndarray, targets, classes, source: str, **kwargs):
        samples = [(f"{source}#{i}", int(t)) for i, t in enumerate(targets)]
        super().__init__(samples, classes, **kwargs)
        self.images = images

    def __getitem__(self, index: int):
        a = self.images[index]
        img = Image.fromarray(a, "L").convert("RGB") if a.ndim == 2 else Image.fromarray(a, "RGB")
        return self._out(img, self.targets[index])


def _scan_classes(split_dir: str, class_index: dict[str, int]) -> list[tuple[str, int]]:
    samples: list[tuple[str, int]] = []
    root = os.path.dirname(os.path.abspath(split_dir))  # the dataset's folder
    names = list_subdirs(split_dir)
    seen = {os.path.realpath(os.path.join(split_dir, n)) for n in names}  # a link into a class: not again
    for name in names:
        if name not in class_index:
            raise UserError(f"{os.path.join(split_dir, name)}: unknown class folder {name!r}")
        files = image_files(os.path.join(split_dir, name), root, seen)
        samples.extend((p, class_index[name]) for p in files)
    return samples


def _split_dir(root: str, split: str, kind: str) -> str:
    path = os.path.join(root, split)
    if split not in SPLITS[kind] and not (kind == "folder" and os.path.isdir(path)):
        raise UserError(f"{kind} has no split {split!r}: use one of {', '.join(SPLITS[kind])}")
    if not os.path.isdir(path):
        raise UserError(f"{kind}:{root}: split folder {path} not found")
    return path


def _nonempty(samples, where: str):
    if not samples:
        raise UserError(f"no images found in {where}")
    return samples


def _folder(root: str, split: str, transform) -> ImageFileDataset:
    """root/{train,val|validation|valid|test}/<class>/<images>; classes = sorted union of the
    class folders (data/source.py picks the validation split; any existing folder is a split)."""
    split_dir = _split_dir(root, split, "folder")
    classes = sorted(
        {
            c
            for s in ("train", "val", "validation", "valid", "test", split)
            if os.path.isdir(os.path.join(root, s))
            for c in list_subdirs(os.path.join(root, s))
        }
    )
    if not classes:
        raise UserError(f"{split_dir}: expected one sub-folder per class")
    samples = _nonempty(_scan_classes(split_dir, {c: i for i, c in enumerate(classes)}), split_dir)
    return ImageFileDataset(samples, classes, transform, "folder", None, split)


# ------------------------------------------------------------------------------------ ImageNet

_VAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})\.", re.IGNORECASE)


def _candidates(root: str, name: str) -> list[str]:
    dirs = [
        root,
        os.path.join(root, "val"),
        os.path.dirname(root),
        os.path.join(root, "ILSVRC2012_devkit_t12", "data"),
        os.path.join(root, "devkit", "data"),
    ]
    return [os.path.join(d, name) for d in dirs if os.path.isfile(os.path.join(d, name))]


def _devkit_id_to_wnid(gt_file: str, root: str) -> dict[int, str]:
    """ILSVRC2012_ID (1..1000, the devkit's own order, not the sorted one) -> WordNet id."""
    here = os.path.dirname(gt_file)
    for path in [os.path.join(here, "map_clsloc.txt")] + _candidates(root, "map_clsloc.txt"):
        if os.path.isfile(path):  # "n02119789 1 kit_fox" (ILSVRC 2014+ devkits)
            with open(path) as f:
                return {int(p[1]): p[0] for p in (line.split() for line in f) if len(p) >= 2}
    for path in [os.path.join(here, "meta.mat")] + _candidates(root, "meta.mat"):
        if os.path.isfile(path):
            return read_ilsvrc_meta(path)
    raise UserError(
        f"{gt_file} holds devkit class ids; their WordNet ids come from the devkit's "
        f"data/meta.mat or map_clsloc.txt, neither found next to it"
    )


def _imagenet_flat_val(root: str, val_dir: str) -> list[tuple[str, str]]:
    """(file, wnid) for a flat val folder, from the ground-truth file found near it."""
    files = sorted(os.path.join(val_dir, f) for f in os.listdir(val_dir) if is_image(f))
    wnid_of: dict[int, str] = {}
    if found := _candidates(root, "LOC_val_solution.csv"):  # Kaggle: ImageId,PredictionString
        with open(found[0], newline="") as f:
            for row in csv.DictReader(f):
                m = _VAL_NAME.match(row["ImageId"] + ".")
                if m:
                    wnid_of[int(m.group(1))] = row["PredictionString"].split()[0]
    elif found := _candidates(root, "ILSVRC2012_validation_ground_truth.txt"):  # devkit: one id a line
        id_to_wnid = _devkit_id_to_wnid(found[0], root)
        with open(found[0]) as f:
            ids = [int(line) for line in f if line.strip()]
        try:
            wnid_of = {i + 1: id_to_wnid[c] for i, c in enumerate(ids)}
        except KeyError as e:
            raise UserError(f"{found[0]}: class id {e} not in the devkit mapping") from None
    else:
        raise UserError(
            f"{val_dir} is flat but no ground truth was found: put the devkit's "
            f"ILSVRC2012_validation_ground_truth.txt (with data/meta.mat) or LOC_val_solution.csv "
            f"in {root}, or sort val/ into class folders"
        )
    out = []
    for path in files:
        m = _VAL_NAME.match(os.path.basename(path))
        if not m or int(m.group(1)) not in wnid_of:
            raise UserError(f"{path}: no ground-truth label for this file")
        out.append((path, wnid_of[int(m.group(1))]))
    return out


def _imagenet(root: str, split: str, transform) -> ImageFileDataset:
    split_dir = _split_dir(root, split, "imagenet")
    wnids = _labels.imagenet1k_wnids()
    index = {w: i for i, w in enumerate(wnids)}
    if list_subdirs(split_dir):
        samples = _scan_classes(split_dir, index)
    else:
        pairs = _imagenet_flat_val(root, split_dir)
        unknown = sorted({w for _, w in pairs if w not in index})
        if unknown:
            raise UserError(f"{split_dir}: ground truth names unknown WordNet ids {unknown[:3]}")
        samples = [(p, index[w]) for p, w in pairs]
    return ImageFileDataset(
        _nonempty(samples, split_dir), _labels.load_labels("imagenet1k"), transform, "imagenet1k", None, split
    )


# ----------------------------------------------------------------------------------- Places365

_PLACES_LISTS = {
    "train": ("train.txt", "places365_train_standard.txt"),
    "val": ("val.txt", "places365_val.txt"),
}
_PLACES_DIRS = {"train": ("train", "data_256", "data_large"), "val": ("val", "val_256", "val_large")}


def _places_key(name: str) -> str:
    return name.strip("/").replace("/", "-").lower()


def _places_label(rel: str, index: dict[str, int], where: str) -> int:
    parts = os.path.dirname(rel).strip("/").split("/")
    for n in (2, 1):  # "apartment_building/outdoor" before "outdoor"
        key = _places_key("/".join(parts[-n:]))
        if len(parts) >= n and key in index:
            return index[key]
    raise UserError(f"{where}: no label and no Places365 category in path {rel!r}")


def _places365(root: str, split: str, transform) -> ImageFileDataset:
    if split not in SPLITS["places365"]:
        raise UserError(f"places365 has no split {split!r}: use one of train, val")
    cat_file = os.path.join(root, "categories_places365.txt")
    categories = _labels.places365_categories()
    if os.path.isfile(cat_file):
        with open(cat_file) as f:
            local = [line.rsplit(maxsplit=1)[0] for line in f if line.strip()]
        if local != categories:
            raise UserError(f"{cat_file} differs from the 365 Places365 categories shipped with convzoo")
    index = {_places_key(_labels.places365_name(c)): i for i, c in enumerate(categories)}
    classes = _labels.load_labels("places365")
    list_file = next(
        (os.path.join(root, n) for n in _PLACES_LISTS[split] if os.path.isfile(os.path.join(root, n))), None
    )
    if list_file is None:  # no list: class folders named like the categories
        split_dir = _split_dir(root, split, "places365")
        samples: list[tuple[str, int]] = []
        for name in list_subdirs(split_dir):
            samples.extend(
                (p, _places_label(os.path.relpath(p, split_dir), index, split_dir))
                for p in image_files(os.path.join(split_dir, name))
            )
        return ImageFileDataset(_nonempty(samples, split_dir), classes, transform, "places365", None, split)
    with open(list_file) as f:
        rows = [line.split() for line in f if line.strip()]
    if not rows:
        raise UserError(f"{list_file} is empty")
    bases = [root] + [os.path.join(root, d) for d in _PLACES_DIRS[split]]
    first = rows[0][0].lstrip("/")
    base = next((b for b in bases if os.path.isfile(os.path.join(b, first))), None)
    if base is None:
        raise UserError(f"{list_file}: first listed image {first!r} not found under {root}")
    samples = []
    for lineno, row in enumerate(rows, 1):
        rel = row[0].lstrip("/")
        if len(row) > 1:
            if not row[1].isdigit() or int(row[1]) >= len(classes):
                raise UserError(f"{list_file}:{lineno}: bad label {row[1]!r}")
            label = int(row[1])
        else:
            label = _places_label(rel, index, f"{list_file}:{lineno}")
        samples.append((os.path.join(base, rel), label))
    return ImageFileDataset(samples, classes, transform, "places365", None, split)


# ------------------------------------------------------------------------------------ CIFAR-10


def _cifar10(root: str, split: str, transform) -> _Base:
    if split not in SPLITS["cifar10"]:
        raise UserError(f"cifar10 has no split {split!r}: use one of train, test")
    classes = _labels.load_labels("cifar10")
    for base in (root, os.path.join(root, "cifar10")):
        if os.path.isdir(os.path.join(base, split)) and list_subdirs(os.path.join(base, split)):
            split_dir = os.path.join(base, split)
            samples = _scan_classes(split_dir, {c: i for i, c in enumerate(classes)})
            return ImageFileDataset(_nonempty(samples, split_dir), classes, transform, "cifar10", 32, split)
    for base in (root, os.path.join(root, "cifar-10-batches-py")):
        names = ["test_batch"] if split == "test" else [f"data_batch_{i}" for i in range(1, 6)]
        paths = [os.path.join(base, n) for n in names]
        if os.path.isfile(paths[0]):
            missing = [p for p in paths if not os.path.isfile(p)]
            if missing:
                raise UserError(f"cifar10:{root}: missing {missing[0]}")
            batches = [load_cifar_batch(p) for p in paths]
            images = np.concatenate([b[0] for b in batches])
            targets = [t for b in batches for t in b[1]]
            return ArrayDataset(
                images,
                targets,
                classes,
                base,
                transform=transform,
                label_set="cifar10",
                native_size=32,
                split=split,
            )
    raise UserError(
        f"cifar10:{root}: expected {split}/<class>/ folders or the python batches "
        f"(cifar-10-batches-py/data_batch_1..5, test_batch)"
    )


# ------------------------------------------------------------------------------- Fashion-MNIST

_IDX = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


MAX_IDX_BYTES = 1 << 30  # Fashion-MNIST's largest file is 47 MB


def read_idx(path: str) -> np.ndarray:
    """An idx file (the MNIST format), gzipped or raw, of unsigned bytes. A gzip stream is read only
    up to the size its header declares (a small file that inflates to GiBs is refused)."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] != 0x08:
                raise UserError(f"{path}: not an unsigned-byte idx file")
            dims = f.read(4 * head[3])
            if len(dims) < 4 * head[3]:
                raise UserError(f"{path}: truncated idx header")
            shape = tuple(int.from_bytes(dims[4 * i : 4 * i + 4], "big") for i in range(head[3]))
            declared = math.prod(shape)
            if declared > MAX_IDX_BYTES:
                raise UserError(f"{path}: idx header declares {shape} = {declared:,} bytes; refused")
            body = read_at_most(f, declared, path)
    except (OSError, EOFError, zlib.error) as e:  # a damaged .gz raises zlib.error mid-stream
        raise UserError(f"{path}: cannot read idx file ({type(e).__name__}: {e})") from None
    if len(body) != declared:
        raise UserError(f"{path}: idx header says {shape} but holds {len(body)} bytes")
    return np.frombuffer(body, np.uint8).reshape(shape)


def _find_file(root: str, stem: str) -> str | None:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in (stem, stem + ".gz"):
            if name in filenames:
                return os.path.join(dirpath, name)
    return None


def _fashion_mnist(root: str, split: str, transform) -> ArrayDataset:
    if split not in _IDX:
        raise UserError(f"fashion-mnist has no split {split!r}: use one of train, test")
    found = [_find_file(root, stem) for stem in _IDX[split]]
    if None in found:
        raise UserError(f"fashion-mnist:{root}: {_IDX[split][found.index(None)]}[.gz] not found")
    paths = [p for p in found if p is not None]
    images, targets = read_idx(paths[0]), read_idx(paths[1])
    if (
        images.ndim != 3
        or targets.ndim != 1
        or len(images) != len(targets)
        or (targets.size and targets.max() > 9)
    ):
        raise UserError(
            f"fashion-mnist:{root}: images {images.shape} and labels {targets.shape} do not match"
        )
    return ArrayDataset(
        images,
        targets.tolist(),
        _labels.load_labels("fashion-mnist"),
        paths[0],
        transform=transform,
        label_set="fashion-mnist",
        native_size=images.shape[1],
        split=split,
    )


_BUILDERS = {
    "folder": _folder,
    "imagenet": _imagenet,
    "places365": _places365,
    "cifar10": _cifar10,
    "fashion-mnist": _fashion_mnist,
}


def build_dataset(spec: str, split: str, transform=None, seed: int = 0, size: int | None = None):
    """The `split` of the dataset named by `spec`; items `(transform(image), label)` or None.

    `seed` and `size` (number of images; default 5,000 train / 1,000 val) apply to `synthetic`;
    `seed` also seeds the shard order and shuffle buffer of `shards` (a streaming IterableDataset).
    """
    ds = resolve_spec(spec)
    if ds.kind == "synthetic":
        if split not in SPLITS["synthetic"]:
            raise UserError(f"synthetic has no split {split!r}: use one of train, val")
        return SyntheticDataset(split, seed=seed, transform=transform, size=size)
    if ds.kind == "shards":
        return shards.build_shards(ds.root, split, transform, seed=seed)
    return _BUILDERS[ds.kind](ds.root, split, transform)
