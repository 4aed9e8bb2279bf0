"""Live training curves: a run with the tensorboard extra installed writes TensorBoard event files
as it trains (loss, top-1/top-5, lr, images/s per epoch; the config as text), read back here with
TensorBoard's own reader; metrics.csv and the PNG plots are written as always."""

import csv
from pathlib import Path

import pytest

from convzoo.cli import main
from convzoo.errors import Interrupted

pytest.importorskip("tensorboard")
pytestmark = pytest.mark.usefixtures("tiny_models_one_thread")

ARGS = ["--recipe", "demo", "--workers", "0", "--batch-size", "16"]
ARGS += ["--limit-train", "48", "--limit-val", "32"]


def _read(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_event_files_hold_the_metrics_and_config(tmp_path, capsys, monkeypatch):
    from convzoo.analysis import curves

    monkeypatch.setattr(curves, "BATCH_EVERY", 1)  # a point per batch: 3 batches in each of 2 epochs
    out = tmp_path / "run"
    argv = ["train", "tiny_test", "--data", "synthetic", "--out", str(out), "--epochs", "2", *ARGS]
    assert main(argv) == 0, capsys.readouterr().err
    acc = _read(out / "tensorboard")
    scalars = set(acc.Tags()["scalars"])
    assert {
        "loss/train",
        "loss/val",
        "top1/train",
        "top1/val",
        "top5/val",
        "lr",
        "images_per_second",
    } <= scalars
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    for tag, column in (("loss/val", "val_loss"), ("top1/val", "val_top1"), ("lr", "lr")):
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [1, 2]
        assert [e.value for e in events] == pytest.approx([float(r[column]) for r in rows], rel=1e-4)
    assert all(e.value > 0 for e in acc.Scalars("images_per_second"))
    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "model: tiny_test" in text and "recipe: demo" in text
    batches = _read(out / "tensorboard" / "batches")
    assert [e.step for e in batches.Scalars("loss/train_batch")] == [1, 2, 3, 4, 5, 6]
    # the first batch: the start of the demo recipe's warm-up, lr 0.1 x warmup_factor 0.1
    assert batches.Scalars("lr")[0].value == pytest.approx(0.01, rel=1e-5)
    assert (out / "loss.png").is_file() and (out / "top1.png").is_file()  # the PNG plots stay


def test_resume_continues_the_event_log(tmp_path, capsys, monkeypatch):
    """Stopped after epoch 1, resumed to 3: one value per epoch, none twice."""
    from convzoo.recipes import resolve
    from convzoo.training.train import fit

    out = tmp_path / "run"
    limits = {"max_train_images": 32, "max_val_images": 16}
    cfg = resolve("tiny_test", "demo", {"epochs": 3, "workers": 0, "batch_size": 16, "data": limits})
    monkeypatch.setenv("CONVZOO_FAULT", "term@epoch=1")  # stopped after epoch 1, as a SIGTERM then would
    with pytest.raises(Interrupted):
        fit(cfg, str(out))
    monkeypatch.delenv("CONVZOO_FAULT")
    assert main(["train", "--out", str(out), "--resume"]) == 0, capsys.readouterr().err
    assert [e.step for e in _read(out / "tensorboard").Scalars("top1/val")] == [1, 2, 3]


def test_tensorboard_false_writes_none(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "tiny_test", "--data", "synthetic", "--out", str(out), "--epochs", "1", *ARGS]
    assert main([*argv, "--set", "tensorboard=false"]) == 0, capsys.readouterr().err
    assert not (out / "tensorboard").exists() and (out / "metrics.csv").is_file()
