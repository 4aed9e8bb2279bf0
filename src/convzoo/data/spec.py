"""`--data SPEC`: `synthetic`, a folder (= `folder:PATH`, or `shards:PATH` when it holds an
index), or `KIND:PATH`; parsed into a DataSpec before anything is read."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import UserError
from . import shards
from .shards import is_shard_dir

KINDS = ("imagenet", "places365", "cifar10", "fashion-mnist", "folder", "shards")
SPLITS = {
    "synthetic": ("train", "val"),
    "imagenet": ("train", "val"),
    "places365": ("train", "val"),
    "cifar10": ("train", "test"),
    "fashion-mnist": ("train", "test"),
    "folder": ("train", "val"),
}
DEFAULT_PATHS = {"fashion-mnist": "/usr/share/datasets/fashion-mnist"}


@dataclass(frozen=True)
class DataSpec:
    kind: str
    path: str | None = None

    @property
    def root(self) -> str:
        """The dataset's folder (every kind but `synthetic` has one)."""
        if self.path is None:
            raise UserError(f"the {self.kind} dataset has no folder")
        return self.path


def resolve_spec(spec: str) -> DataSpec:
    """`synthetic`, a folder (= `folder:PATH`), or `KIND:PATH`; UserError for anything else."""
    spec = str(spec).strip()
    if spec == "synthetic":
        return DataSpec("synthetic")
    if os.path.isdir(os.path.expanduser(spec)):
        path = os.path.abspath(os.path.expanduser(spec))
        return DataSpec("shards" if is_shard_dir(path) else "folder", path)
    kind, sep, path = spec.partition(":")
    if not sep:
        what = (
            "folder not found"
            if os.sep in spec or spec.startswith(".")
            else "not a folder, `synthetic`, or KIND:PATH"
        )
        raise UserError(f"data {spec!r}: {what} (KIND: {', '.join(KINDS)})")
    if kind not in KINDS:
        raise UserError(
            f"unknown data kind {kind!r} in {spec!r}: expected one of synthetic, {', '.join(KINDS)}"
        )
    path = os.path.expanduser(path) or DEFAULT_PATHS.get(kind, "")
    if not path:
        raise UserError(f"data {spec!r}: missing PATH after {kind}:")
    if not os.path.isdir(path):
        raise UserError(f"data {spec!r}: folder not found: {path}")
    return DataSpec(kind, os.path.abspath(path))


def default_splits(spec: str) -> tuple[str, str]:
    """(training split, validation split) in the dataset's own names."""
    ds = resolve_spec(spec)
    return shards.default_splits(ds.root) if ds.kind == "shards" else SPLITS[ds.kind]
