"""`convzoo train / eval / predict` end to end on `synthetic` with a tiny model, exact resume,
one-line exit-2 errors, and a short real CIFAR-10 run that must learn."""

import csv
import json

import pytest
import torch

from convzoo.cli import main
from convzoo.errors import Interrupted
from convzoo.weights import read_spec, read_state_dict
from helpers import CIFAR10_SMALL, run

FEW = [
    "--workers",
    "0",
    "--batch-size",
    "32",
    "--set",
    "data.max_train_images=128",
    "--set",
    "data.max_val_images=64",
]


pytestmark = pytest.mark.usefixtures("tiny_models_one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_models_one_thread):
    out = tmp_path_factory.mktemp("run")
    rc = main(
        [
            "train",
            "tiny_test",
            "--data",
            "synthetic",
            "--out",
            str(out),
            "--recipe",
            "demo",
            "--epochs",
            "1",
            *FEW,
        ]
    )
    assert rc == 0
    return out


def test_run_folder_contents(trained):
    for name in (
        "last.safetensors",
        "best.safetensors",
        "checkpoint.pt",
        "config.yaml",
        "metrics.csv",
        "summary.json",
        "loss.png",
        "top1.png",
    ):
        assert (trained / name).is_file(), name
    assert [p.name for p in trained.iterdir() if "tmp" in p.name] == []
    summary = json.loads((trained / "summary.json").read_text())
    for key in (
        "model",
        "epochs",
        "top1",
        "top5",
        "best_top1",
        "images_per_second",
        "wall_seconds",
        "world_size",
        "precision",
    ):
        assert key in summary, key
    assert summary["model"] == "tiny_test" and summary["epochs"] == 1 and summary["world_size"] == 1
    assert 0 <= summary["top1"] <= summary["top5"] <= 100
    rows = list(csv.DictReader((trained / "metrics.csv").open()))
    assert len(rows) == 1 and set(rows[0]) >= {
        "epoch",
        "lr",
        "train_loss",
        "train_top1",
        "val_loss",
        "val_top1",
        "val_top5",
        "seconds",
    }
    spec = read_spec(str(trained / "best.safetensors"))
    assert spec.model == "tiny_test" and spec.num_classes == 10 and len(spec.labels) == 10
    assert spec.input_size == 32 and len(spec.mean) == 3
    ckpt = torch.load(trained / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and {"model", "optimizer", "schedule", "scaler", "rng", "config"} <= set(ckpt)


@pytest.mark.parametrize("crop", ["center", "ten"])
def test_eval_json(trained, capsys, crop):
    rc, out, _ = run(
        capsys,
        "eval",
        "tiny_test",
        "--weights",
        trained / "best.safetensors",
        "--data",
        "synthetic",
        "--crop",
        crop,
        "--limit",
        "40",
        "--workers",
        "0",
        "--json",
    )
    assert rc == 0
    r = json.loads(out)
    assert {"model", "top1", "top5", "images", "crop"} <= set(r)
    assert r["crop"] == crop and r["images"] == 40 and 0 <= r["top1"] <= r["top5"] <= 100


def test_predict_files_and_folders(trained, tmp_path, capsys):
    from convzoo.data.datasets import build_dataset

    ds = build_dataset("synthetic", "val")
    for i in range(3):
        ds[i][0].save(tmp_path / f"img{i}.png")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    rc, out, err = run(
        capsys,
        "predict",
        "tiny_test",
        "--weights",
        trained / "last.safetensors",
        tmp_path,
        "--topk",
        "3",
        "--json",
    )
    assert rc == 0 and "broken.jpg" in err
    res = json.loads(out)
    assert len(res) == 4
    good = [r for r in res if "error" not in r]
    assert len(good) == 3
    for r in good:
        assert len(r["predictions"]) == 3
        assert {"label", "index", "probability"} <= set(r["predictions"][0])
        probs = [p["probability"] for p in r["predictions"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert r["predictions"][0]["label"] in read_spec(str(trained / "last.safetensors")).labels
    rc, out, _ = run(
        capsys, "predict", "tiny_test", "--weights", trained / "last.safetensors", tmp_path / "img0.png"
    )
    assert rc == 0 and "img0.png" in out and "%" in out
    rc, _, err = run(
        capsys, "predict", "tiny_test", "--weights", trained / "last.safetensors", tmp_path / "broken.jpg"
    )
    assert rc == 2 and "none of the 1 images" in err


def test_predict_custom_labels_file(trained, tmp_path, capsys):
    from convzoo.data.datasets import build_dataset

    build_dataset("synthetic", "val")[0][0].save(tmp_path / "a.png")
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"thing{i}\n" for i in range(10)))
    rc, out, _ = run(
        capsys,
        "predict",
        "tiny_test",
        "--weights",
        trained / "last.safetensors",
        tmp_path / "a.png",
        "--labels",
        labels,
        "--json",
    )
    assert rc == 0 and json.loads(out)[0]["predictions"][0]["label"].startswith("thing")
    labels.write_text("one\ntwo\n")
    rc, _, err = run(
        capsys,
        "predict",
        "tiny_test",
        "--weights",
        trained / "last.safetensors",
        tmp_path / "a.png",
        "--labels",
        labels,
    )
    assert rc == 2 and "2 names for a 10-class" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "tiny_test", "--data", "nosuchkind:/x", "--out", "{tmp}/r"], "data"),
        (
            ["train", "tiny_test", "--data", "synthetic", "--out", "{tmp}/r", "--set", "optim.lrr=1"],
            "optim.lrr",
        ),
        (["train", "tiny_test", "--data", "synthetic", "--out", "{tmp}/r", "--set", "epochs=0"], "epochs"),
        (["train", "tiny_test", "--data", "synthetic", "--out", "{tmp}/r", "--resume"], "no checkpoint"),
        (
            ["train", "tiny_test", "--data", "synthetic", "--out", "{tmp}/r", "--recipe", "nope"],
            "unknown recipe",
        ),
        (["eval", "tiny_test", "--weights", "{tmp}/missing.safetensors", "--data", "synthetic"], "not found"),
        (["eval", "tiny_test", "--weights", "{tmp}/junk.safetensors", "--data", "synthetic"], "safetensors"),
        (["predict", "tiny_test", "--weights", "{tmp}/missing.safetensors", "{tmp}"], "not found"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, argv, message):
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    rc, _, err = run(capsys, *[a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err


def test_eval_weights_of_another_model(trained, capsys):
    rc, _, err = run(
        capsys, "eval", "tiny_aux_test", "--weights", trained / "best.safetensors", "--data", "synthetic"
    )
    assert rc == 2 and "tiny_test" in err


def test_resume_is_exact(tmp_path, capsys, monkeypatch):
    """2 epochs in one go == 1 epoch, interrupted, then --resume for the second: bitwise-equal weights."""
    from convzoo.recipes import resolve
    from convzoo.training.train import fit

    # schedule.epochs=2: the recipe's schedule as written (the command would scale it to 2 of 12 epochs)
    args = ["--recipe", "demo", "--epochs", "2", *FEW, "--set", "ema=0.9", "--set", "schedule.epochs=2"]
    rc, *_ = run(capsys, "train", "tiny_test", "--data", "synthetic", "--out", tmp_path / "a", *args)
    assert rc == 0
    cfg = resolve(
        "tiny_test",
        "demo",
        {"epochs": 2, "workers": 0, "batch_size": 32},
        ["data.max_train_images=128", "data.max_val_images=64", "ema=0.9", "schedule.epochs=2"],
    )
    monkeypatch.setenv("CONVZOO_FAULT", "term@epoch=1")  # stopped after epoch 1, as a SIGTERM then would
    with pytest.raises(Interrupted):
        fit(cfg, str(tmp_path / "b"))
    monkeypatch.delenv("CONVZOO_FAULT")
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["epochs"] == 1
    rc, _, err = run(capsys, "train", "tiny_test", "--data", "synthetic", "--out", tmp_path / "b", "--resume")
    assert rc == 0 and "resuming" in err
    a, b = (
        read_state_dict(str(tmp_path / "a" / "last.safetensors")),
        read_state_dict(str(tmp_path / "b" / "last.safetensors")),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ca = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    cb = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(ca["model"][k], cb["model"][k]) for k in ca["model"])
    assert [r["val_top1"] for r in ca["history"]] == [r["val_top1"] for r in cb["history"]]
    # resuming a finished run says so and exits 0
    rc, _, err = run(capsys, "train", "tiny_test", "--data", "synthetic", "--out", tmp_path / "b", "--resume")
    assert rc == 0 and "already finished" in err


def test_val_every_validates_every_nth_and_the_last_epoch(tmp_path, capsys):
    """--val-every 2 over 5 epochs: validation after epochs 2, 4 and 5 only; training itself is
    the same as validating every epoch (bitwise-equal weights), and best is among the validated."""

    def train(out, *extra):
        args = ["--recipe", "demo", "--epochs", "5", *FEW, *extra]
        return run(capsys, "train", "tiny_test", "--data", "synthetic", "--out", tmp_path / out, *args)

    assert train("every")[0] == 0
    rc, _, err = train("second", "--val-every", "2")
    assert rc == 0 and "(validation every 2 epochs)" in err
    rows = list(csv.DictReader((tmp_path / "second" / "metrics.csv").open()))
    assert [r["epoch"] for r in rows if r["val_top1"]] == ["2", "4", "5"]
    assert all(r["train_loss"] for r in rows) and len(rows) == 5
    every = list(csv.DictReader((tmp_path / "every" / "metrics.csv").open()))
    assert [r["val_top1"] for r in rows if r["val_top1"]] == [every[i]["val_top1"] for i in (1, 3, 4)]
    summary = json.loads((tmp_path / "second" / "summary.json").read_text())
    assert summary["epochs"] == 5 and summary["best_epoch"] in (2, 4, 5)
    assert summary["top1"] == pytest.approx(float(every[4]["val_top1"]))
    a, b = (read_state_dict(str(tmp_path / d / "last.safetensors")) for d in ("every", "second"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert read_spec(str(tmp_path / "second" / "last.safetensors")).metrics["epoch"] == 5
    rc, _, err = train("bad", "--val-every", "0")
    assert rc == 2 and "val_every must be a positive integer" in err and not (tmp_path / "bad").exists()


def test_resume_of_a_run_saved_before_later_settings_existed(trained, tmp_path, capsys):
    """A checkpoint whose config predates settings added since (here val_every and lookahead)
    resumes with their defaults instead of failing on the missing keys."""
    import shutil

    out = tmp_path / "old"
    shutil.copytree(trained, out)
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    del ckpt["config"]["val_every"], ckpt["config"]["lookahead"]
    torch.save(ckpt, out / "checkpoint.pt")
    rc, _, err = run(capsys, "train", "--out", out, "--resume", "--epochs", "2")
    assert rc == 0, err
    assert json.loads((out / "summary.json").read_text())["epochs"] == 2


def test_aux_model_trains_with_weighted_aux_loss(tmp_path, capsys):
    """The aux head gets gradients only through its weighted loss: with aux_weight 0 its weights
    stay at their (seeded, identical) initial values, with 0.3 they move."""
    aux = {}
    for w in (0.0, 0.3):
        out = tmp_path / str(w)
        rc, _, err = run(
            capsys,
            "train",
            "tiny_aux_test",
            "--data",
            "synthetic",
            "--out",
            out,
            "--recipe",
            "demo",
            "--epochs",
            "1",
            *FEW,
            "--set",
            f"loss.aux_weight={w}",
            "--set",
            "loss.label_smoothing=0.1",
            "--set",
            "clip_grad_norm=2.0",
            "--precision",
            "bf16",
        )
        assert rc == 0, err
        assert f"aux_weight: {w}" in (out / "config.yaml").read_text()
        aux[w] = read_state_dict(str(out / "last.safetensors"))["aux_fc.weight"]
    assert not torch.equal(aux[0.0], aux[0.3])


def test_cifar10_subset_learns(tmp_path, capsys):
    """Real images learn: a small CNN on the 250 CIFAR-10 JPEGs of tests/fixtures/cifar10-small
    (25 per class), 10 epochs, must reach more than 20% top-1 on its 100 held-out images, twice
    chance (10%; by chance 20 or more hits of 100 has probability 0.002). Measured 31-32% with
    three seeds."""
    data = f"cifar10:{CIFAR10_SMALL}"
    rc, _, err = run(
        capsys,
        "train",
        "small_test",
        "--data",
        data,
        "--out",
        tmp_path / "run",
        "--recipe",
        "demo",
        "--epochs",
        "10",
        "--workers",
        "0",
        "--batch-size",
        "32",
        "--lr",
        "0.05",
        "--set",
        "data.max_train_images=null",
        "--set",
        "data.max_val_images=null",
    )
    assert rc == 0, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["train_images"] == 250 and summary["val_images"] == 100
    assert summary["best_top1"] > 20.0, err
    rc, out, _ = run(
        capsys,
        "eval",
        "small_test",
        "--weights",
        tmp_path / "run" / "best.safetensors",
        "--data",
        data,
        "--crop",
        "ten",
        "--workers",
        "0",
        "--json",
    )
    assert rc == 0 and json.loads(out)["top1"] > 20.0


def test_precision_auto_is_said_once_with_why(tmp_path, capsys, monkeypatch):
    """`precision: auto` follows the measured bf16 decision (engine/accel.py), and train says which
    precision it chose and why, once; config.yaml records the concrete one."""
    from convzoo.engine import accel

    monkeypatch.delenv("CONVZOO_PRECISION")
    monkeypatch.setattr(accel, "bf16_measured_fast", lambda: (False, "bf16 matmuls measured 0.70x fp32"))
    out = tmp_path / "run"
    rc, _, said_lines = run(
        capsys, "train", "tiny_test", "--data", "synthetic", "--epochs", "1", "--out", out, *FEW
    )
    assert rc == 0
    said = [line for line in said_lines.splitlines() if line.startswith("precision ")]
    assert said == ["precision fp32 (auto: bf16 matmuls measured 0.70x fp32)"], said_lines
    assert "precision: fp32" in (out / "config.yaml").read_text()
