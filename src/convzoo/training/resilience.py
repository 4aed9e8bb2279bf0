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

Stopping (`StopRequest`): SIGTERM (preemption) and SIGINT (Ctrl-C) only set a flag; at the next
step boundary (under torchrun: when any rank got one, via the per-step all-reduce of `batch_ok`)
the guard writes a checkpoint and raises `errors.Interrupted` (exit code 128 + signum). A second
signal acts at once (the previous handler is back after the first).

Fault injection (`CONVZOO_FAULT`, see `faults`): the guard fires a planned fault just before its
global step starts, or after its epoch's checkpoint, exactly as an outside signal then would.
"""

from __future__ import annotations

import dataclasses
import signal
import sys
import threading
import time

import torch

from ..engine import distributed as dist
from ..errors import Interrupted, RunFailed, UserError
from ..recipes import with_later_settings, without_none
from ..recipes.config import RunConfig, dotted_get, dotted_items
from ..registry import canonical_name
from . import faults
from .checkpoint import set_rng_state
from .runfolder import check_data_location

MAX_BAD_STEPS = 3  # consecutive non-finite losses before the run is stopped


class StopRequest:
    """`with StopRequest() as stop:` SIGTERM/SIGINT set `stop.signum` instead of ending the process
    (main thread only; elsewhere signals keep their handlers). The first signal puts the previous
    handler back, so a second one stops at once."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum = 0
        self._previous: dict = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        self.signum = self.signum or signum
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))


class RunGuard:
    def __init__(
        self,
        net: torch.nn.Module,
        minutes: float,
        save,
        resume: dict | None = None,
        stop: StopRequest | None = None,
    ):
        """`save(position)` writes checkpoint.pt, `position` = `{"batch", "partial"}` in the
        epoch; `resume` = the checkpoint being resumed from (None for a new run); `stop` = the
        run's StopRequest (None: signals are not watched)."""
        self.net, self.minutes, self.save = net, float(minutes), save
        self.stop, self._stop = stop, 0
        self.last_save = time.monotonic()
        self.resume = resume if resume and resume.get("batch") else None  # mid-epoch position
        self.bad_total = int(resume.get("bad_steps", 0)) if resume else 0
        self.bad_run = 0
        self._due = False  # a checkpoint is due after this step (batch_ok decides)
        self._buffers: list[torch.Tensor] | None = None
        self.fault = faults.planned()  # CONVZOO_FAULT, read once: the loop pays one comparison

    # -- batches ---------------------------------------------------------------------------
    def batches(self, loader, step: int):
        """Yield (batch index, global step, batch); resumes inside the epoch when needed."""
        start, it = 0, iter(loader)
        if self.resume is not None:
            start = int(self.resume["batch"])
            if start > len(loader):
                raise UserError(
                    f"--resume: the checkpoint is {start} batches into an epoch of "
                    f"{len(loader)}: the data changed since; resume with the same data or "
                    f"start a new run"
                )
            skip_batches(it, start, loader.num_workers)
            set_rng_state(self.resume["rng"])  # after the iterator: its creation draws no more
            self.resume = None
        for i in range(start, len(loader)):
            if self.fault is not None:
                faults.at(self.fault, "step", step + i)
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
        stop = self.stop.signum if self.stop is not None else 0
        empty, total, votes, stops = int(images == 0), images, int(due), int(stop > 0)
        if dist.is_distributed() and dist.world_size() > 1:  # and any rank's stop request, for all
            empty, total, votes, stops = dist.all_reduce_sums(
                [empty, images, int(due and dist.is_main()), stops]
            )
        self._due = votes > 0
        if stops and not self._stop:
            self._stop = stop or signal.SIGTERM  # another rank's signal: the conventional SIGTERM
        if empty and total and dist.is_main():
            print(
                f"warning: no readable image on {empty} of {dist.world_size()} processes at {where}: step "
                f"skipped on every process ({total} readable images of the others unused)",
                file=sys.stderr,
                flush=True,
            )
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
        print(
            f"warning: loss is {value} at {where}: update skipped "
            f"({self.bad_run} in a row, {self.bad_total} in this run)",
            file=sys.stderr,
            flush=True,
        )
        if self.bad_run >= MAX_BAD_STEPS:
            raise RunFailed(
                f"training stopped: {self.bad_run} non-finite losses in a row at {where} "
                f"(lower the learning rate?); the last good checkpoint is kept"
            )
        return False

    # -- checkpoints -------------------------------------------------------------------------
    def step_done(self, batch: int, partial: dict) -> None:
        """After the update of `batch`: a timed checkpoint when due (never inside a bad streak);
        on a stop request a checkpoint, then `Interrupted`."""
        if self.bad_run == 0 and (self._due or self._stop):
            self.save({"batch": batch + 1, "partial": partial})
        if self._stop:
            name = signal.Signals(self._stop).name
            raise Interrupted(self._stop, f"stopped by {name} after batch {batch + 1}")

    def stop_at_epoch_end(self, epochs_done: int) -> None:
        """After an epoch's checkpoint: a fault planned for this epoch's end fires (a TERM or INT
        one is caught here, as one from outside would be); `Interrupted` when any rank got a
        signal meanwhile."""
        faults.at(self.fault, "epoch", epochs_done)
        stop = self.stop.signum if self.stop is not None else 0
        if dist.is_distributed() and dist.world_size() > 1 and dist.all_reduce_sums([int(stop > 0)])[0]:
            stop = stop or signal.SIGTERM
        if stop:
            raise Interrupted(stop, f"stopped by {signal.Signals(stop).name} after epoch {epochs_done}")

    def saved(self) -> None:
        self.last_save = time.monotonic()


