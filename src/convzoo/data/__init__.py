"""Datasets, image loading, class names and the papers' transforms (see docs/DESIGN.md, Layout).

Import the submodules directly (`convzoo.data.datasets`, `.transforms`, `.labels`); this package
re-exports the names the engine and the commands use.
"""

from .datasets import (
    BadImage,
    DataSpec,
    build_dataset,
    collate_skip_broken,
    default_splits,
    load_image,
    resolve_spec,
)
from .labels import load_labels, places365_indoor_outdoor
from .transforms import eval_transform, eval_transform_from_spec, train_transform

__all__ = [
    "BadImage",
    "DataSpec",
    "build_dataset",
    "collate_skip_broken",
    "default_splits",
    "load_image",
    "resolve_spec",
    "load_labels",
    "places365_indoor_outdoor",
    "eval_transform",
    "eval_transform_from_spec",
    "train_transform",
]
