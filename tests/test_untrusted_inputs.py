"""Damage and hostile values in files and settings a user hands convzoo: refused in one line
(UserError, exit 2) or repaired, never accepted silently and never a traceback.

Cheap on purpose: the one training run is the tiny test model for one epoch on 16 images.
"""

import json
import os
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from convzoo.errors import UserError  # noqa: E402


def one_line(e) -> bool:
    return "\n" not in str(e)


# ---- damage accepted silently -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory, tiny_models_one_thread):
    from convzoo.engine.train import fit
    from convzoo.recipes import resolve

    out = tmp_path_factory.mktemp("run")
    flags = {"epochs": 1, "workers": 0, "batch_size": 8}
    sets = ["data.max_train_images=16", "data.max_val_images=8"]
    fit(
        {"model": "tiny_test", "data_spec": "synthetic", **resolve("tiny_test", "demo", flags, sets)},
        str(out),
    )
    return out


def test_a_flipped_byte_in_the_checkpoint_is_refused(one_epoch, tmp_path):
    """torch.load reads a flipped bit of a tensor as a different number; the zip's CRC-32 of the
    record catches it."""
    import zipfile

    from convzoo.engine.checkpoint import load_checkpoint

    blob = bytearray((one_epoch / "checkpoint.pt").read_bytes())
    with zipfile.ZipFile(one_epoch / "checkpoint.pt") as z:
        record = max(z.infolist(), key=lambda i: i.file_size)  # the largest tensor
    name_len, extra_len = (
        int.from_bytes(blob[record.header_offset + 26 : record.header_offset + 28], "little"),
        int.from_bytes(blob[record.header_offset + 28 : record.header_offset + 30], "little"),
    )
    blob[record.header_offset + 30 + name_len + extra_len + 9] ^= 0x04
    (tmp_path / "checkpoint.pt").write_bytes(bytes(blob))
    with pytest.raises(UserError, match=f"record {record.filename} does not match its CRC-32") as e:
        load_checkpoint(str(tmp_path / "checkpoint.pt"))
    assert one_line(e.value)
    assert load_checkpoint(str(one_epoch / "checkpoint.pt"))["epoch"] == 1


@pytest.fixture
def packed(tmp_path):
    """A packed 2-class folder: 8 training images in 3 shards of at most 3 (3, 3, 2)."""
    from convzoo.data import shards
    from tinynets import synthetic_folder

    out = tmp_path / "packed"
    shards.pack(str(synthetic_folder(tmp_path / "d")), str(out), shard_size="3", progress=False)
    return out


def test_a_shard_index_counting_more_images_than_its_shards_hold_is_refused(packed):
    """10^12 images claimed by an index whose shards hold 8: the epoch's length (and with it the
    learning-rate schedule) would follow the claim."""
    from convzoo.data import shards
    from convzoo.data.datasets import build_dataset

    meta = json.loads((packed / shards.META).read_text())
    meta["splits"]["train"]["shards"][0]["count"] = 10**12
    meta["splits"]["train"]["count"] = sum(s["count"] for s in meta["splits"]["train"]["shards"])
    (packed / shards.META).write_text(json.dumps(meta))
    with pytest.raises(UserError, match="too small for the 1,000,000,000,000 samples") as e:
        build_dataset(f"shards:{packed}", "train")
    assert one_line(e.value)


@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "fewer-samples"])
def test_a_shard_that_is_not_what_its_index_says_is_refused(packed, kind):
    """A shard linked to /dev/zero (read as an empty tar: its images vanished without a word), a
    FIFO (open blocked forever) or a shard replaced by one with fewer samples: one line."""
    from convzoo.data import shards
    from convzoo.data.datasets import build_dataset

    meta = json.loads((packed / shards.META).read_text())
    first, second = (packed / s["name"] for s in meta["splits"]["train"]["shards"][:2])
    first.unlink()
    if kind == "dev-zero":
        first.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(first)
    else:
        import tarfile

        with tarfile.open(second) as src, tarfile.open(first, "w", format=tarfile.USTAR_FORMAT) as dst:
            for member in src.getmembers()[:2]:  # the first sample only: image and .cls
                dst.addfile(member, src.extractfile(member))

    def hung(signum, frame):
        raise TimeoutError("blocked reading the shards")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)  # the code before this check blocked in open() on the FIFO
    try:
        with pytest.raises(UserError) as e:
            list(build_dataset(f"shards:{packed}", "train", transform=None))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert one_line(e.value)
    assert first.name in str(e.value)
    message = {
        "dev-zero": "is not a regular file",
        "fifo": "is not a regular file",
        "fewer-samples": "holds 1 samples, its index counts at least 3",
    }[kind]
    assert message in str(e.value), str(e.value)


# ---- counts bounded by what the machine and the input can use -----------------------------------------
def test_more_loader_workers_than_the_machine_can_use_are_one_line(monkeypatch):
    """--workers 1000 started hundreds of processes that never finished: refused before any starts
    (make_loader: train, eval, features; eval and pack check the flag itself)."""
    from convzoo.commands.eval import evaluate_weights
    from convzoo.engine import loaders

    with pytest.raises(UserError, match="--workers 1000 is more than this machine can use") as e:
        loaders.make_loader(list(range(8)), 4, 1000, shuffle=False)
    assert one_line(e.value)
    with pytest.raises(UserError, match="--workers 1000"):
        evaluate_weights("resnet20_cifar", "no-such.safetensors", "synthetic", workers=1000)
    loaders.make_loader(list(range(8)), 4, 2, shuffle=False)  # a sensible count is fine


def test_an_input_size_that_cannot_fit_in_memory_is_one_line():
    """eval --input-size 4096 took 8.9 GB, then a traceback: the batch (64 images of 3 x 4096^2
    floats, 12.9 GB) and its activations are estimated before anything is loaded."""
    from convzoo.commands.eval import evaluate_weights

    with pytest.raises(
        UserError, match=r"--input-size 4096 with --batch-size 64 needs about \d+\.\d GiB"
    ) as e:
        evaluate_weights("resnet20_cifar", "no-such.safetensors", "synthetic", input_size=4096)
    assert one_line(e.value)
