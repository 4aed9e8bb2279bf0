"""Class names shipped with the package (facts, not code).

Files in `labels/`:
- `imagenet1k.tsv`: `index <TAB> WordNet id <TAB> name` for the 1,000 ILSVRC-2012 classes; the
  index is the position of the sorted WordNet id (the convention of torchvision, timm, Caffe).
- `places365.txt`: `/l/label 0..364` (categories_places365.txt of Places365);
  `places365_io.txt`: `index 1|2` (IO_places365.txt's flags, 1 indoor, 2 outdoor, keyed by the
  class index of places365.txt instead of the repeated category key).
- `cifar10.txt`, `fashion-mnist.txt`: one name per line, index order.
"""

from __future__ import annotations

import os
from functools import cache
from importlib import resources

from ..errors import UserError

BUILTIN = ("imagenet1k", "places365", "cifar10", "fashion-mnist")


def _read(name: str) -> list[str]:
    text = resources.files(__package__).joinpath("labels").joinpath(name).read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


@cache
def imagenet1k_table() -> tuple[tuple[str, str], ...]:
    """((wnid, name), ...) in index order."""
    rows = []
    for i, line in enumerate(_read("imagenet1k.tsv")):
        index, wnid, name = line.split("\t")
        assert int(index) == i, "imagenet1k.tsv must be in index order"
        rows.append((wnid, name))
    return tuple(rows)


def imagenet1k_wnids() -> list[str]:
    return [w for w, _ in imagenet1k_table()]


def _places365_pairs(name: str) -> list[tuple[str, int]]:
    pairs = []
    for line in _read(name):
        key, value = line.rsplit(maxsplit=1)
        pairs.append((key, int(value)))
    return pairs


def places365_categories() -> list[str]:
    """The raw category keys in index order (`/a/airfield`, `/a/apartment_building/outdoor`, ...)."""
    pairs = _places365_pairs("places365.txt")
    assert [i for _, i in pairs] == list(range(len(pairs)))
    return [k for k, _ in pairs]


def places365_name(category: str) -> str:
    """`/a/apartment_building/outdoor` -> `apartment_building/outdoor` (drop the letter folder)."""
    parts = category.strip("/").split("/")
    return "/".join(parts[1:]) if len(parts) > 1 and len(parts[0]) == 1 else "/".join(parts)


def places365_indoor_outdoor() -> list[int]:
    """Per class (index order): 1 indoor, 2 outdoor (IO_places365.txt)."""
    pairs = _places365_pairs("places365_io.txt")
    assert [int(i) for i, _ in pairs] == list(range(len(places365_categories()))), "places365_io.txt order"
    return [flag for _, flag in pairs]


@cache
def _builtin(name: str) -> tuple[str, ...]:
    if name == "imagenet1k":
        return tuple(n for _, n in imagenet1k_table())
    if name == "places365":
        return tuple(places365_name(c) for c in places365_categories())
    return tuple(_read(f"{name}.txt"))


def load_labels(name_or_path: str) -> list[str]:
    """Class names (index order) for a built-in label set or a text file, one name per line."""
    if name_or_path in BUILTIN:
        return list(_builtin(name_or_path))
    if os.path.isfile(name_or_path):
        try:
            with open(name_or_path, encoding="utf-8") as f:
                names = [line.strip() for line in f if line.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"cannot read labels file {name_or_path}: {e}") from None
        if not names:
            raise UserError(f"labels file {name_or_path} is empty")
        return names
    raise UserError(f"unknown labels {name_or_path!r}: use one of {', '.join(BUILTIN)} or a text file")
