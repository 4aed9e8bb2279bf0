"""Reliability, round two (issue 14): no run is lost or mixed, no small file takes the machine down.

Runs here are in-process `fit` calls of the tiny test model on 32 synthetic images, batch 8
(4 steps an epoch), 2 epochs, one thread: the uninterrupted run is the reference that a
SIGTERMed-and-resumed run must equal bit for bit. Tests that need a command-line flag the
command layer does not have yet call the engine function it will call.
"""

import errno
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from convzoo.engine.checkpoint import load_checkpoint  # noqa: E402
from convzoo.errors import Interrupted, RunFailed, UserError  # noqa: E402
from convzoo.weights import read_state_dict  # noqa: E402

SETS = ["data.max_train_images=32", "data.max_val_images=16"]


def config(epochs=2, data="synthetic", sets=(), **flags):
    from convzoo.recipes import resolve
    flags = {"epochs": epochs, "workers": 0, "batch_size": 8, **flags}
    return {"model": "tiny_test", "data_spec": data, **resolve("tiny_test", "demo", flags, [*SETS, *sets])}


def fit(cfg, out, **kw):
    from convzoo.engine.train import fit as _fit
    return _fit(cfg, str(out), **kw)


def same_weights(a: Path, b: Path) -> bool:
    x, y = read_state_dict(str(a / "last.safetensors")), read_state_dict(str(b / "last.safetensors"))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def one_line(e) -> bool:
    return "\n" not in str(e)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_models_one_thread):
    out = tmp_path_factory.mktemp("reference")
    fit(config(), out)
    return out


@pytest.fixture
def run_copy(reference, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    return out


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# ---- runs lost or silently mixed ---------------------------------------------------------------------
def test_train_into_a_run_folder_is_refused_without_resume(run_copy):
    before = {p.name: p.read_bytes() for p in run_copy.iterdir()}
    with pytest.raises(UserError, match="already holds a run") as e:
        fit(config(), run_copy)
    assert "--resume" in str(e.value) and "fresh --out" in str(e.value) and one_line(e.value)
    assert {p.name: p.read_bytes() for p in run_copy.iterdir()} == before


def test_overwrite_replaces_the_run_and_a_stale_lock_is_reported_then_taken(run_copy, capsys):
    (run_copy / "train.lock").write_text(f'{{"pid": {dead_pid()}, "host": "{os.uname().nodename}"}}')
    (run_copy / ".checkpoint.pt.tmp999999").write_bytes(b"half a checkpoint")   # a killed write's leftover
    summary = fit(config(epochs=1), run_copy, overwrite=True)
    err = capsys.readouterr().err
    assert "which no longer runs: taking it over" in err and "removed 1 temporary files" in err
    assert summary["epochs"] == 1 and load_checkpoint(str(run_copy / "checkpoint.pt"))["epoch"] == 1
    names = sorted(p.name for p in run_copy.iterdir())
    assert "train.lock" not in names and not any(".tmp" in n for n in names), names
    modes = {p.name: p.stat().st_mode & 0o777 for p in run_copy.iterdir()}
    assert len(set(modes.values())) == 1, modes      # every run file gets the same permissions


def test_a_live_lock_refuses_a_second_writer(tmp_path):
    from convzoo.engine.runfolder import RunLock
    first = RunLock(str(tmp_path))
    first.acquire()
    try:
        with pytest.raises(UserError, match=rf"in use by another train \(pid {os.getpid()} on "):
            fit(config(), tmp_path)
        with pytest.raises(UserError, match="in use by another train"):
            RunLock(str(tmp_path)).acquire()
    finally:
        first.release()
    (tmp_path / "train.lock").write_text('{"pid": 1, "host": "elsewhere.example"}')
    with pytest.raises(UserError, match="another machine .* delete .*train.lock"):
        RunLock(str(tmp_path)).acquire()


def test_two_real_processes_one_waits_out(tmp_path):
    """A process holding the lock (as a running train does) makes a second one fail in one line."""
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]); "
                               "from convzoo.engine.runfolder import RunLock; RunLock(sys.argv[2]).acquire(); "
                               "print('locked', flush=True); time.sleep(30)", str(Path(__file__).parents[1] / "src"),
                               str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=f"pid {holder.pid}"):
            fit(config(), tmp_path)
    finally:
        holder.kill()
        holder.wait()


def test_torchrun_restart_validates_like_resume(run_copy, monkeypatch, capsys):
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    metrics = (run_copy / "metrics.csv").read_text()
    with pytest.raises(UserError, match=r"torchrun restart: optim.lr differs .*0.1 there, 0.5 now") as e:
        fit(config(optim={"lr": 0.5}), run_copy)
    assert one_line(e.value)
    with pytest.raises(UserError, match="torchrun restart: ema differs"):     # a null counts too
        fit(config(sets=["ema=0.9"]), run_copy)
    with pytest.raises(UserError, match="torchrun restart: data differs"):
        fit(config(data=str(run_copy)), run_copy)
    assert (run_copy / "metrics.csv").read_text() == metrics
    summary = fit(config(), run_copy)          # the same command line: continues (here: already finished)
    assert summary["epochs"] == 2 and "already finished" in capsys.readouterr().err


