"""The catalog of published weights: `catalog.json` beside this file, read once.

Each entry is named `model.tag` (timm's convention: `resnet50.tv2_in1k`) and holds facts
only: where the publisher serves the file, the hash the publisher gives, its size, the
`convert --from` kind that reads it, the licence, the preprocessing it was trained with,
the published accuracy and where that number comes from, and the converter options. The
field list is `Entry` below; `catalog.json`'s `_about` says the same for readers of the file.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from ..errors import UserError

HASH_ALGOS = ("sha256", "sha1")
MIN_HASH_PREFIX = 8  # torchvision's file names carry 8 hex digits of the SHA-256
# the WeightSpec fields an entry's `preprocessing` may set
PREPROCESSING = ("mean", "std", "input_size", "crop_size", "resize_size", "interpolation")


@dataclass(frozen=True)
class Entry:
    name: str  # model.tag
    model: str  # convzoo model name
    source: str  # convert --from kind: torchvision | timm | places365 | caffe | remap
    url: str
    file: str  # the name it is saved under (the converters read some names)
    hash: str | None  # "sha256:<hex or prefix>" | "sha1:<hex>" | None (publisher gives none)
    size_bytes: int | None  # exact size when known
    size_mib: float | None  # approximate size (e.g. torchvision's meta), the download bound
    license: str
    dataset: str  # what it was trained on (imagenet1k, places365, cifar10)
    preprocessing: dict  # WeightSpec fields set on the converted spec (mean, std, sizes...)
    published: dict  # top1, top5 (percent), protocol, by (where the number comes from)
    model_kwargs: dict = field(default_factory=dict)  # constructor options (WeightSpec.model_kwargs)
    convert_options: dict = field(default_factory=dict)  # extra keywords of interop.convert (caffe: mean)
    archive_member: str | None = None  # the file inside a .zip download that holds the weights
    labels: str | None = None  # built-in label set when the converter cannot know it
    notes: str = ""

    @property
    def max_bytes(self) -> int | None:
        """The download bound: the exact size, else the approximate one with 2% + 1 MiB slack."""
        if self.size_bytes:
            return self.size_bytes
        if self.size_mib:
            return int(self.size_mib * 1.02 * 2**20) + 2**20
        return None


@lru_cache(maxsize=1)
def _load() -> dict[str, Entry]:
    text = resources.files(__package__).joinpath("catalog.json").read_text(encoding="utf-8")
    raw = json.loads(text)["entries"]
    return {name: _entry(name, fields) for name, fields in raw.items()}


def _entry(name: str, raw: dict) -> Entry:
    e = Entry(name=name, **raw)
    if e.hash is not None:
        algo, _, value = e.hash.partition(":")
        if algo not in HASH_ALGOS or len(value) < MIN_HASH_PREFIX or value.strip("0123456789abcdef"):
            raise ValueError(f"catalog entry {name}: malformed hash {e.hash!r}")
    if not set(e.preprocessing) <= set(PREPROCESSING):
        unknown_keys = set(e.preprocessing) - set(PREPROCESSING)
        raise ValueError(f"catalog entry {name}: unknown preprocessing keys {unknown_keys}")
    if not name.startswith(e.model + "."):
        raise ValueError(f"catalog entry {name} is not named after its model {e.model}")
    return e


def entries() -> dict[str, Entry]:
    """Name -> Entry, in catalog order (tests may add entries to this dict)."""
    return _load()


def get(name: str) -> Entry | None:
    return entries().get(name)


def find(pattern: str = "*") -> list[Entry]:
    """Entries whose name matches a shell glob, or contains the text when it has no glob."""
    if not any(c in pattern for c in "*?["):
        pattern = f"*{pattern}*"
    return [e for n, e in entries().items() if fnmatch.fnmatchcase(n, pattern)]


def close_names(name: str, n: int = 3) -> list[str]:
    return difflib.get_close_matches(name, list(entries()), n=n, cutoff=0.6)


def unknown(name: str) -> UserError:
    close = close_names(name)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `convzoo weights` for the catalog"
    return UserError(f"weights {name!r} not found: neither a file nor a catalog name{hint}")
