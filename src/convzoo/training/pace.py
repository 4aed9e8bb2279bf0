"""How fast training goes, said where a log sees it, and why it is slow when the machine is busy.

- `busy_hint`: before training, the load average (processes wanting a core over the last minute)
  against the cores and torch's threads. OpenMP threads wait for each other at every operation:
  when another process holds one of the cores they need, every step waits for it (two threads on a
  busy 2-core machine were measured 10x slower than one).
- `Ticker`: the progress bar is for a terminal; when stderr is a file or a pipe (a log, a job
  scheduler) one line every `PROGRESS_SECONDS` says where the epoch is, its images/s and the time
  left for the epoch and the run.
- `Pace`: the images/s of each epoch against the first epoch's: an epoch at under `SLOWDOWN` of
  it (another job started, the machine got busy) gets one hint, once per run.
"""

from __future__ import annotations

import os
import time

import torch

PROGRESS_SECONDS = 30.0
SLOWDOWN = 0.5

ADVICE = (
    "--threads 1 (or OMP_NUM_THREADS=1) is often much faster on a busy machine, "
    "or train when the machine is quieter"
)


def busy_hint(threads: int | None = None, load: float | None = None, cores: int | None = None) -> str | None:
    """A line when other processes already hold a core this run's threads need (None otherwise, and
    where the load average cannot be read)."""
    threads = threads or torch.get_num_threads()
    cores = cores or os.cpu_count() or 1
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (OSError, AttributeError):  # not on every platform
            return None
    if threads <= 1 or load < cores - threads + 1:
        return None
    return (
        f"warning: the machine is busy (load average {load:.1f} on {cores} cores) and training uses "
        f"{threads} threads, which wait for each other at every step when a core is taken: {ADVICE}"
    )


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Ticker:
    """One progress line every `every` seconds inside an epoch (for logs: no terminal, no bar)."""

    def __init__(self, epoch: int, epochs: int, steps: int, log, enabled: bool, initial: int = 0, every=None):
        self.epoch, self.epochs, self.steps, self.log, self.enabled = epoch, epochs, steps, log, enabled
        self.initial = initial  # batches done before this ticker started (a resumed epoch)
        self.every, self.clock = PROGRESS_SECONDS if every is None else every, time.perf_counter
        self.start = self.last = self.clock()

    def tick(self, batches_done: int, images: int, loss: float) -> None:
        """After a step: `batches_done` of `steps` (counted from the epoch's start, a resumed epoch
        included), `images` trained since this ticker started, the running mean loss."""
        now = self.clock()
        if not self.enabled or now - self.last < self.every or batches_done <= self.initial:
            return
        self.last = now
        spent = now - self.start
        rate = images / spent if spent else 0.0
        per_batch = spent / (batches_done - self.initial)  # seconds per batch
        left = per_batch * (self.steps - batches_done)
        run_left = left + per_batch * self.steps * (self.epochs - self.epoch - 1)
        self.log(
            f"epoch {self.epoch + 1}/{self.epochs}: batch {batches_done}/{self.steps} "
            f"({100 * batches_done / max(1, self.steps):.0f}%), {rate:.0f} img/s, loss {loss:.4f}, "
            f"epoch ETA {duration(left)}, run ETA ~{duration(run_left)} (without validation)"
        )


class Pace:
    """The first epoch's images/s, against which later epochs are judged (one hint per run)."""

    def __init__(self, log):
        self.log, self.first, self.warned = log, None, False

    def epoch_done(self, epoch: int, images_per_second: float) -> None:
        if not images_per_second:
            return
        if self.first is None:
            self.first = images_per_second
            return
        if not self.warned and images_per_second < SLOWDOWN * self.first:
            self.warned = True
            self.log(
                f"warning: epoch {epoch + 1} trained at {images_per_second:.0f} img/s, under half the "
                f"{self.first:.0f} img/s of the first: the machine is probably busy with other work "
                f"(load average {_load()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads); "
                + ADVICE
            )


def _load() -> str:
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except (OSError, AttributeError):
        return "unknown"
