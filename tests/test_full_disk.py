"""A real full disk: a small tmpfs mounted for the test (root only; skipped with the reason
otherwise). Every writer's failure - torch's zip writer (a RuntimeError, no errno), safetensors
(SafetensorError), plain writes (OSError), tar shards - ends in one line (RunFailed, exit 1),
leaves no temporary file and keeps the previous file; a run stopped so resumes once there is room.
"""

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convzoo.errors import RunFailed
from helpers import one_line

SETS = ["data.max_train_images=32", "data.max_val_images=16"]


@pytest.fixture
def disk(tmp_path):
    """A 1 MiB tmpfs at tmp_path/disk, unmounted afterwards."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip() or r.returncode}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(mnt: Path, leave: int) -> Path:
    """A filler file that leaves about `leave` bytes free on the tmpfs."""
    st = os.statvfs(mnt)
    free = st.f_bavail * st.f_frsize
    filler = mnt / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".tmp" in p.name]


def _checkpoint(path):
    from convzoo.training.checkpoint import save_checkpoint

    save_checkpoint(path, {"x": torch.randn(100_000)})


def _weights(path):
    from convzoo.weights import WeightSpec, save_weights

    save_weights(
        path, {"x": torch.randn(100_000)}, WeightSpec(model="tiny_test", num_classes=1, input_size=32)
    )


def _text(path):
    from convzoo.training.checkpoint import atomic_text

    atomic_text(path, "x" * 400_000)


@pytest.mark.parametrize("write", [_checkpoint, _weights, _text], ids=["torch-zip", "safetensors", "text"])
def test_each_writer_on_a_full_disk_is_one_line_and_keeps_the_file(disk, write):
    target = disk / "file"
    target.write_bytes(b"previous")
    fill(disk, 64 << 10)
    with pytest.raises(
        RunFailed, match=f"no space left on device writing {target}; the previous file is kept"
    ) as e:
        write(str(target))
    assert one_line(e.value)
    assert target.read_bytes() == b"previous" and leftovers(disk) == []


def config(epochs):
    from convzoo.recipes import resolve

    flags = {"epochs": epochs, "workers": 0, "batch_size": 8}
    return resolve("tiny_test", "demo", flags, SETS)


def test_training_onto_a_full_disk_stops_in_one_line_and_resumes(disk, tmp_path, tiny_models_one_thread):
    """The disk fills while epoch 2's checkpoint is written (torch's zip writer fails first: it is
    the largest file): one line, exit 1, epoch 1's checkpoint intact; with room again, --resume
    finishes the run."""
    from convzoo.training.checkpoint import load_checkpoint
    from convzoo.training.train import fit

    run = disk / "run"
    fit(config(1), str(run))
    size = (run / "checkpoint.pt").stat().st_size
    filler = fill(disk, size // 2)
    with pytest.raises(RunFailed, match="no space left on device writing .*checkpoint.pt") as e:
        fit(config(2), str(run), resume=True)
    assert one_line(e.value) and leftovers(run) == []
    assert load_checkpoint(str(run / "checkpoint.pt"))["epoch"] == 1
    filler.unlink()
    summary = fit(config(2), str(run), resume=True)
    assert summary["epochs"] == 2 and summary["finished"]


def test_pack_onto_a_full_disk_leaves_no_shard(disk, tmp_path):
    """pack runs out of room in the middle of the training split: one line, and neither the
    half-written `*.tar.tmp` nor the finished shards (useless without their index) are left."""
    from convzoo.data.pack import pack

    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("val", 4)):
        for c in ("a", "b"):
            (tmp_path / "src" / split / c).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)  # noise: ~12 KB as PNG
                Image.fromarray(pixels).save(tmp_path / "src" / split / c / f"{i}.png")
    fill(disk, 300 << 10)
    out = disk / "packed"
    with pytest.raises(RunFailed, match=r"pack: no space left on device writing .*\.tar\.tmp") as e:
        pack(str(tmp_path / "src"), str(out), shard_size="8", progress=False)
    assert one_line(e.value)
    assert sorted(p.name for p in out.iterdir()) == []
    shutil.rmtree(out)
