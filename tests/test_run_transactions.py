"""A run folder is always resumable: the epoch's files are one transaction, the disk filling up
is one line, and a damaged checkpoint is refused.

Runs are in-process `fit` calls of the tiny test model on 32 synthetic images, batch 8 (4 steps
an epoch), one thread, as in test_run_safety.py. A kill between two writes is simulated by an
exception that nothing in convzoo catches (a BaseException, like the SystemExit of a signal).
"""

import json
import shutil
from pathlib import Path

import pytest
import torch

from convzoo.errors import UserError
from convzoo.weights import read_state_dict

SETS = ["data.max_train_images=32", "data.max_val_images=16"]


class Killed(BaseException):
    """What a SIGKILL between two writes leaves: nothing after it runs (no except clause catches it)."""


def config(epochs=2, sets=(), **flags):
    from convzoo.recipes import resolve

    flags = {"epochs": epochs, "workers": 0, "batch_size": 8, **flags}
    return resolve("tiny_test", "demo", flags, [*SETS, *sets])


def fit(cfg, out, **kw):
    from convzoo.training.train import fit as _fit

    return _fit(cfg, str(out), **kw)


def weights(run: Path, name="last.safetensors") -> dict:
    return read_state_dict(str(run / name))


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def metrics(run: Path) -> list[list[str]]:
    """metrics.csv without its timing columns (seconds, images per second)."""
    return [line.split(",")[:7] for line in (run / "metrics.csv").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_models_one_thread):
    out = tmp_path_factory.mktemp("reference")
    fit(config(), out)
    return out


def kill_in(monkeypatch, function: str, at_epoch: int) -> None:
    """Raise Killed inside runfolder.`function` when it writes the files of epoch `at_epoch`."""
    from convzoo.training import runfolder

    real = getattr(runfolder, function)

    def dying(out, history, *a, **k):
        if len(history) == at_epoch:
            raise Killed
        return real(out, history, *a, **k)

    monkeypatch.setattr(runfolder, function, dying)


# ---- the epoch's files are one transaction ---------------------------------------------------------
@pytest.mark.parametrize("epoch", [1, 2])
def test_a_stop_between_the_checkpoint_and_the_run_files_resumes(
    reference, tmp_path, monkeypatch, epoch, capsys
):
    """Killed while the run files of epoch 1 (or of the last epoch, 2) are written: the folder
    still holds a checkpoint, `--resume` continues from it and writes the missing files again; the
    finished run equals the uninterrupted one bit for bit, files included."""
    kill_in(monkeypatch, "write_metrics", epoch)
    with pytest.raises(Killed):
        fit(config(), tmp_path)
    monkeypatch.undo()
    with pytest.raises(UserError, match="already holds a run"):  # a fresh start is still refused
        fit(config(), tmp_path)
    fit(config(), tmp_path, resume=True)
    assert "writing the files of epoch" in capsys.readouterr().err
    assert same(weights(tmp_path), weights(reference))
    assert same(weights(tmp_path, "best.safetensors"), weights(reference, "best.safetensors"))
    assert metrics(tmp_path) == metrics(reference)
    summary, ref = (json.loads((p / "summary.json").read_text()) for p in (tmp_path, reference))
    assert summary["epochs"] == 2 and summary["finished"] and summary["top1"] == ref["top1"]


def test_a_finished_run_with_current_files_is_left_alone(reference, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != "train.lock"}
    fit(config(), run, resume=True)
    assert "already finished" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
