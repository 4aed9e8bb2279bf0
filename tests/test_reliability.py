"""Reliability and safety: kill-and-resume is bitwise exact, checkpoint writes are
atomic, NaN/Inf losses are skipped and a diverged run stops, bad input is one line with exit 2,
untrusted files are never unpickled into code.

The kill tests run real child processes (`python -m convzoo train` through `runpy`, with the
tiny test models registered) on 64 synthetic images, batch 16: 4 steps an epoch, 2 epochs.
The uninterrupted run is the reference; every interrupted-and-resumed run must end with the
same weights bit for bit (CPU, one thread everywhere).
"""

import ast
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import tiny_models
from convzoo.cli import main
from convzoo.errors import RunFailed, UserError
from convzoo.training.checkpoint import load_checkpoint, save_checkpoint
from convzoo.weights import WeightSpec, read_state_dict, save_weights
from helpers import one_line, run, synthetic_folder

REPO = Path(__file__).resolve().parents[1]
STEPS_PER_EPOCH, EPOCHS = 4, 2
RUN = [
    "--data",
    "synthetic",
    "--recipe",
    "demo",
    "--epochs",
    str(EPOCHS),
    "--workers",
    "0",
    "--batch-size",
    "16",
    "--set",
    "data.max_train_images=64",
    "--set",
    "data.max_val_images=32",
    "--set",
    "ema=0.9",
]
# runs `python -m convzoo` with the tiny test models registered, single-threaded (tests/ on PYTHONPATH)
BOOT = (
    "import runpy; import torch; torch.set_num_threads(1); "
    "import tiny_models\nwith tiny_models.registered(): runpy.run_module('convzoo', run_name='__main__')"
)


# ---- a tiny model that produces NaN at chosen training steps ----------------------------------------
NAN_AT: set[int] = set()  # training forward calls (= steps) whose input is made NaN


class NanNet(tiny_models.TinyNet):
    def __init__(self, num_classes=10):
        super().__init__(num_classes)
        self.calls = 0

    def forward(self, x):
        if self.training:
            if self.calls in NAN_AT:  # NaN on the input: BatchNorm's running statistics see it too
                x = x * float("nan")
            self.calls += 1
        return super().forward(x)


@pytest.fixture(scope="module", autouse=True)
def registered_models():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    from convzoo.registry import _MODELS, register

    with tiny_models.registered():
        register("nan_test", paper="test model", input_size=32, num_classes=10, min_input_size=8)(NanNet)
        yield
        _MODELS.pop("nan_test", None)
    torch.set_num_threads(threads)


