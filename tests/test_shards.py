"""`convzoo pack` and `shards:DIR`: WebDataset-format tar shards, streamed across ranks and workers.

Expected values come from the source datasets themselves (the folder's own files and labels, the
synthetic set's own images), never from a previous run of the shard code.
"""

import collections
import os
import tarfile
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from convzoo.cli import main
from convzoo.data.datasets import BrokenImageWarning, build_dataset, default_splits, resolve_spec
from convzoo.data.pack import pack, parse_shard_size
from convzoo.data.shards import META, ShardDataset
from convzoo.errors import UserError
from helpers import run


def _make_folder(root, n_train=(7, 6, 5), n_val=(2, 3, 2), broken=False):
    rng = np.random.default_rng(0)
    for split, counts in (("train", n_train), ("val", n_val)):
        for c, n in enumerate(counts):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(n):
                a = rng.integers(0, 256, (12 + i, 10 + c, 3), dtype=np.uint8)
                ext = "png" if i % 3 == 0 else "jpg"
                Image.fromarray(a).save(d / f"img{i}.{ext}")
    if broken:
        (root / "val" / "class0" / "zz_broken.jpg").write_bytes(b"not a jpeg at all")
    return root


@pytest.fixture()
def folder(tmp_path):
    return _make_folder(tmp_path / "src")


def _folder_records(root, split):
    ds = build_dataset(str(root), split)
    out = []
    for path, label in ds.samples:
        with open(path, "rb") as f:
            out.append((f.read(), label))
    return out


def _stream(root, split, rank=0, world=1, workers=0, batch_size=1, epoch=0, seed=0):
    ds = ShardDataset(str(root), split, decode=False, seed=seed)
    ds.rank, ds.world_size, ds.batch_size = rank, world, batch_size
    ds.set_epoch(epoch)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=list)
    batches = list(loader)
    assert len(batches) == len(loader)  # the loader's length is exact, also with workers
    return [item for b in batches for item in b]


def test_pack_then_stream_reads_the_folders_samples(folder, tmp_path):
    out = tmp_path / "shards"
    assert main(["pack", str(folder), "--out", str(out), "--shard-size", "4"]) == 0
    with tarfile.open(out / "train-000000.tar") as tar:  # WebDataset layout: key.ext then key.cls
        names = tar.getnames()
    assert names[1] == names[0].split(".")[0] + ".cls" and len(names) == 8
    for split in ("train", "val"):
        want = collections.Counter(_folder_records(folder, split))
        got = collections.Counter((data, label) for _, _, data, label in _stream(out, split))
        assert got == want
    assert resolve_spec(str(out)).kind == "shards" and resolve_spec(f"shards:{out}").kind == "shards"
    assert default_splits(f"shards:{out}") == ("train", "val")
    ds = build_dataset(f"shards:{out}", "val")
    assert ds.classes == ["class0", "class1", "class2"] and ds.num_classes == 3 and len(ds) == 7


def test_decoded_images_equal_the_folder_dataset(folder, tmp_path):
    out = tmp_path / "shards"
    pack(str(folder), str(out), "3", progress=False)
    by_bytes = {}
    ref = build_dataset(str(folder), "val")
    for (path, label), item in zip(ref.samples, ref):
        by_bytes[open(path, "rb").read()] = (np.asarray(item[0]), label)
    raw = _stream(out, "val")
    decoded = list(build_dataset(f"shards:{out}", "val"))
    assert len(decoded) == len(raw) == len(ref)
    for (_, _, data, _), (img, label) in zip(raw, decoded):
        want_img, want_label = by_bytes[data]
        assert label == want_label and np.array_equal(np.asarray(img), want_img)


def test_synthetic_packed_losslessly(tmp_path):
    out = tmp_path / "shards"
    pack("synthetic", str(out), "16KB", splits=["val"], progress=False)
    ref = build_dataset("synthetic", "val", size=None)
    got = list(build_dataset(f"shards:{out}", "val"))
    assert len(got) == len(ref) == 1000
    for i in (0, 1, 500, 999):  # val is kept in order; PNG is lossless
        assert got[i][1] == ref.targets[i] and np.array_equal(np.asarray(got[i][0]), np.asarray(ref[i][0]))