def skip_batches(it, n: int, workers: int) -> None:
    """Advance a fresh DataLoader iterator by `n` batches."""
    sampler = getattr(it, "_sampler_iter", None)  # single-process iterator: indices only
    streamed = isinstance(
        getattr(it, "_dataset", None), torch.utils.data.IterableDataset
    )  # shards: no indices
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
RESUME_MAY_CHANGE = ("epochs", "device", "checkpoint_minutes", "val_every")


def check_resume(
    saved: dict,
    model: str,
    data_spec: str,
    requested: dict | None = None,
    identity: dict | None = None,
    where: str = "--resume",
    strict: bool = False,
) -> None:
    """UserError naming the first setting given on the command line that differs from the run's
    (`saved` = its config in the plain form; `requested` = the options given, plain, None values =
    not given). The data is compared by the folder it names from here (`identity`, the
    checkpoint's record; checkpoints without one compare the `--data` strings). `strict`: None
    values are compared too."""
    requested = requested or {}
    given = {"model": canonical_name(model), **(requested if strict else without_none(requested))}
    for key, value in dotted_items(given):
        if key in RESUME_MAY_CHANGE:
            continue
        there = dotted_get(saved, key)
        if there != value:
            raise UserError(
                f"{where}: {key} differs from the run being resumed ({there!r} there, {value!r} "
                f"now); drop the option or start a new run in another --out"
            )
    check_data_location(identity, data_spec, dotted_get(saved, "data_spec"), where)


def saved_config(state: dict) -> RunConfig:
    """The settings a checkpoint was written with, the ones added since at their defaults."""
    return RunConfig.from_dict(with_later_settings(state["config"]))


def resume_config(
    state: dict, model: str | None, data_spec: str | None, requested: dict | None = None
) -> RunConfig:
    """The config `--resume` continues: the checkpoint's, after `check_resume`, with the settings a
    resumed run may change (RESUME_MAY_CHANGE) taken from `requested` and `--data` as given here
    (it names the same folder: checked). `model` / `data_spec` None: the run's."""
    saved = saved_config(state)
    data_spec = data_spec or saved.data_spec
    check_resume(saved.to_dict(), model or saved.model, data_spec, requested, state.get("data_identity"))
    changes = {
        key: requested[key] for key in RESUME_MAY_CHANGE if requested and requested.get(key) is not None
    }
    return dataclasses.replace(saved, data_spec=data_spec, **changes)


# settings `fit` resolves itself: "auto" in a fresh config matches whatever they became
RESOLVED_BY_FIT = ("precision", "channels_last")


def check_accumulation(accum_steps: int, batches: int) -> None:
    """UserError when one optimizer step would gather more batches than an epoch has: the run's
    global batch and any lr scaled by it would be a fiction, its single step per epoch a surprise
    (`--accum-steps 1000000` on 4 batches trained to "done" on 4 steps of an 8,000,000 batch)."""
    if accum_steps > max(1, batches):
        raise UserError(
            f"accum_steps {accum_steps} is more than the {batches} batches of an epoch (each rank's "
            f"share): give at most {max(1, batches)}, or a smaller batch size"
        )


def check_restart(state: dict, cfg: RunConfig) -> None:
    """A torchrun restart (no `--resume`, a checkpoint in --out) continues that checkpoint only when
    it is this command line's run: every setting of `cfg` is checked as `--resume` checks the
    options it is given, and the data by its folder (then by its fingerprint, in fit)."""
    requested = {
        key: value
        for key, value in cfg.to_dict().items()
        if key not in ("model", "data_spec") and not (key in RESOLVED_BY_FIT and value == "auto")
    }
    check_resume(
        saved_config(state).to_dict(),
        cfg.model,
        cfg.data_spec,
        requested,
        state.get("data_identity"),
        where="torchrun restart",
        strict=True,
    )
