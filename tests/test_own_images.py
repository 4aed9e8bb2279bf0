"""The README's own-images path on a small real folder: fine-tuning pretrained weights (the
README's first command) on 3 classes of real CIFAR-10 photos learns well above chance in a few
epochs, with the head reset and the images normalised as the weights were trained.

The pretrained weights are a stand-in for a catalog download (the tests run offline):
tests/fixtures/resnet20_cifar-7classes.safetensors, resnet20_cifar trained by convzoo on 4,410
images of the 7 *other* CIFAR-10 classes of its training split (how: the .md file beside it), so
nothing of the 3 classes here, nor these photos (from the test split), was seen."""

import json
import shutil
from pathlib import Path

import pytest

from convzoo.cli import main
from helpers import CIFAR10_SMALL

PRETRAINED = Path(__file__).parent / "fixtures" / "resnet20_cifar-7classes.safetensors"
CLASSES = ("airplane", "frog", "truck")


@pytest.fixture
def photos(tmp_path) -> Path:
    """photos/<class>/*.jpg: the 35 fixture images of each of 3 classes, one folder per class."""
    root = tmp_path / "photos"
    for c in CLASSES:
        (root / c).mkdir(parents=True)
        for split in ("train", "test"):
            for f in (CIFAR10_SMALL / split / c).glob("*.jpg"):
                shutil.copy(f, root / c / f.name)
    return root


def test_finetune_command_learns_well_above_chance(photos, tmp_path, capsys):
    """84 training / 21 validation photos, 3 epochs of the README's fine-tuning command: at least
    13 of 21 right (chance: 7; 13 or more by chance has probability 0.004). Measured 76 %."""
    out = tmp_path / "run"
    argv = ["train", "resnet20_cifar", "--data", photos, "--out", out, "--val-split", "0.2"]
    argv += ["--weights", PRETRAINED, "--epochs", "3", "--lr", "0.01", "--head-lr-mult", "10"]
    rc = main([str(a) for a in [*argv, "--batch-size", "16", "--workers", "0", "--threads", "1"]])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "7 classes there, 3 here; re-initialised fc" in err  # the head is reset
    assert "fine-tuning: images normalised as the weights were trained" in err
    assert "schedule: step milestones [82, 123] -> [1.5, 2.25]" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["val_images"] == 21 and summary["num_classes"] == 3
    assert summary["best_top1"] >= 100 * 13 / 21 - 1e-6, err
    assert list(summary["per_class"]) == list(CLASSES)
