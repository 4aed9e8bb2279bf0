"""Every reader of a file a user hands us turns damaged bytes into one UserError, never a traceback.

A single random draw can miss the bytes that break a reader (an exception it does not expect,
such as an IndexError from deep inside an unpickler), and a failure it finds cannot be repeated.
These tests use a fixed, seeded set of damaged files per reader instead: pure noise of several
lengths, the valid file cut at many points, and the valid file with a few bytes overwritten.
Each case must either load or raise UserError (BadImage is one); anything else fails the test and
names the seed, so a failure is reproducible.
"""

from __future__ import annotations

import gzip
import io
import pickle
import random
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convzoo import interop, weights
from convzoo.data import cifar_pickle, datasets, images, matfile, shards
from convzoo.errors import UserError
from convzoo.training import checkpoint
from helpers import one_line

FIXTURES = Path(__file__).parent / "fixtures"


def _torch_bytes(obj, legacy=False) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


def _state():
    g = torch.Generator().manual_seed(0)
    return {"conv.weight": torch.randn(4, 3, 3, 3, generator=g), "fc.bias": torch.zeros(10)}


def _safetensors_bytes(tmp_path) -> bytes:
    p = tmp_path / "valid.safetensors"
    weights.save_weights(str(p), _state(), weights.WeightSpec(model="resnet18", num_classes=10))
    return p.read_bytes()


def _tar_bytes() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for i in range(3):
            for ext, data in (("jpg", b"\xff\xd8" + bytes(60)), ("cls", str(i).encode())):
                info = tarfile.TarInfo(f"{i:06d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _image_bytes(fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def _idx_bytes() -> bytes:
    body = np.arange(2 * 4 * 4, dtype=np.uint8).tobytes()
    return gzip.compress(bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (2, 4, 4)) + body)


# reader name -> (file suffix, valid bytes maker, reader)
def _checkpoint() -> dict:
    """A whole checkpoint.pt (every field `load_checkpoint` requires), small."""
    return {
        "format": "convzoo-checkpoint-1",
        "config": {"model": "tiny_test", "data_spec": "synthetic"},
        "epoch": 1,
        "step": 4,
        "batch": None,
        "model": _state(),
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]},
        "schedule": {},
        "scaler": {},
        "ema": None,
        "history": [{"epoch": 1, "val_top1": 10.0}],
        "best": {},
        "rng": {"python": [3, 1, 4], "numpy": [1, 5, 9], "torch": torch.zeros(4, dtype=torch.uint8)},
    }


READERS = {
    "convert .pth (zip)": (".pth", lambda t: _torch_bytes(_state()), interop.load_checkpoint),
    "convert .pth (legacy pickle)": (
        ".pth",
        lambda t: _torch_bytes(_state(), legacy=True),
        interop.load_checkpoint,
    ),
    "convert .safetensors": (".safetensors", _safetensors_bytes, interop.load_checkpoint),
    "--weights spec": (".safetensors", _safetensors_bytes, weights.read_spec),
    "--resume checkpoint": (
        ".pt",
        lambda t: _torch_bytes(_checkpoint(), legacy=True),
        checkpoint.load_checkpoint,
    ),
    "CIFAR-10 batch": (
        "",
        lambda t: pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}, protocol=4),
        cifar_pickle.load_cifar_batch,
    ),
    "ImageNet devkit meta.mat": (
        ".mat",
        lambda t: (FIXTURES / "meta_compressed.mat").read_bytes(),
        matfile.read_ilsvrc_meta,
    ),
    "idx (MNIST) file": (".gz", lambda t: _idx_bytes(), datasets.read_idx),
    "shard tar": (".tar", lambda t: _tar_bytes(), lambda p: list(shards._read_tar(p, 0, 3))),
    "JPEG image": (".jpg", lambda t: _image_bytes("JPEG"), images.load_image),
    "PNG image": (".png", lambda t: _image_bytes("PNG"), images.load_image),
}


def damaged(valid: bytes, n_noise=48, n_cuts=32, n_flips=48):
    """(label, bytes) for a fixed, seeded set of damaged versions of `valid`."""
    for seed in range(n_noise):
        rng = random.Random(seed)
        yield f"noise seed={seed}", rng.randbytes(rng.choice([1, 7, 64, 500, 4096]))
    for i in range(n_cuts):
        cut = len(valid) * i // n_cuts
        yield f"cut at {cut}/{len(valid)}", valid[:cut]
    for seed in range(n_flips):
        rng = random.Random(1000 + seed)
        b = bytearray(valid)
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        yield f"flips seed={1000 + seed}", bytes(b)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # random bytes name random protocols
@pytest.mark.parametrize("reader", list(READERS))
def test_damaged_file_is_one_user_error(reader, tmp_path):
    suffix, make_valid, read = READERS[reader]
    valid = make_valid(tmp_path)
    path = tmp_path / f"file{suffix}"
    path.write_bytes(valid)
    read(str(path))  # the valid file itself loads: the cases below test damage, not a bad seed file
    outcomes = {"loaded": 0, "refused": 0}
    for label, data in damaged(valid):
        path.write_bytes(data)
        try:
            read(str(path))
            outcomes["loaded"] += 1
        except UserError as e:
            assert one_line(str(e)), f"{reader}, {label}: message {str(e)!r}"
            outcomes["refused"] += 1
        except Exception as e:
            pytest.fail(f"{reader}, {label}: {type(e).__name__}: {e}")
    # all the noise and most cuts must be refused; a test where everything loads tests nothing
    assert outcomes["refused"] >= 24, outcomes
