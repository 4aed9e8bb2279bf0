"""Fault injection (`CONVZOO_FAULT`, convzoo.training.faults): the one format, which process and
round a fault applies to, and a malformed value as a one-line error. The faults' effect on real
runs (SIGKILL and SIGTERM, then an exact resume) is tested in test_reliability.py,
test_run_safety.py and test_torchrun.py."""

import signal

import pytest

from convzoo.errors import UserError
from convzoo.training import faults
from helpers import one_line, run


@pytest.mark.parametrize(
    "text, want",
    [
        ("kill@step=6", faults.Fault(signal.SIGKILL, "step", 6)),
        ("term@step=5", faults.Fault(signal.SIGTERM, "step", 5)),
        ("STOP@step=0", faults.Fault(signal.SIGSTOP, "step", 0)),
        ("kill@epoch=1,rank=1", faults.Fault(signal.SIGKILL, "epoch", 1, 1)),
        ("int@epoch=2", faults.Fault(signal.SIGINT, "epoch", 2)),
    ],
)
def test_format(text, want):
    assert faults.parse(text) == want


@pytest.mark.parametrize(
    "text",
    ["6", "6:TERM", "rank=1,epoch=1", "kill@", "kill@step=x", "kill@step=1,epoch=2", "hup@step=1",
     "kill@rank=1", "kill@step=1,when=2", "kill@step=-1"],
)  # fmt: skip
def test_malformed_is_one_line_naming_the_format(text):
    with pytest.raises(UserError, match="SIGNAL@step=N or SIGNAL@epoch=E") as e:
        faults.parse(text)
    assert one_line(e.value) and repr(text) in str(e.value)


def test_planned_for_this_rank_in_the_first_round_only(monkeypatch):
    monkeypatch.delenv(faults.ENV, raising=False)
    assert faults.planned() is None
    monkeypatch.setenv(faults.ENV, "kill@epoch=1,rank=1")
    assert faults.planned() is None  # this process is rank 0
    monkeypatch.setenv(faults.ENV, "kill@epoch=1,rank=0")
    assert faults.planned() == faults.Fault(signal.SIGKILL, "epoch", 1, 0)
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")  # torchrun restarted the workers
    assert faults.planned() is None


def test_fires_at_its_point_only(monkeypatch):
    sent = []
    monkeypatch.setattr(faults.os, "kill", lambda pid, signum: sent.append(signum))
    fault = faults.Fault(signal.SIGTERM, "step", 3)
    for step in range(6):
        faults.at(fault, "step", step)
    faults.at(fault, "epoch", 3)
    faults.at(None, "step", 3)
    assert sent == [signal.SIGTERM]


def test_train_with_a_malformed_fault_is_exit_2(tmp_path, capsys, monkeypatch, tiny_models_one_thread):
    monkeypatch.setenv(faults.ENV, "kill@step")
    argv = ["train", "tiny_test", "--data", "synthetic", "--out", tmp_path / "r", "--recipe", "demo"]
    rc, _, err = run(capsys, *argv, "--epochs", "1", "--workers", "0", "--set", "data.max_train_images=16")
    assert rc == 2 and one_line(err) and "CONVZOO_FAULT='kill@step'" in err, err
