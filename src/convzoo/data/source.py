"""One data model for every command: a `DataSource`, opened once from the `--data` SPEC.

`train`, `eval`, `features` and `pack` all ask the same object for their datasets, so a layout
one command accepts, the others accept too (docs/data-layouts.md draws each layout):

- `synthetic`: the built-in set (splits train, val);
- a folder (or `folder:PATH`), one of three shapes:
  * `train/` + a validation folder named `val/`, `validation/`, `valid/` or `test/` (the first
    found; `--val-split-name` picks another), each with one sub-folder per class;
  * one sub-folder per class and no `train/` (a "single tree"): split per class, seeded and
    stratified (`--val-split`, default 0.1), into the splits `train` and `val`;
  * image files and no sub-folders ("flat", unlabelled): only for `features` (and `predict`);
- `cifar10:`, `fashion-mnist:` (splits train, test), `imagenet:`, `places365:` (train, val),
  `shards:` (the splits recorded by `convzoo pack`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import torch

from ..errors import UserError
from . import shards
from .datasets import ImageFileDataset, build_dataset
from .folders import image_files, is_image, list_subdirs
from .spec import SPLITS, resolve_spec

VAL_NAMES = ("val", "validation", "valid", "test")
DEFAULT_VAL_FRACTION = 0.1


@dataclass
class Split:
    """A single class-folder tree split in two."""

    train: ImageFileDataset
    val: ImageFileDataset
    rows: list[tuple[str, int, str]]  # (path, label, "train" | "val") in sample order


def stratified_split(targets: list[int], fraction: float, seed: int) -> list[bool]:
    """Per sample: True when it goes to validation. Each class sends round(fraction * n) of its
    n images (at least one when it has two or more) to validation, chosen by a seeded permutation."""
    if not 0 < fraction < 1:
        raise UserError(f"--val-split must be between 0 and 1, got {fraction}")
    g = torch.Generator().manual_seed(seed)
    is_val = [False] * len(targets)
    by_class: dict[int, list[int]] = {}
    for i, t in enumerate(targets):
        by_class.setdefault(t, []).append(i)
    for c in sorted(by_class):
        idx = by_class[c]
        k = min(len(idx) - 1, max(1, math.floor(fraction * len(idx) + 0.5))) if len(idx) > 1 else 0
        for j in torch.randperm(len(idx), generator=g)[:k].tolist():
            is_val[idx[j]] = True
    return is_val


def split_tree(root: str, fraction: float | None, seed: int) -> Split:
    """The train/val datasets of the class-folder tree at `root` (stratified, seeded)."""
    classes = list_subdirs(root)
    if not classes:
        raise UserError(f"{root}: expected train/ and val/, or one sub-folder per class")
    samples = [(p, i) for i, c in enumerate(classes) for p in image_files(os.path.join(root, c))]
    if not samples:
        raise UserError(f"no images found in {root}")
    frac = DEFAULT_VAL_FRACTION if fraction is None else fraction
    is_val = stratified_split([t for _, t in samples], frac, seed)
    part = {s: [x for x, v in zip(samples, is_val) if v == (s == "val")] for s in ("train", "val")}
    for s in part:
        if not part[s]:
            raise UserError(f"{root}: the split leaves no {s} images (too few images per class)")
    train, val = (ImageFileDataset(part[s], classes, None, "folder", None, s) for s in ("train", "val"))
    return Split(train, val, [(p, t, "val" if v else "train") for (p, t), v in zip(samples, is_val)])


def folder_layout(path: str) -> str:
    """`splits` (train/ and/or a validation folder), `single-tree` (class folders), `flat` (images only)."""
    subdirs = list_subdirs(path)
    if "train" in subdirs or (subdirs and set(subdirs) <= set(VAL_NAMES)):
        return "splits"
    if subdirs:
        return "single-tree"
    if any(is_image(e.name) for e in os.scandir(path) if e.is_file()):
        return "flat"
    raise UserError(f"{path}: no images (expected train/ + val/, one sub-folder per class, or image files)")


@dataclass
class DataSource:
    """The dataset a `--data` SPEC names: its kind, layout and (train, validation) split names."""

    spec: str
    kind: str
    path: str | None
    layout: str  # splits | single-tree | flat (folders); the kind otherwise
    train_split: str | None
    val_split: str | None
    val_fraction: float | None = None  # single tree
    seed: int = 0
    _tree: Split | None = field(default=None, repr=False)

    @property
    def root(self) -> str:
        """The folder of a folder-kind source (tree and flat layouts have one)."""
        if self.path is None:
            raise UserError(f"{self.spec} has no folder")
        return self.path

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(s for s in (self.train_split, self.val_split) if s)

    def record(self) -> dict:
        """What a WeightSpec keeps so that `eval` rebuilds the same validation images."""
        out: dict[str, object] = {"data": self.spec}
        if self.layout == "single-tree":
            out.update(val_split=self.val_fraction or DEFAULT_VAL_FRACTION, split_seed=self.seed)
        elif self.kind == "folder" and self.val_split:
            out.update(val_split_name=self.val_split)
        return out

    def tree(self) -> Split:
        if self._tree is None:
            self._tree = split_tree(self.root, self.val_fraction, self.seed)
        return self._tree

    def dataset(self, split: str | None = None, transform=None, labelled: bool = True):
        """The `split` (default: the validation split); a flat folder has one unlabelled split."""
        if self.layout == "flat":
            if labelled:
                raise UserError(
                    f"{self.path} holds images but no class sub-folders: put each class's "
                    f"images in its own sub-folder (docs/data-layouts.md)"
                )
            return _flat(self.root, transform)
        split = split or self.val_split
        if split is None and self.train_split is None:
            raise UserError(f"{self.spec}: no train/ folder (docs/data-layouts.md)")
        if split is None:
            raise UserError(
                f"{self.spec}: no validation split (add a val/ folder next to train/, "
                f"or name one with --val-split-name)"
            )
        if self.layout == "single-tree":
            if split not in ("train", "val"):
                raise UserError(f"a single class-folder tree has the splits train and val, not {split!r}")
            ds = self.tree().train if split == "train" else self.tree().val
            ds.transform = transform
            return ds
        return build_dataset(self.spec, split, transform=transform, seed=self.seed)

    def train_val(self):
        if self.train_split is None:
            raise UserError(f"{self.spec}: no train/ folder to train on (docs/data-layouts.md)")
        return self.dataset(self.train_split), self.dataset(self.val_split)


def _flat(root: str, transform) -> ImageFileDataset:
    samples = [(p, -1) for p in image_files(root)]
    return ImageFileDataset(samples, [], transform, "folder", None, "images")


def _folder_val(path: str, name: str | None) -> str | None:
    if name is not None:
        if not os.path.isdir(os.path.join(path, name)):
            raise UserError(f"--val-split-name {name}: {os.path.join(path, name)} is not a folder")
        return name
    return next((n for n in VAL_NAMES if os.path.isdir(os.path.join(path, n))), None)


def open_source(
    spec: str, val_split_name: str | None = None, val_fraction: float | None = None, seed: int = 0
) -> DataSource:
    """The DataSource of `spec`. `val_split_name` names a folder's validation split (default: the
    first of val/, validation/, valid/, test/); `val_fraction` and `seed` split a single tree."""
    ds = resolve_spec(spec)
    if ds.kind != "folder":
        if ds.kind == "shards":
            train, val = shards.default_splits(ds.root)
        else:
            train, val = SPLITS[ds.kind]
        if val_split_name is not None:
            val = val_split_name
        return DataSource(spec, ds.kind, ds.path, ds.kind, train, val, seed=seed)
    root = ds.root
    layout = folder_layout(root)
    if layout == "single-tree":
        if val_split_name not in (None, "val"):
            raise UserError(
                f"--val-split-name: {root} has no train/ folder, its classes are split "
                f"into train and val (--val-split sets the fraction)"
            )
        return DataSource(spec, "folder", root, layout, "train", "val", val_fraction, seed)
    if layout == "flat":
        return DataSource(spec, "folder", root, layout, None, None, seed=seed)
    val_name = _folder_val(root, val_split_name)
    train_name = "train" if os.path.isdir(os.path.join(root, "train")) else None
    return DataSource(spec, "folder", root, layout, train_name, val_name, seed=seed)


def source_from_record(spec: str, extra: dict) -> DataSource:
    """The DataSource a training run used, from what its WeightSpec recorded (`DataSource.record`)."""
    name = extra.get("val_split_name")
    ds = resolve_spec(spec)
    if name and not (ds.kind == "folder" and os.path.isdir(os.path.join(ds.root, name))):
        name = None  # evaluated on other data than it was trained on: that data's own split
    return open_source(spec, name, extra.get("val_split"), int(extra.get("split_seed", 0)))
