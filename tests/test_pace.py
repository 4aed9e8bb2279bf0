"""Slow training says why: a busy machine (load average against cores and threads, or an epoch
far slower than the first) gets one hint naming --threads / OMP_NUM_THREADS; without a terminal
a progress line (images/s, ETA) comes every PROGRESS_SECONDS instead of the bar."""

import pytest

from convzoo.cli import main
from convzoo.training import pace


def test_busy_machine_hint_names_the_remedy():
    hint = pace.busy_hint(threads=2, load=3.2, cores=2)
    assert hint is not None and "load average 3.2 on 2 cores" in hint
    assert "--threads 1" in hint and "OMP_NUM_THREADS=1" in hint
    assert pace.busy_hint(threads=2, load=0.4, cores=2) is None  # quiet
    assert pace.busy_hint(threads=1, load=5.0, cores=2) is None  # one thread waits for nobody
    assert pace.busy_hint(threads=8, load=4.0, cores=16) is None  # cores to spare


def test_ticker_lines_every_interval_with_rate_and_eta():
    lines: list[str] = []
    t = pace.Ticker(epoch=1, epochs=4, steps=100, log=lines.append, enabled=True, every=30)
    now = [t.start]
    t.clock = lambda: now[0]
    for batch in range(1, 101):
        now[0] = t.start + batch * 1.0  # one batch of 10 images a second
        t.tick(batch, batch * 10, 0.5)
    assert len(lines) == 3, lines  # at 30, 60 and 90 s
    assert lines[0].startswith("epoch 2/4: batch 30/100 (30%), 10 img/s, loss 0.5000")
    # 70 batches left at 1 s, then 2 more epochs of 100
    assert "epoch ETA 1m10s" in lines[0] and "run ETA ~4m30s" in lines[0]
    quiet = pace.Ticker(epoch=0, epochs=1, steps=10, log=lines.append, enabled=False, every=0)
    quiet.tick(5, 50, 0.1)
    assert len(lines) == 3


def test_slow_epoch_warns_once():
    lines: list[str] = []
    p = pace.Pace(lines.append)
    for epoch, rate in enumerate([100.0, 90.0, 40.0, 30.0]):
        p.epoch_done(epoch, rate)
    assert len(lines) == 1 and "epoch 3 trained at 40 img/s" in lines[0] and "--threads 1" in lines[0]


@pytest.mark.usefixtures("tiny_models_one_thread")
def test_progress_lines_without_a_terminal(tmp_path, capsys, monkeypatch):
    """capsys's stderr is no terminal: the run logs progress lines (every batch here)."""
    monkeypatch.setattr(pace, "PROGRESS_SECONDS", 0.0)
    argv = ["train", "tiny_test", "--data", "synthetic", "--out", str(tmp_path / "r"), "--recipe", "demo"]
    argv += [
        "--epochs",
        "1",
        "--workers",
        "0",
        "--batch-size",
        "16",
        "--limit-train",
        "48",
        "--limit-val",
        "16",
    ]
    assert main(argv + ["--threads", "1"]) == 0
    err = capsys.readouterr().err
    progress = [line for line in err.splitlines() if line.startswith("epoch 1/1: batch ")]
    assert [line.split()[3] for line in progress] == ["1/3", "2/3", "3/3"], err
    assert all("img/s" in line and "ETA" in line for line in progress)
    assert main(argv[:5] + [str(tmp_path / "r2")] + argv[6:] + ["--threads", "0"]) == 2
    assert "--threads must be >= 1" in capsys.readouterr().err