def test_resume_identifies_the_data_by_folder_and_fingerprint(tmp_path, monkeypatch, tiny_models_one_thread):
    from tinynets import synthetic_folder

    from convzoo.engine.resilience import resume_config
    for where in ("a", "b"):
        synthetic_folder(tmp_path / where / "data", per_class=4)
    (tmp_path / "b" / "data" / "train" / "b" / "3.png").unlink()     # b's data: another folder, 7 images
    monkeypatch.chdir(tmp_path / "a")
    run = tmp_path / "run"
    cfg = config(epochs=2, data="data", sets=["data.input_size=32"], batch_size=2)
    monkeypatch.setenv("CONVZOO_TEST_KILL_AT_STEP", "1:TERM")
    with pytest.raises(Interrupted):
        fit(cfg, run)
    monkeypatch.delenv("CONVZOO_TEST_KILL_AT_STEP")
    state = load_checkpoint(str(run / "checkpoint.pt"))
    assert state["data_identity"]["train_images"] == 8 and state["batch"] == 2
    monkeypatch.chdir(tmp_path / "b")     # the same relative --data from elsewhere: another folder
    with pytest.raises(UserError, match="data differs from the run being resumed") as e:
        resume_config(state, "tiny_test", "data")
    assert str(tmp_path / "a" / "data") in str(e.value) and one_line(e.value)
    with pytest.raises(UserError, match="data differs"):    # fit itself checks too (the CLI of today)
        fit(state["config"], run, resume=True)
    same = resume_config(state, "tiny_test", str(tmp_path / "a" / "data"))   # absolute path, same folder
    assert same["data_spec"] == str(tmp_path / "a" / "data")
    (tmp_path / "a" / "data" / "train" / "a" / "0.png").unlink()    # the dataset shrank mid-epoch
    with pytest.raises(UserError, match="the data changed since the checkpoint: training images 8 there, 7 now"):
        fit(same, run, resume=True)


def test_sigterm_checkpoints_at_the_step_and_resumes_bitwise(reference, tmp_path, monkeypatch, capsys):
    """SIGTERM (the test hook sends it just before step 5, inside epoch 2) with checkpoints every 10
    minutes: a checkpoint after step 5, exit code 143, the resume command printed; resumed, the
    run equals the uninterrupted one bit for bit."""
    monkeypatch.setenv("CONVZOO_TEST_KILL_AT_STEP", "5:TERM")
    with pytest.raises(Interrupted) as e:
        fit(config(), tmp_path)
    monkeypatch.delenv("CONVZOO_TEST_KILL_AT_STEP")
    assert e.value.code == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert "stopped by SIGTERM after batch 2" in err and f"--out {tmp_path} --resume" in err, err
    state = load_checkpoint(str(tmp_path / "checkpoint.pt"))
    assert (state["epoch"], state["batch"]) == (1, 2)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL       # handlers put back
    fit(config(), tmp_path, resume=True)
    assert same_weights(reference, tmp_path)


def test_stop_request_catches_the_first_signal_and_not_the_second():
    from convzoo.engine.resilience import StopRequest
    before = signal.getsignal(signal.SIGINT)
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.signum == signal.SIGINT            # no KeyboardInterrupt: the run checkpoints first
        with pytest.raises(KeyboardInterrupt):          # a second Ctrl-C stops at once
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


def test_every_rank_stops_when_any_rank_got_the_signal(monkeypatch):
    """Under torchrun the stop flag rides the per-step all-reduce: a rank without a signal of its
    own (another rank's vote in the sum) still checkpoints and stops at the same step."""
    from convzoo.engine import distributed as dist
    from convzoo.engine.resilience import RunGuard, StopRequest
    monkeypatch.setattr(dist, "is_distributed", lambda: True)
    monkeypatch.setattr(dist, "world_size", lambda: 2)
    monkeypatch.setattr(dist, "all_reduce_sums", lambda v: [v[0], v[1] * 2, v[2], v[3] + 1])  # rank 1 votes stop
    saved = []
    guard = RunGuard(torch.nn.Linear(1, 1), 10, save=saved.append, stop=StopRequest())
    assert guard.batch_ok(8, "epoch 1, batch 0")
    with pytest.raises(Interrupted) as e:
        guard.step_done(0, {"n": 8})
    assert saved == [{"batch": 1, "partial": {"n": 8}}] and e.value.code == 128 + signal.SIGTERM
