"""Data a classifier cannot learn from, said before training: one class is refused (one line,
exit 2, no run folder left behind); tiny and strongly imbalanced classes get one warning naming
them; a run on a few classes ends with each class's accuracy. `convzoo demo` never deletes an
earlier demo. Tiny models and a few 32 px images: each test runs in a few seconds."""

import json
from pathlib import Path

import pytest

from helpers import image_folders, one_line, run

pytestmark = pytest.mark.usefixtures("tiny_models_one_thread")
FEW = ["--workers", "0", "--batch-size", "16", "--recipe", "demo", "--epochs", "1"]


def test_one_class_is_refused_and_leaves_no_folder(tmp_path, capsys):
    data = image_folders(tmp_path / "photos", {"cat": 6})
    out = tmp_path / "runs" / "one"
    rc, _, err = run(capsys, "train", "tiny_test", "--data", data, "--out", out, "--val-split", "0.3", *FEW)
    assert rc == 2 and "1 class (cat)" in err and "at least two" in err, err
    assert one_line(err) and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # the failed run took the folders it made with it


def test_failed_run_keeps_a_folder_it_did_not_make(tmp_path, capsys):
    data = image_folders(tmp_path / "photos", {"cat": 6})
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("the user's own file")
    rc, _, _ = run(capsys, "train", "tiny_test", "--data", data, "--out", out, "--val-split", "0.3", *FEW)
    assert rc == 2 and (out / "notes.txt").read_text() == "the user's own file"


def test_tiny_and_imbalanced_classes_warned_once_and_per_class_accuracy(tmp_path, capsys):
    data = image_folders(tmp_path / "photos", {"cat": 80, "dog": 4, "owl": 6})
    out = tmp_path / "run"
    rc, _, err = run(capsys, "train", "tiny_test", "--data", data, "--out", out, "--val-split", "0.2", *FEW)
    assert rc == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, err
    # dog: 4 images, 1 of them to validation -> 3 to train (tiny); owl: 5 train to cat's 64 (imbalanced)
    assert "under 5 training images in dog (3)" in warnings[0]
    assert "under 1/10 of the largest class (64) in owl (5)" in warnings[0]
    assert "cat" not in warnings[0]
    summary = json.loads((out / "summary.json").read_text())
    per_class = summary["per_class"]
    assert list(per_class) == ["cat", "dog", "owl"]
    assert [n for _, n in per_class.values()] == [16, 1, 1]  # the validation images of each class
    assert sum(h for h, _ in per_class.values()) == round(summary["top1"] * 18 / 100)
    line = next(x for x in err.splitlines() if x.startswith("per class (val top-1): "))
    assert all(f"{c} " in line for c in per_class) and "/16)" in line, line
    assert "top5" not in next(x for x in err.splitlines() if x.startswith("done:"))  # 3 classes


def test_balanced_data_gets_no_warning(tmp_path, capsys):
    data = image_folders(tmp_path / "photos", {"cat": 8, "dog": 8})
    rc, _, err = run(
        capsys, "train", "tiny_test", "--data", data, "--out", tmp_path / "r", "--val-split", "0.25", *FEW
    )
    assert rc == 0 and "warning:" not in err, err


def test_demo_keeps_an_earlier_demo(tmp_path, monkeypatch):
    from convzoo.commands import demo

    monkeypatch.chdir(tmp_path)
    base = Path("runs") / "demo"
    assert demo.fresh_folder(str(base)) == str(base)  # none yet: the usual place
    base.mkdir(parents=True)
    (base / "best.safetensors").write_bytes(b"an earlier run")
    assert demo.fresh_folder(str(base)) == f"{base}-2"
    Path(f"{base}-2").mkdir()
    assert demo.fresh_folder(str(base)) == f"{base}-3"
    assert (base / "best.safetensors").read_bytes() == b"an earlier run"
