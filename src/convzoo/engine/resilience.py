"""Keeping a training run alive and honest: mid-epoch checkpoints, exact mid-epoch resume,
the non-finite-loss guard, and a test hook that kills the process at a chosen step.

`fit()` hands each epoch a `RunGuard`; the loop calls it in four places:

- `guard.batches(loader, epoch)` - the epoch's batches. After a mid-epoch resume it skips the
  batches the checkpoint already trained on, then restores the random-number states saved
  with it: after the loader's iterator exists, so nothing the iterator draws on creation
  shifts them. Skipping without workers advances only the sampler (no image is decoded);
  with workers the skipped batches are fetched and dropped, which replays each worker's
  random stream exactly (workers are seeded from the loader's per-epoch generator).
- `guard.batch_ok(images)` - False for a batch with no readable image (its files were named in
  warnings): the step is skipped, under torchrun on every rank together (see the method).
- `guard.loss_ok(loss)` - False for a NaN/Inf loss: the step is skipped (no backward, no
  update, no EMA update; BatchNorm running statistics the bad forward touched are put back)
  and counted. The third bad step in a row raises `RunFailed` (exit code 1); no checkpoint
  is written during a bad streak, so the last one on disk is the last good state.
- `guard.step_done(...)` - after every good update: writes a checkpoint when
  `checkpoint_minutes` had passed since the last one when the step began (0: after every
  step); under torchrun rank 0's clock decides, for all ranks (writing one is a collective).

The test hook: with CONVZOO_TEST_KILL_AT_STEP=N in the environment the process sends
itself SIGKILL just before global step N (0-based) starts, i.e. after the checkpoints of
steps 0..N-1 were written or skipped, exactly as an outside kill at that moment would.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import torch

from ..errors import RunFailed, UserError
from . import distributed as dist

KILL_ENV = "CONVZOO_TEST_KILL_AT_STEP"
MAX_BAD_STEPS = 3   # consecutive non-finite losses before the run is stopped


class RunGuard:
    def __init__(self, net: torch.nn.Module, minutes: float, save, resume: dict | None = None):
        """`save(position)` writes checkpoint.pt, `position` = `{"batch", "partial"}` in the
        epoch; `resume` = the checkpoint being resumed from (None for a new run)."""
        self.net, self.minutes, self.save = net, float(minutes), save
        self.last_save = time.monotonic()
        self.resume = resume if resume and resume.get("batch") else None   # mid-epoch position
        self.bad_total = int(resume.get("bad_steps", 0)) if resume else 0
        self.bad_run = 0
        self._due = False      # a checkpoint is due after this step (batch_ok decides)
        self._buffers: list[torch.Tensor] | None = None
        kill = os.environ.get(KILL_ENV)
        self.kill_at = int(kill) if kill not in (None, "") else None

    # -- batches ---------------------------------------------------------------------------
    def batches(self, loader, step: int):
        """Yield (batch index, global step, batch); resumes inside the epoch when needed."""
        start, it = 0, iter(loader)
        if self.resume is not None:
            from .checkpoint import set_rng_state
            start = int(self.resume["batch"])
            skip_batches(it, start, loader.num_workers)
            set_rng_state(self.resume["rng"])   # after the iterator: its creation draws no more
            self.resume = None
        for i in range(start, len(loader)):
            if self.kill_at is not None and step + i == self.kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            try:
                batch = next(it)
            except StopIteration:
                return
            yield i, step + i, batch

    def partial(self) -> dict | None:
        """Meters of the epoch resumed mid-way (None when it starts at batch 0)."""
        return self.resume["partial"] if self.resume is not None else None

    # -- batches without a readable image ------------------------------------------------------
    def batch_ok(self, images: int, where: str) -> bool:
        """Whether to train on this batch of `images` readable images; every rank gets the same answer.

        A single process skips a batch whose images were all unreadable. Under DDP a rank cannot
        skip alone: the others would wait in the gradient all-reduce for it forever. The choice
        made here: one small all-reduce per step of (ranks without an image, images of all ranks,
        rank 0's "checkpoint due"), and when any rank has no image, every rank skips the step, as
        a single process would (the other ranks' images of that batch go unused; rank 0 warns).
        The alternative, a zero gradient from the empty rank, would need a forward pass over no
        images (batch norm and the mean loss are undefined there) and would quietly shrink that
        step's averaged gradient. The same all-reduce carries rank 0's decision to checkpoint
        after this step, since a checkpoint gathers every rank's random state (a collective too).
        """
        due = time.monotonic() - self.last_save >= self.minutes * 60
        empty, total, votes = int(images == 0), images, int(due)
        if dist.is_distributed() and dist.world_size() > 1:
            empty, total, votes = dist.all_reduce_sums([empty, images, int(due and dist.is_main())])
        self._due = votes > 0
        if empty and total and dist.is_main():
            print(f"warning: no readable image on {empty} of {dist.world_size()} processes at {where}: step "
                  f"skipped on every process ({total} readable images of the others unused)",
                  file=sys.stderr, flush=True)
        return empty == 0

    # -- non-finite losses -------------------------------------------------------------------
    def before_forward(self) -> None:
        # BatchNorm updates its running statistics inside forward: keep a copy to undo a bad one
        self._buffers = [b.detach().clone() for b in self.net.buffers()]

    def loss_ok(self, loss: torch.Tensor, where: str) -> bool:
        if bool(torch.isfinite(loss.detach()).all()):
            self.bad_run = 0
            return True
        self.bad_total += 1
        self.bad_run += 1
        if self._buffers is not None:
            with torch.no_grad():
                for b, saved in zip(self.net.buffers(), self._buffers):
                    b.copy_(saved)
        value = loss.detach().float().flatten()[0].item()
        print(f"warning: loss is {value} at {where}: update skipped "
              f"({self.bad_run} in a row, {self.bad_total} in this run)", file=sys.stderr, flush=True)
        if self.bad_run >= MAX_BAD_STEPS:
            raise RunFailed(f"training stopped: {self.bad_run} non-finite losses in a row at {where} "
                            f"(lower the learning rate?); the last good checkpoint is kept")
        return False

    # -- checkpoints -------------------------------------------------------------------------
    def step_done(self, batch: int, partial: dict) -> None:
        """After the update of `batch`: a timed checkpoint when due (never inside a bad streak)."""
        if self.bad_run == 0 and self._due:
            self.save({"batch": batch + 1, "partial": partial})

    def saved(self) -> None:
        self.last_save = time.monotonic()


def skip_batches(it, n: int, workers: int) -> None:
    """Advance a fresh DataLoader iterator by `n` batches."""
    sampler = getattr(it, "_sampler_iter", None)   # single-process iterator: indices only
    streamed = isinstance(getattr(it, "_dataset", None), torch.utils.data.IterableDataset)  # shards: no indices
    if workers == 0 and sampler is not None and not streamed:
        for _ in range(n):
            next(sampler)
        it._num_yielded += n
        return
    for _ in range(n):
        next(it)


# ---- resuming with the same settings ----------------------------------------------------------
# settings a resumed run may change; the worker count is not among them: each worker has its own
# random stream, so it changes the augmentations (and resume would no longer be exact)
RESUME_MAY_CHANGE = ("epochs", "device", "checkpoint_minutes")


def _leaves(d: dict, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def check_resume(saved: dict, model: str, data_spec: str, requested: dict | None = None) -> None:
    """UserError naming the first setting given on the command line that differs from the run's
    (`saved` = its resolved config; `requested` = the options given, None values = not given)."""
    from ..recipes import _without_none
    from ..registry import canonical_name
    given = {"model": canonical_name(model), "data_spec": data_spec, **_without_none(requested or {})}
    for key, value in _leaves(given):
        if key in RESUME_MAY_CHANGE:
            continue
        node = saved
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node != value:
            name = {"data_spec": "data"}.get(key, key)
            raise UserError(f"--resume: {name} differs from the run being resumed ({node!r} there, {value!r} "
                            f"now); drop the option or start a new run in another --out")
