"""Damage and hostile values in files and settings a user hands convzoo: refused in one line
(UserError, exit 2) or repaired, never accepted silently and never a traceback.

Cheap on purpose: the one training run is the tiny test model for one epoch on 16 images.
"""

import json
import os
import signal

import pytest

from convzoo.errors import UserError
from helpers import one_line


# ---- damage accepted silently -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory, tiny_models_one_thread):
    from convzoo.recipes import resolve
    from convzoo.training.train import fit

    out = tmp_path_factory.mktemp("run")
    flags = {"epochs": 1, "workers": 0, "batch_size": 8}
    sets = ["data.max_train_images=16", "data.max_val_images=8"]
    fit(resolve("tiny_test", "demo", flags, sets), str(out))
    return out


def test_a_flipped_byte_in_the_checkpoint_is_refused(one_epoch, tmp_path):
    """torch.load reads a flipped bit of a tensor as a different number; the zip's CRC-32 of the
    record catches it."""
    import zipfile

    from convzoo.training.checkpoint import load_checkpoint

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
    from convzoo.data.pack import pack
    from helpers import synthetic_folder

    out = tmp_path / "packed"
    pack(str(synthetic_folder(tmp_path / "d")), str(out), shard_size="3", progress=False)
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
    signal.alarm(20)  # without the check, open() on the FIFO blocks forever
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


def test_a_fifo_in_place_of_the_shard_index_is_one_line(tmp_path):
    from convzoo.data import shards

    os.mkfifo(tmp_path / shards.META)

    def hung(signum, frame):
        raise TimeoutError("blocked opening the shard index")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)  # without the check, open() blocks forever
    try:
        with pytest.raises(UserError, match="is not a regular file") as e:
            shards.read_meta(str(tmp_path))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert one_line(e.value)


# ---- counts bounded by what the machine and the input can use -----------------------------------------
def test_more_loader_workers_than_the_machine_can_use_are_one_line(monkeypatch):
    """--workers 1000 would start hundreds of processes that never finish: refused before any starts
    (make_loader: train, eval, features; eval and pack check the flag itself)."""
    from convzoo.engine import loaders
    from convzoo.inference.evaluation import EvalJob, evaluate_weights

    with pytest.raises(UserError, match="--workers 1000 is more than this machine can use") as e:
        loaders.make_loader(list(range(8)), 4, 1000, shuffle=False)
    assert one_line(e.value)
    with pytest.raises(UserError, match="--workers 1000"):
        evaluate_weights(EvalJob("resnet20_cifar", "no-such.safetensors", "synthetic", workers=1000))
    loaders.make_loader(list(range(8)), 4, 2, shuffle=False)  # a sensible count is fine
    with pytest.raises(UserError, match="--workers must be 0 .* or more, got -1") as e:
        loaders.check_workers(-1)
    assert one_line(e.value)


def test_a_weightspec_whose_resize_is_smaller_than_its_crop_is_refused_when_read():
    """A spec whose eval transform could not be built is refused when it is read, in one line."""
    from convzoo.weights import WeightSpec

    spec = {"model": "resnet20_cifar", "num_classes": 10, "input_size": 32}
    assert WeightSpec.from_json(json.dumps({**spec, "crop_size": 64, "resize_size": 64})).resize_size == 64
    for bad in ({"crop_size": 64, "resize_size": 36}, {"resize_size": 31}):
        with pytest.raises(UserError, match="resize_size .* is smaller than its crop") as e:
            WeightSpec.from_json(json.dumps({**spec, **bad}))
        assert one_line(e.value)


def test_an_input_size_that_cannot_fit_in_memory_is_one_line():
    """eval --input-size 4096 needs more memory than the machine has: the batch (64 images of 3 x 4096^2
    floats, 12.9 GB) and its activations are estimated before anything is loaded."""
    from convzoo.inference.evaluation import EvalJob, evaluate_weights

    with pytest.raises(
        UserError, match=r"--input-size 4096 with --batch-size 64 needs about \d+\.\d GiB"
    ) as e:
        evaluate_weights(EvalJob("resnet20_cifar", "no-such.safetensors", "synthetic", input_size=4096))
    assert one_line(e.value)


# ---- one line, not a traceback ------------------------------------------------------------------------
DEEP = "[" * 1200 + "]" * 1200  # the parsers recurse once per level: RecursionError without a check


