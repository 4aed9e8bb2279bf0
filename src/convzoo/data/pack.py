"""`convzoo pack`: a dataset SPEC written as WebDataset-format tar shards, the format data/shards.py
reads (see there). Packing shuffles the training split once (seeded), so that shards mix classes;
a half-written folder is never left with an index, and a failed pack removes its shards."""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import warnings
from typing import Any

import numpy as np
import torch

from ..errors import RunFailed, UserError
from ..outputs import atomic_write, describe_os_error
from ..untrusted import open_regular
from . import shards
from .datasets import ImageFileDataset
from .shards import FORMAT, MAX_MEMBER_BYTES, META, is_shard_dir, meta_problem
from .source import open_source

DEFAULT_SHARD_SIZE = "1000"
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?i?b)\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_shard_size(text: str) -> tuple[int | None, int | None]:
    """`--shard-size`: a number of images per shard (`1000`) or a size in bytes (`256MB`, `1GiB`)."""
    text = str(text).strip()
    if text.isdigit() and int(text) > 0:
        return int(text), None
    m = _SIZE.match(text)
    if m and float(m.group(1)) > 0:
        return None, int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    raise UserError(f"--shard-size {text!r}: give images per shard (e.g. 1000) or bytes (e.g. 256MB, 1GiB)")


# ---- writing --------------------------------------------------------------------------------------
class _Encoded(torch.utils.data.Dataset):
    """Source item i -> (i, ext, bytes, label): file bytes as they are, or pixels as PNG."""

    def __init__(self, dataset):
        self.dataset, self.files = dataset, isinstance(dataset, ImageFileDataset)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        """(i, ext, bytes, label), or (i, None, reason, label) for a file that cannot be read
        (skipped and reported by `pack`, as training does)."""
        if self.files:
            path, label = self.dataset.samples[i]
            ext = os.path.splitext(path)[1].lower().lstrip(".") or "img"
            try:
                with open_regular(path) as f:  # the scan kept links inside the tree only
                    return i, ext, f.read(MAX_MEMBER_BYTES + 1), int(label)
            except OSError as e:
                return i, None, f"{path} ({e.strerror or e})", int(label)
        image, label = self.dataset[i]
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return i, "png", buf.getvalue(), int(label)


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0  # fixed metadata: same bytes every time
    tar.addfile(info, io.BytesIO(data))


class _ShardWriter:
    def __init__(self, out: str, split: str, max_count: int | None, max_bytes: int | None, written: list):
        self.out, self.split, self.max_count, self.max_bytes = out, split, max_count, max_bytes
        self.shards: list[dict] = []
        self.tar: tarfile.TarFile | None = None
        self.tmp = os.path.join(out, f"{split}-000000.tar.tmp")
        self.written = written  # names of the finished shards

    def _open(self):
        name = f"{self.split}-{len(self.shards):06d}.tar"
        self.tmp = os.path.join(self.out, name + ".tmp")
        self.tar = tarfile.open(self.tmp, "w", format=tarfile.USTAR_FORMAT)
        self.shards.append({"name": name, "count": 0, "bytes": 0})

    def _close(self):
        if self.tar is not None:
            self.tar.close()
            os.replace(self.tmp, os.path.join(self.out, self.shards[-1]["name"]))
            self.written.append(self.shards[-1]["name"])
            self.tar = None

    def write(self, key: str, ext: str, data: bytes, label: int) -> None:
        cur = self.shards[-1] if self.tar is not None else None
        if (
            cur is None
            or (self.max_count and cur["count"] >= self.max_count)
            or (self.max_bytes and cur["count"] and cur["bytes"] + len(data) > self.max_bytes)
        ):
            self._close()
            self._open()
            cur = self.shards[-1]
        assert self.tar is not None  # _open made it
        _add_member(self.tar, f"{key}.{ext}", data)
        _add_member(self.tar, f"{key}.cls", str(label).encode())
        cur["count"] += 1
        cur["bytes"] += len(data)

    def close(self) -> list[dict]:
        self._close()
        return self.shards

    def abort(self) -> None:
        """After a failure: no half-written shard (.tmp) is left behind, even when closing the tar
        fails again (a full disk refuses its closing blocks too)."""
        if self.tar is not None:
            tar, self.tar = self.tar, None
            try:
                tar.close()
            except (OSError, tarfile.TarError):
                tar.fileobj.close()  # the file tarfile opened
            finally:
                if os.path.exists(self.tmp):
                    os.remove(self.tmp)


def _identity(item):
    return item