@pytest.mark.parametrize("split", ["train", "val"])
def test_two_ranks_two_workers_never_repeat_a_sample(folder, tmp_path, split):
    out = tmp_path / "shards"
    pack(str(folder), str(out), "4", progress=False)
    n = 18 if split == "train" else 7
    per_rank = [
        [key for key, *_ in _stream(out, split, rank=r, world=2, workers=2, batch_size=3, epoch=1)]
        for r in range(2)
    ]
    keys = per_rank[0] + per_rank[1]
    assert len(keys) == len(set(keys))  # nothing read twice
    if split == "train":  # equal share per rank (DDP steps pair up): n // 2 each
        assert [len(k) for k in per_rank] == [n // 2, n // 2]
    else:  # evaluation: every sample exactly once, no padding
        assert sorted(keys) == sorted(key for key, *_ in _stream(out, split)) and len(keys) == n


def test_stream_is_a_function_of_seed_and_epoch(folder, tmp_path):
    out = tmp_path / "shards"
    pack(str(folder), str(out), "2", progress=False)
    a = [k for k, *_ in _stream(out, "train", epoch=3, workers=2, batch_size=2)]
    b = [k for k, *_ in _stream(out, "train", epoch=3, workers=2, batch_size=2)]
    c = [k for k, *_ in _stream(out, "train", epoch=4, workers=2, batch_size=2)]
    assert a == b  # a resumed epoch reads the same stream
    assert a != c and sorted(a) == sorted(c)


def test_take_keeps_the_first_packed_samples(folder, tmp_path):
    out = tmp_path / "shards"
    pack(str(folder), str(out), "4", progress=False)
    packed = []  # packed order, read straight from the tar files
    for i in range(5):
        with tarfile.open(out / f"train-{i:06d}.tar") as tar:
            packed += [n.split(".")[0] for n in tar.getnames() if n.endswith(".cls")]
    ds = ShardDataset(str(out), "train", decode=False, shuffle=False).take(6)
    assert len(ds) == 6 and [key for key, *_ in ds] == packed[:6]


def test_broken_image_is_skipped_with_a_warning(tmp_path):
    src = _make_folder(tmp_path / "src", broken=True)
    out = tmp_path / "shards"
    pack(str(src), str(out), "100", progress=False)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        items = list(build_dataset(str(out), "val"))
    assert sum(item is None for item in items) == 1
    broken = [str(x.message) for x in w if issubclass(x.category, BrokenImageWarning)]
    assert len(broken) == 1 and str(out) in broken[0]  # names the shard folder and the key


def test_bad_input_is_a_user_error(folder, tmp_path, capsys):
    assert parse_shard_size("256MB") == (None, 256 * 10**6) and parse_shard_size("12") == (12, None)
    for bad in ("0", "-3", "12 parsecs", ""):
        with pytest.raises(UserError):
            parse_shard_size(bad)
    out = tmp_path / "shards"
    pack(str(folder), str(out), "100", progress=False)
    rc, _, err = run(capsys, "pack", folder, "--out", out)
    assert rc == 2 and "already holds shards" in err  # refuses to overwrite
    with pytest.raises(UserError, match="no split"):
        build_dataset(str(out), "test")
    os.remove(out / META)
    with pytest.raises(UserError, match="not a packed shard folder"):
        build_dataset(f"shards:{out}", "train")


@pytest.mark.parametrize("workers", [0, 2])
def test_mid_epoch_resume_skips_the_streamed_batches_already_trained(folder, tmp_path, workers):
    from convzoo.training.resilience import skip_batches

    out = tmp_path / "shards"
    pack(str(folder), str(out), "4", progress=False)
    ds = ShardDataset(str(out), "train", decode=False)
    ds.batch_size = 3
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=workers, collate_fn=list)
    full = [[key for key, *_ in b] for b in loader]
    it = iter(loader)
    skip_batches(it, 2, workers)  # what RunGuard does after a mid-epoch checkpoint
    assert [[key for key, *_ in b] for b in it] == full[2:]