def _deep_spec(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "deep.safetensors"
    spec = '{"model": "tiny_test", "num_classes": 2, "extra": ' + DEEP + "}"
    save_file({"w": __import__("torch").zeros(1)}, str(path), metadata={"convzoo": spec})
    from convzoo.weights import read_spec

    return lambda: read_spec(str(path))


def _deep_index(tmp_path):
    from convzoo.data import shards

    (tmp_path / shards.META).write_text(DEEP)
    return lambda: shards.read_meta(str(tmp_path))


def _deep_recipe(tmp_path):
    from convzoo.recipes import resolve

    (tmp_path / "r.yaml").write_text("epochs: " + DEEP + "\n")
    return lambda: resolve("tiny_test", str(tmp_path / "r.yaml"), {}, [])


def _deep_set(tmp_path):
    from convzoo.recipes import resolve

    return lambda: resolve("tiny_test", "demo", {}, ["ema=" + DEEP])


@pytest.mark.parametrize(
    "make",
    [_deep_spec, _deep_index, _deep_recipe, _deep_set],
    ids=["weightspec", "shard-index", "recipe", "set"],
)
def test_deeply_nested_json_and_yaml_are_one_line(tmp_path, make):
    read = make(tmp_path)
    with pytest.raises(UserError, match="nested more than 32 levels deep") as e:
        read()
    assert one_line(e.value)


def test_a_lock_file_with_an_impossible_pid_is_one_line(tmp_path):
    """pid 10^23 in train.lock: os.kill raised OverflowError."""
    import socket

    from convzoo.training.runfolder import RunLock

    (tmp_path / "train.lock").write_text(json.dumps({"pid": 10**23, "host": socket.gethostname()}))
    with pytest.raises(UserError, match="unreadable; delete it") as e:
        RunLock(str(tmp_path)).acquire()
    assert one_line(e.value)


@pytest.mark.parametrize("seed", ["-1", "1.0e+26", "99999999999999999999999"])
def test_a_seed_numpy_cannot_take_is_one_line(seed):
    from convzoo.recipes import resolve

    with pytest.raises(UserError, match=r"^seed must be an integer in 0\.\.4294967295") as e:
        resolve("tiny_test", "demo", {}, [f"seed={seed}"])
    assert one_line(e.value)


def test_an_unusable_cache_folder_is_one_line(tmp_path, monkeypatch):
    """CONVZOO_CACHE naming a file, or a read-only folder (a read-only tmpfs: root writes
    anywhere else), when catalog weights must be fetched."""
    import subprocess

    from convzoo.hub import resolve_weights

    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("CONVZOO_CACHE", str(tmp_path / "afile"))
    monkeypatch.setenv("CONVZOO_OFFLINE", "1")
    with pytest.raises(
        UserError, match="CONVZOO_CACHE=.*afile: cannot make .* point CONVZOO_CACHE at a writable folder"
    ) as e:
        resolve_weights("resnet20_cifar.akamaster_cifar10")
    assert one_line(e.value)
    ro = tmp_path / "ro"
    ro.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)], capture_output=True, text=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {r.stderr.strip() or r.returncode}")
    try:
        monkeypatch.setenv("CONVZOO_CACHE", str(ro))
        with pytest.raises(UserError, match="CONVZOO_CACHE=.*ro: cannot make .*Read-only file system") as e:
            resolve_weights("resnet20_cifar.akamaster_cifar10")
        assert one_line(e.value)
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)


def test_more_accumulation_steps_than_batches_is_one_line(tmp_path, tiny_models_one_thread):
    """--accum-steps 1000000 on 4 batches an epoch trained to "done" on one step per epoch of a
    claimed 8,000,000-image batch."""
    from convzoo.recipes import resolve
    from convzoo.training.train import fit

    flags = {"epochs": 1, "workers": 0, "batch_size": 8, "accum_steps": 1_000_000}
    cfg = resolve("tiny_test", "demo", flags, ["data.max_train_images=32"])
    with pytest.raises(UserError, match="accum_steps 1000000 is more than the 4 batches of an epoch") as e:
        fit(cfg, str(tmp_path / "run"))
    assert one_line(e.value)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


# ---- writers validate with their readers' rules ---------------------------------------------------------
def test_weights_their_reader_would_refuse_are_not_written(tmp_path):
    """convert --mean 3e38 wrote a file whose WeightSpec every reader refused."""
    import torch

    from convzoo.weights import WeightSpec, save_weights

    spec = WeightSpec(model="tiny_test", num_classes=2, mean=(3e38, 3e38, 3e38), pixel_scale=255.0)
    with pytest.raises(UserError, match=r"w.safetensors not written: WeightSpec mean must be") as e:
        save_weights(str(tmp_path / "w.safetensors"), {"w": torch.zeros(1)}, spec)
    assert one_line(e.value) and not (tmp_path / "w.safetensors").exists()


def test_pack_refuses_more_classes_than_its_reader_takes(tmp_path, monkeypatch):
    """pack wrote an index of 2 million classes that nothing could train on: the reader's class
    bound (that of a WeightSpec, 10^6; lowered to 1 here so a 2-class folder shows it) is checked
    before any shard is written, and by read_meta."""
    from convzoo.data import shards
    from convzoo.data.pack import pack
    from helpers import synthetic_folder

    src = synthetic_folder(tmp_path / "d")
    pack(str(src), str(tmp_path / "ok"), progress=False)
    monkeypatch.setattr(shards, "MAX_CLASSES", 1, raising=False)
    with pytest.raises(UserError, match="2 classes, more than the 1 a model can have") as e:
        pack(str(src), str(tmp_path / "packed"), progress=False)
    assert one_line(e.value)
    assert not list((tmp_path / "packed").glob("*.tar"))
    with pytest.raises(UserError, match="2 classes, more than the 1 a model can have"):
        shards.read_meta(str(tmp_path / "ok"))