def pack(
    spec: str,
    out: str,
    shard_size: str = DEFAULT_SHARD_SIZE,
    splits=None,
    seed: int = 0,
    shuffle: bool = True,
    workers: int = 0,
    progress: bool = True,
    val_fraction: float | None = None,
    val_split_name: str | None = None,
) -> dict:
    """Write the splits of dataset `spec` as tar shards in `out`; returns the metadata written.

    The training split (the first of the dataset's default splits) is shuffled with `seed`
    unless `shuffle` is False; other splits keep their order. The splits are those every command
    sees (data/source.py): a single class-folder tree is split with `val_fraction` and `seed`.
    """
    max_count, max_bytes = parse_shard_size(shard_size)
    source = open_source(spec, val_split_name, val_fraction, seed)
    if source.kind == "shards":
        raise UserError(f"{spec} is already packed")
    if source.layout == "flat":
        source.dataset()  # the UserError that says how to label the images
    defaults = (source.train_split or "train", source.val_split or "val")  # what shards:DIR reads
    splits = list(splits or source.splits)
    os.makedirs(out, exist_ok=True)
    if is_shard_dir(out) or any(n.endswith(".tar") for n in os.listdir(out)):
        raise UserError(f"--out {out} already holds shards: choose an empty folder")
    meta: dict[str, Any] = {"format": FORMAT, "source": spec, "default_splits": list(defaults), "splits": {}}
    written: list[str] = []  # removed again when pack fails: shards without an index are of no use
    try:
        _pack_splits(
            source,
            splits,
            defaults,
            out,
            meta,
            written,
            max_count,
            max_bytes,
            seed,
            shuffle,
            workers,
            progress,
        )
        problem = meta_problem(meta, out)  # what read_meta will check: never write an unreadable index
        if problem:
            raise UserError(f"pack: the shard index would be refused by its reader: {problem}")
        atomic_write(os.path.join(out, META), lambda f: f.write(json.dumps(meta, indent=1).encode()))
    except BaseException:
        for name in written:
            if os.path.exists(os.path.join(out, name)):
                os.remove(os.path.join(out, name))
        raise
    return meta


def _pack_splits(
    source, splits, defaults, out, meta, written, max_count, max_bytes, seed, shuffle, workers, progress
):
    for split in splits:
        ds = source.dataset(split)
        if len(ds.classes) > shards.MAX_CLASSES:  # the reader's rule, before any shard is written
            raise UserError(
                f"pack {split}: {len(ds.classes):,} classes, more than the {shards.MAX_CLASSES:,} a model "
                f"can have (and a shard index may hold)"
            )
        meta.update(classes=list(ds.classes), label_set=ds.label_set, native_size=ds.native_size)
        order = list(range(len(ds)))
        if shuffle and split == defaults[0]:
            order = np.random.default_rng([seed, 7]).permutation(len(ds)).tolist()
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(_Encoded(ds), order),
            batch_size=None,
            num_workers=workers,
            collate_fn=_identity,
        )
        writer = _ShardWriter(out, split, max_count, max_bytes, written)
        split_shards, skipped = _write_split(loader, writer, len(ds), progress)
        meta["splits"][split] = {
            "count": sum(s["count"] for s in split_shards),
            "shards": split_shards,
            "skipped": skipped,
        }


def _write_split(loader, writer: _ShardWriter, n: int, progress: bool) -> tuple[list[dict], int]:
    """Every readable item of `loader` into `writer`'s shards; unreadable files are named in a
    warning and counted. Any failure removes the shard being written."""
    from tqdm import tqdm

    width, skipped = max(8, len(str(n - 1))), []
    try:
        for i, ext, data, label in tqdm(
            loader, desc=f"pack {writer.split}", unit="img", disable=not progress or None, leave=False
        ):
            if ext is None or len(data) > MAX_MEMBER_BYTES:
                skipped.append(data if ext is None else f"item {i} (over {MAX_MEMBER_BYTES:,} bytes)")
                continue
            writer.write(f"{i:0{width}d}", ext, data, label)
        shards = writer.close()
    except BaseException as e:
        writer.abort()
        if isinstance(e, OSError):  # a full disk, a read-only folder: one line, not a traceback
            raise RunFailed(
                f"pack: {describe_os_error(e, writer.tmp, kept='the shards written so far are removed')}"
            ) from None
        raise
    if skipped:
        warnings.warn(
            f"pack {writer.split}: skipped {len(skipped)} unreadable files: "
            f"{'; '.join(skipped[:3])}{' ...' if len(skipped) > 3 else ''}",
            stacklevel=2,
        )
    return shards, len(skipped)