def child(out, *extra, env=None, wait=True):
    paths = os.pathsep.join([str(REPO / "src"), str(REPO / "tests")])
    extra_env, env = env or {}, {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": paths}
    env.pop("CONVZOO_FAULT", None)
    env.update(extra_env)
    argv = [
        sys.executable,
        "-c",
        BOOT,
        "train",
        "tiny_test",
        *RUN,
        "--out",
        str(out),
        *map(str, extra),
    ]
    p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return p
    _, err = p.communicate(timeout=300)
    return p.returncode, err


def same_weights(a: Path, b: Path) -> bool:
    x, y = read_state_dict(str(a / "last.safetensors")), read_state_dict(str(b / "last.safetensors"))
    cx = torch.load(a / "checkpoint.pt", weights_only=True)
    cy = torch.load(b / "checkpoint.pt", weights_only=True)
    return (
        x.keys() == y.keys()
        and all(torch.equal(x[k], y[k]) for k in x)
        and all(torch.equal(cx["model"][k], cy["model"][k]) for k in cx["model"])
        and all(torch.equal(cx["ema"]["model"][k], cy["ema"]["model"][k]) for k in cx["ema"]["model"])
        and [r["train_loss"] for r in cx["history"]] == [r["train_loss"] for r in cy["history"]]
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    rc, err = child(out)
    assert rc == 0, err
    return out


def test_sigkill_at_epoch_boundary_then_mid_epoch_resumes_bitwise(reference, tmp_path):
    """Killed (SIGKILL, by CONVZOO_FAULT) at the start of epoch 2, resumed; killed again at a
    seeded-random step inside epoch 2 with a checkpoint after every step, resumed to the end."""
    mid = random.Random(6).randrange(STEPS_PER_EPOCH + 1, EPOCHS * STEPS_PER_EPOCH)
    rc, err = child(tmp_path, env={"CONVZOO_FAULT": f"kill@step={STEPS_PER_EPOCH}"})
    assert rc == -signal.SIGKILL, err
    ckpt = load_checkpoint(str(tmp_path / "checkpoint.pt"))
    assert (ckpt["epoch"], ckpt["batch"]) == (1, 0)
    rc, err = child(
        tmp_path, "--resume", "--checkpoint-minutes", "0", env={"CONVZOO_FAULT": f"kill@step={mid}"}
    )
    assert rc == -signal.SIGKILL, err
    ckpt = load_checkpoint(str(tmp_path / "checkpoint.pt"))
    assert (ckpt["epoch"], ckpt["batch"]) == (1, mid - STEPS_PER_EPOCH), mid  # mid-epoch checkpoint
    rc, err = child(tmp_path, "--resume")
    assert rc == 0 and "resuming" in err, err
    assert same_weights(reference, tmp_path), f"killed at steps {STEPS_PER_EPOCH} and {mid}"


def test_external_sigkill_mid_run_resumes_bitwise(reference, tmp_path):
    """A real kill from outside, as soon as the first mid-epoch checkpoint is on disk."""
    p = child(tmp_path, "--checkpoint-minutes", "0", wait=False)
    ckpt = tmp_path / "checkpoint.pt"
    while p.poll() is None and not ckpt.exists():
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.communicate()
    if p.returncode == 0:
        pytest.skip("the run finished before the kill arrived")
    assert p.returncode == -signal.SIGKILL
    state = load_checkpoint(str(ckpt))
    assert state["epoch"] * STEPS_PER_EPOCH + state["batch"] < EPOCHS * STEPS_PER_EPOCH
    rc, err = child(tmp_path, "--resume")
    assert rc == 0, err
    assert same_weights(reference, tmp_path)


# ---- atomic checkpoint writes ------------------------------------------------------------------------
def test_interrupted_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    path = str(tmp_path / "checkpoint.pt")
    good = {"format": "convzoo-checkpoint-1", "epoch": 1, "model": nn.Linear(3, 2).state_dict()}
    save_checkpoint(path, good)
    real_save = torch.save

    def save_part_then_fail(obj, f, *a, **kw):
        real_save(obj, f, *a, **kw)
        f.truncate(f.tell() // 2)  # half the bytes are out, then the "disk" fails
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", save_part_then_fail)
    with pytest.raises(RunFailed, match="no space left on device"):  # one line (exit 1), not a traceback
        save_checkpoint(path, {**good, "epoch": 2})
    monkeypatch.undo()
    loaded = torch.load(path, weights_only=True)  # (a partial state: load_checkpoint wants a whole one)
    assert loaded["epoch"] == 1 and torch.equal(loaded["model"]["weight"], good["model"]["weight"])
    assert os.listdir(tmp_path) == ["checkpoint.pt"]  # no temporary file left behind


def test_interrupted_weights_write_keeps_the_previous_file(tmp_path, monkeypatch):
    import safetensors.torch

    path = str(tmp_path / "last.safetensors")
    spec = WeightSpec(model="tiny_test", num_classes=2)
    save_weights(path, {"w": torch.ones(2)}, spec)

    def fail(state, filename, metadata=None):
        Path(filename).write_bytes(b"\x00" * 10)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", fail)
    with pytest.raises(RunFailed, match="no space left on device"):
        save_weights(path, {"w": torch.zeros(2)}, spec)
    monkeypatch.undo()
    assert torch.equal(read_state_dict(path)["w"], torch.ones(2)) and os.listdir(tmp_path) == [
        "last.safetensors"
    ]


# ---- NaN / Inf losses ----------------------------------------------------------------------------------
def nan_run(capsys, out, steps, *extra):
    NAN_AT.clear()
    NAN_AT.update(steps)
    try:
        return run(capsys, "train", "nan_test", *RUN, "--out", out, *extra)
    finally:
        NAN_AT.clear()


def test_one_nan_step_is_skipped_and_counted(tmp_path, capsys):
    """The NaN batch's update is skipped and BatchNorm's running statistics are restored: without
    that, the NaN input would leave NaN running means in the saved weights."""
    rc, _, err = nan_run(capsys, tmp_path, {2})
    assert rc == 0, err
    assert "update skipped" in err and "epoch 1, batch 2" in err
    assert json.loads((tmp_path / "summary.json").read_text())["nonfinite_steps"] == 1
    state = read_state_dict(str(tmp_path / "last.safetensors"))
    assert all(torch.isfinite(v.float()).all() for v in state.values())
    ckpt = load_checkpoint(str(tmp_path / "checkpoint.pt"))
    assert all(torch.isfinite(v.float()).all() for v in ckpt["model"].values())


def test_three_nan_steps_in_a_row_stop_with_exit_1_keeping_the_good_checkpoint(tmp_path, capsys):
    """Steps 5, 6, 7 (batches 1-3 of epoch 2) are NaN, checkpoints after every step: the last
    checkpoint is the one after step 4 (epoch 2, batch 1 done)."""
    rc, _, err = nan_run(capsys, tmp_path, {5, 6, 7}, "--checkpoint-minutes", "0")
    assert rc == 1
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "3 non-finite losses in a row" in errors[0] and "Traceback" not in err
    ckpt = load_checkpoint(str(tmp_path / "checkpoint.pt"))
    assert (ckpt["epoch"], ckpt["batch"]) == (1, 1)
    assert all(torch.isfinite(v.float()).all() for v in ckpt["model"].values())


# ---- untrusted files ---------------------------------------------------------------------------------
class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling this would create a file: any call would do
        return (open, (self.marker, "w"))


def test_malicious_checkpoint_is_refused(tmp_path, capsys):
    marker = tmp_path / "pwned"
    out = tmp_path / "run"
    out.mkdir()
    torch.save({"format": "convzoo-checkpoint-1", "config": _Evil(str(marker))}, out / "checkpoint.pt")
    rc, _, err = run(capsys, "train", "tiny_test", "--data", "synthetic", "--out", out, "--resume")
    assert rc == 2 and "refused" in err and one_line(err), err
    assert not marker.exists()


def _calls(tree):
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
        ):
            yield node.func.value.id, node.func.attr, node


def test_every_torch_load_in_src_passes_weights_only_true():
    """Parses every source file (no regex over comments): each torch.load call has
    weights_only=True as a literal; no plain pickle or yaml loading; no `from torch import load`."""
    loads = 0
    for path in (REPO / "src").rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in ("torch", "pickle", "yaml"):
                assert not {a.name for a in node.names} & {"load", "loads", "unsafe_load", "Loader"}, path
        for obj, attr, call in _calls(tree):
            where = f"{path.relative_to(REPO)}:{call.lineno}"
            if (obj, attr) == ("torch", "load"):
                loads += 1
                kw = {k.arg: k.value for k in call.keywords}
                assert (
                    isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                ), where
            assert (obj, attr) not in {
                ("pickle", "load"),
                ("pickle", "loads"),
                ("yaml", "load"),
                ("yaml", "unsafe_load"),
                ("yaml", "full_load"),
            }, where
    assert loads >= 2  # checkpoint.pt and convert's .pth reader: the check looked at something


# ---- bad input: one line, exit 2 ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory, registered_models):
    out = tmp_path_factory.mktemp("trained")
    assert main(["train", "tiny_test", *RUN, "--epochs", "1", "--out", str(out)]) == 0
    five = out / "five_classes.safetensors"  # tiny_test weights for a 5-class problem
    save_weights(
        str(five), tiny_models.TinyNet(5), WeightSpec(model="tiny_test", num_classes=5, input_size=32)
    )
    blob = (out / "last.safetensors").read_bytes()
    (out / "truncated.safetensors").write_bytes(blob[: len(blob) // 2])
    return out


def _bad_checkpoint(run_dir: Path, kind: str) -> None:
    run_dir.mkdir()
    good = run_dir.parent / "ckpt_src"
    if kind == "garbage":
        (run_dir / "checkpoint.pt").write_bytes(b"\x80\x02garbage, not a checkpoint" * 8)
    elif kind == "truncated":
        blob = (good / "checkpoint.pt").read_bytes()
        (run_dir / "checkpoint.pt").write_bytes(blob[: len(blob) // 2])
    elif kind == "foreign":  # a valid torch file, but not a convzoo checkpoint
        torch.save(nn.Linear(2, 2).state_dict(), run_dir / "checkpoint.pt")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "resnet5", "--data", "synthetic", "--out", "{tmp}/r"], "did you mean resnet50"),
        (["train", "tiny_test", "--data", "{tmp}/no/such/folder", "--out", "{tmp}/r"], "not found"),
        (["train", "tiny_test", "--data", "jpegs:{tmp}", "--out", "{tmp}/r"], "unknown data kind 'jpegs'"),
        (
            ["train", "tiny_test", "--data", "synthetic", "--out", "{tmp}/r", "--checkpoint-minutes", "-1"],
            "checkpoint_minutes",
        ),
        (["eval", "tiny_test", "--weights", "{run}/nope.safetensors", "--data", "synthetic"], "not found"),
        (
            ["eval", "tiny_aux_test", "--weights", "{run}/last.safetensors", "--data", "synthetic"],
            "for tiny_test, not tiny_aux_test",
        ),
        (
            ["eval", "tiny_test", "--weights", "{run}/five_classes.safetensors", "--data", "synthetic"],
            "predict 5",
        ),
        (
            ["eval", "tiny_test", "--weights", "{run}/truncated.safetensors", "--data", "synthetic"],
            "not a readable safetensors",
        ),
        (
            ["predict", "tiny_test", "--weights", "{run}/truncated.safetensors", "{tmp}"],
            "not a readable safetensors",
        ),
        (["predict", "tiny_tset", "--weights", "{run}/last.safetensors", "{tmp}"], "did you mean tiny_test"),
        (
            [
                "convert",
                "--from",
                "torchvision",
                "{tmp}/none.pth",
                "--model",
                "resnet18",
                "--out",
                "{tmp}/o.safetensors",
            ],
            "not found",
        ),
        (
            ["train", "tiny_test", "--data", "synthetic", "--out", "{tmp}/garbage", "--resume"],
            "not a readable convzoo checkpoint",
        ),
        (
            ["train", "tiny_test", "--data", "synthetic", "--out", "{tmp}/truncated", "--resume"],
            "not a readable convzoo checkpoint",
        ),
        (
            ["train", "tiny_test", "--data", "synthetic", "--out", "{tmp}/foreign", "--resume"],
            "not a convzoo checkpoint",
        ),
        (
            ["train", "tiny_test", "--data", "synthetic", "--out", "{run}", "--resume", "--batch-size", "32"],
            "batch_size differs",
        ),
        (["train", "tiny_aux_test", "--data", "synthetic", "--out", "{run}", "--resume"], "model differs"),
        (["train", "tiny_test", "--data", "cifar10:{tmp}", "--out", "{run}", "--resume"], "data differs"),
        (
            [
                "train",
                "tiny_test",
                "--data",
                "synthetic",
                "--out",
                "{run}",
                "--resume",
                "--set",
                "optim.lr=0.5",
            ],
            "optim.lr differs",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2(trained, tmp_path, capsys, argv, message):
    (tmp_path / "ckpt_src").mkdir()
    (tmp_path / "ckpt_src" / "checkpoint.pt").write_bytes((trained / "checkpoint.pt").read_bytes())
    for kind in ("garbage", "truncated", "foreign"):
        _bad_checkpoint(tmp_path / kind, kind)
    rc, _, err = run(
        capsys, *[a.replace("{tmp}", str(tmp_path)).replace("{run}", str(trained)) for a in argv]
    )
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and message in lines[0], err


def test_resume_may_extend_epochs_and_change_checkpoint_interval(trained, tmp_path, capsys):
    import shutil

    run_dir = tmp_path / "r"
    shutil.copytree(trained, run_dir)
    rc, _, err = run(
        capsys,
        "train",
        "tiny_test",
        "--data",
        "synthetic",
        "--out",
        run_dir,
        "--resume",
        "--epochs",
        "2",
        "--checkpoint-minutes",
        "5",
        "--batch-size",
        "16",
    )
    assert rc == 0 and "resuming" in err, err
    assert load_checkpoint(str(run_dir / "checkpoint.pt"))["epoch"] == 2


# ---- broken images inside a dataset -----------------------------------------------------------------------
def test_broken_images_are_skipped_named_and_counted(tmp_path, capsys, recwarn):
    """A folder dataset (2 classes, 4 good images each per split) with a garbage file in train
    and a truncated JPEG in val: training warns with each file's name and counts both."""
    synthetic_folder(tmp_path / "d")
    (tmp_path / "d" / "train" / "a" / "garbage.jpg").write_bytes(b"not an image at all")
    from PIL import Image

    Image.open(tmp_path / "d" / "val" / "b" / "0.png").save(tmp_path / "full.jpg")
    (tmp_path / "d" / "val" / "b" / "cut.jpg").write_bytes((tmp_path / "full.jpg").read_bytes()[:200])
    rc, _, err = run(
        capsys,
        "train",
        "tiny_test",
        "--data",
        tmp_path / "d",
        "--out",
        tmp_path / "run",
        "--recipe",
        "demo",
        "--epochs",
        "1",
        "--workers",
        "0",
        "--batch-size",
        "4",
        "--set",
        "data.input_size=32",
    )
    assert rc == 0, err
    warned = " ".join(str(w.message) for w in recwarn)
    assert "garbage.jpg" in warned and "cut.jpg" in warned
    assert "(2 unreadable images skipped)" in err
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["skipped_images"] == 2
    # predict reports the broken file and goes on with the rest
    rc, out, err = run(
        capsys,
        "predict",
        "tiny_test",
        "--weights",
        tmp_path / "run" / "last.safetensors",
        tmp_path / "d" / "val" / "b",
        tmp_path / "missing.png",
        "--json",
    )
    assert rc == 0 and "cut.jpg" in err and "missing.png" in err
    res = json.loads(out)
    assert len(res) == 6 and sum("error" in r for r in res) == 2


def test_check_resume_names_the_setting():
    from convzoo.training.resilience import check_resume

    saved = {
        "model": "tiny_test",
        "data_spec": "synthetic",
        "batch_size": 16,
        "optim": {"lr": 0.1},
        "epochs": 2,
    }
    check_resume(saved, "tiny_test", "synthetic", {"epochs": 5, "batch_size": None, "optim": {"lr": 0.1}})
    with pytest.raises(UserError, match=r"optim.lr differs .*0.1 there, 0.2 now"):
        check_resume(saved, "tiny_test", "synthetic", {"optim": {"lr": 0.2}})
