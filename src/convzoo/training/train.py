"""`fit()`: a training run, top to bottom - settings, data, model and the loop (`_fit`), one
epoch (`_epoch`) and its steps (`train_one_epoch`); below them the pieces they use, in the
order they use them.

A run folder receives, after every epoch: last.safetensors / best.safetensors (weights with
their WeightSpec; best among the validated epochs: every `val_every`-th and the last),
checkpoint.pt (exact resume), config.yaml, metrics.csv, summary.json and loss.png / top1.png
(training/runfolder.py writes them). With EMA (Polyak averaging) or lookahead enabled,
validation and both weights files use the averaged weights (as the Inception papers
evaluate); checkpoint.pt holds both. With the `tensorboard` extra installed, tensorboard/
receives TensorBoard event files as the run goes (analysis/curves.py EventLog).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import sys
import time
from collections.abc import Sized
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml
from tqdm import tqdm

from ..analysis.curves import EventLog, event_log
from ..data.memory import in_memory_loaders
from ..data.shards import ShardDataset
from ..data.source import Split, open_source
from ..data.transforms import eval_transform, train_transform
from ..engine import distributed as dist
from ..engine.accel import (
    FAST_INFERENCE_PRECISIONS,
    compile_decision,
    fast_inference,
    precision_choice,
    resolve_auto,
)
from ..engine.loaders import Mapped, make_loader, seed_epoch, subset_indices
from ..errors import Interrupted, UserError
from ..inference.evaluate import Meter, autocast, evaluate, topk_correct
from ..outputs import atomic_text
from ..recipes.config import LossConfig, OptimConfig, RunConfig
from ..registry import model_info
from ..weights import WeightSpec
from .budget import time_budget
from .checkpoint import CHECKPOINT, for_rank, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .finetune import keep_frozen_bn_eval, prepare_model, split_csv
from .optim import Lookahead, LRSchedule, ModelEMA, build_optimizer
from .pace import Pace, Ticker, busy_hint
from .resilience import RunGuard, StopRequest, check_accumulation, check_restart
from .runfolder import (
    check_data_identity,
    data_identity,
    make_summary,
    missing_folders,
    open_for_every_rank,
    remove_unused_folder,
    run_files_current,
    save_run_files,
)


def log(*parts) -> None:
    if dist.is_main():  # under torchrun only rank 0 talks
        print(*parts, file=sys.stderr, flush=True)


@dataclass
class Trainer:
    """What the loop of a run works with, built by `_fit` before the first epoch."""

    cfg: RunConfig  # with precision, channels_last and device as resolved for this machine
    out: str
    world: dist.DistInfo
    data: Data
    net: nn.Module  # the model itself: its weights are saved and validated
    model: nn.Module  # what trains: `net`, or its DDP / compiled wrapper
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    scaler: torch.amp.GradScaler
    ema: ModelEMA | Lookahead | None
    data_sizes: dict
    identity: dict
    epoch: int = 0  # the epoch being trained (0-based)
    step: int = 0  # the global optimizer step at that epoch's first batch
    history: list = field(default_factory=list)
    best: dict = field(default_factory=dict)
    pace: Pace = field(default_factory=lambda: Pace(log))  # images/s against the first epoch's
    events: EventLog | None = None  # TensorBoard (rank 0, with the tensorboard extra)

    @property
    def weights(self) -> nn.Module:
        """The weights the run validates and saves: the averaged ones with EMA or lookahead."""
        return self.ema.module if self.ema is not None else self.net

    def save_files(self, is_best: bool) -> None:
        """The files of the epoch just done (rank 0), derived from its checkpoint."""
        save_run_files(
            self.out,
            self.cfg,
            self.data.spec,
            self.weights,
            self.history,
            self.best,
            is_best,
            self.data_sizes,
        )

    def summary(self) -> dict:
        return make_summary(self.cfg, self.history, self.best, self.data_sizes)


# ---- the run ----------------------------------------------------------------------------------------
def fit(
    cfg: RunConfig,
    out: str,
    resume: bool = False,
    overwrite: bool = False,
    notes: tuple[str, ...] = (),
) -> dict:
    """Train `cfg.model` on `cfg.data_spec` into the run folder `out`; returns the summary.

    `cfg`: the run's settings (convzoo.recipes.resolve, or a checkpoint's on resume).
    A folder that holds a run is refused unless `resume` (or `overwrite`: its run files are removed);
    the folder is locked for the run (training/runfolder.py). A torchrun restart resumes from the
    checkpoint only after the same checks as `--resume` (resilience.check_restart). SIGTERM/SIGINT
    write a checkpoint at the next step boundary and end with `errors.Interrupted` (exit 128+signum).
    `notes`: lines about what the command chose for the run, said once when training starts.
    """
    # -- settings; under torchrun: join the process group (rank 0 alone writes files and logs)
    world = dist.init_distributed(cfg.device if isinstance(cfg.device, str) else f"cuda:{cfg.device}")
    restarted = (
        not resume and dist.restart_count() > 0 and os.path.isfile(os.path.join(out, CHECKPOINT))
    )  # torchrun --max-restarts
    # on any node: the agent of a node that replaced a lost one counts its restarts from 0
    restarted = dist.all_reduce_sums([int(restarted)])[0] > 0
    resume = dist.broadcast_object(resume or restarted)  # rank 0 decides; every rank reads the shared --out
    made = missing_folders(out)  # what this call creates: a failure before any epoch removes them
    lock = open_for_every_rank(out, resume, overwrite)
    done = False
    try:
        with StopRequest() as stop:
            summary = _fit(cfg, out, world, resume, restarted, stop, notes)
        done = True
        return summary
    finally:
        if lock is not None:
            lock.release()
            if made and not done:
                remove_unused_folder(out, made)


def _fit(
    cfg: RunConfig, out: str, world: dist.DistInfo, resume: bool, restarted: bool, stop, notes=()
) -> dict:
    # -- settings: the checkpoint a resumed run continues, the lr, precision for this machine, seeds
    ckpt_path = os.path.join(out, CHECKPOINT)
    state = _saved_state(ckpt_path, cfg, world, resume, restarted)
    # a finished run whose last files were not all written goes on below to write them
    if state is not None and state["epoch"] >= cfg.epochs and _files_current(out, state):
        return _already_finished(cfg, out, state)
    if cfg.precision == "auto":  # said once, with the measurement or setting behind it
        chosen, why = precision_choice(world.device)
        notes = (*notes, f"precision {chosen} (auto: {why})")
    cfg, lr, global_batch = _on_this_machine(cfg, world)
    if dist.is_main():
        os.makedirs(out, exist_ok=True)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)

    # -- data
    data, identity = _run_data(cfg, out, world, state)

    # -- model (fresh, or fine-tuned from weights with frozen stages and a head lr multiplier),
    # optimizer, schedule, loss scaling, weight averaging
    net, model, param_groups, compile_note = _model(cfg, data, world, fresh=state is None)
    notes = (*notes, compile_note) if compile_note else notes
    optimizer = build_optimizer(net, cfg.optim, param_groups, lr=lr)
    run = Trainer(
        cfg,
        out,
        world,
        data,
        net,
        model,
        optimizer,
        LRSchedule(optimizer, cfg.schedule, lr, cfg.epochs),
        torch.amp.GradScaler(world.device.type, enabled=cfg.precision == "fp16"),
        averaging(net, cfg),
        _data_sizes(data, world, global_batch),
        identity,
    )
    if state is not None:
        _resume(run, state, ckpt_path)
    guard = RunGuard(net, cfg.checkpoint_minutes, save=None, resume=state, stop=stop)
    guard.save = lambda position=None: _save(run, guard, ckpt_path, position)
    budget, run.schedule = time_budget(cfg, data, run.schedule, run.history)  # (None, schedule): no limit
    if budget is not None and budget.exhausted:
        log(f"run in {out} has spent its time_limit_minutes={cfg.time_limit_minutes}; nothing to do")
        dist.cleanup()
        return run.summary()
    _start(run, notes, lr, global_batch)

    # -- the loop
    try:
        for epoch in range(run.epoch, cfg.epochs):
            run.epoch = epoch
            out_of_time = _epoch(run, guard, budget)
            if out_of_time:
                log(f"time limit of {cfg.time_limit_minutes} min reached after {epoch + 1} epochs")
                break
    except Interrupted as e:
        log(
            f"{e.message}; checkpoint {ckpt_path} written. Continue with: convzoo train {cfg.model} "
            f"--data {cfg.data_spec} --out {out} --resume"
        )
        dist.cleanup()
        raise
    finally:  # the event files are complete whatever ends the loop
        if run.events is not None:
            run.events.close()
    return _finish(run)


def _epoch(run: Trainer, guard: RunGuard, budget) -> bool:
    """Train epoch `run.epoch`, validate it when due, write the checkpoint and the run files;
    returns whether the time budget ran out."""
    cfg, data, epoch = run.cfg, run.data, run.epoch
    seed_epoch(data.train, cfg.seed, epoch, run.world.rank)
    if hasattr(data.train, "set_progress"):  # data.progressive: the size for where the schedule is
        size = data.train.set_progress(run.schedule.position(epoch) / cfg.epochs)
        if size != data.input_size:
            log(f"epoch {epoch + 1}: training at {size}px (data.progressive)")
    if dist.is_distributed():  # each rank's own random stream, a function of (seed, epoch, rank)
        torch.manual_seed(cfg.seed * 100003 + epoch + run.world.rank * 1000003)
    t0 = time.perf_counter()
    train = train_one_epoch(run, guard)
    # the budget only runs while the loader does: these hold until the next epoch
    out_of_time = budget is not None and budget.exhausted
    ends = epoch + 1 == cfg.epochs or out_of_time  # the run's last validation
    validated = ends or (epoch + 1) % cfg.val_every == 0
    per_class = len(data.classes) if ends and len(data.classes) <= PER_CLASS_MAX else 0
    val = NOT_VALIDATED
    if validated:
        val = validate(
            run.weights, data.val, run.world.device, cfg.precision, cfg.channels_last is True, per_class
        )
        run.schedule.epoch_end(100.0 - val["top1"])
    row = {
        "epoch": epoch + 1,
        **train,
        "val_loss": val["loss"],
        "val_top1": val["top1"],
        "val_top5": val["top5"],
        "seconds": time.perf_counter() - t0,
        "skipped": train["skipped"] + val["skipped"],
        "nonfinite_steps": guard.bad_total,
    }
    if "per_class" in val:  # {class: [top-1 hits, images]}: summary.json's per_class
        row["val_per_class"] = dict(zip(data.classes, val["per_class"]))
    run.history.append(row)
    is_best = validated and (not run.best or val["top1"] > run.best["top1"])
    if is_best:
        run.best = {"top1": val["top1"], "top5": val["top5"], "epoch": epoch + 1}
    log(epoch_line(row, cfg, len(data.classes)))
    run.pace.epoch_done(epoch, train["images_per_second"])
    run.step += len(data.train)
    # the checkpoint first: it is the epoch's commit, the files below are derived from it and
    # written again on resume when a stop came between (runfolder.run_files_current)
    guard.save()
    if dist.is_main():
        run.save_files(is_best)
        if run.events is not None:
            run.events.epoch(row)
    guard.stop_at_epoch_end(epoch + 1)  # SIGTERM/SIGINT during validation: the checkpoint is written
    return out_of_time


def train_one_epoch(run: Trainer, guard: RunGuard) -> dict:
    """The steps of epoch `run.epoch`; `guard` (resilience.RunGuard) resumes it mid-way, skips
    non-finite losses and writes the timed checkpoints.

    With accum_steps = k, one optimizer step per k batches, the loss of each divided by the
    number of batches in its group (= one batch k times larger). Under DDP the gradient
    all-reduce runs only on a group's last batch (no_sync before), and a non-finite loss on any
    rank skips the step on every rank (their collectives must pair up)."""
    cfg, model, optimizer, schedule, scaler = run.cfg, run.model, run.optimizer, run.schedule, run.scaler
    epoch, device, steps, accum = run.epoch, run.world.device, len(run.data.train), cfg.accum_steps
    model.train()
    meter, skipped, start = Meter(), 0, time.perf_counter()
    partial = guard.partial()
    if partial:  # resumed inside this epoch: its meters so far
        meter.add(partial["loss"], partial["c1"], 0, partial["n"])
        skipped, start = partial["skipped"], start - partial["seconds"]
    bar, ticker = _progress(run, guard, partial["batch"] if partial else 0)
    n0 = meter.n
    optimizer.zero_grad(set_to_none=True)
    for i, _, (images, labels, n_skipped) in bar:
        skipped += n_skipped
        if not guard.batch_ok(labels.numel(), f"epoch {epoch + 1}, batch {i}"):  # every rank alike
            continue
        first, group = i - i % accum, min(accum, steps - (i - i % accum))  # this group's batches
        last_of_group = i + 1 == first + group
        lr = schedule.step(epoch + first / steps)  # one lr per optimizer step
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        if cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        guard.before_forward()
        ddp = cast(nn.parallel.DistributedDataParallel, model)  # (no_sync: DDP's, where it wraps the model)
        sync = contextlib.nullcontext() if last_of_group or not hasattr(model, "no_sync") else ddp.no_sync()
        with sync:
            with autocast(device, cfg.precision):
                loss, logits = compute_loss(model(images), labels, cfg.loss)
            if not guard.loss_ok(dist.agree_finite(loss), f"epoch {epoch + 1}, batch {i}"):
                optimizer.zero_grad(set_to_none=True)  # drop the whole accumulation group
                continue
            scaler.scale(loss / group).backward()
        c1, _ = topk_correct(logits.detach(), labels, ks=(1, 1))
        loss_value = float(loss.detach())  # one device-to-host copy a batch, for the meter and the log
        meter.add(loss_value * labels.numel(), c1, 0, labels.numel())
        if not last_of_group:
            continue
        if cfg.clip_grad_norm:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if run.ema is not None:  # Lookahead reads where the run is: the schedule's position
            run.ema.update(dist.unwrap(model), schedule.position(epoch + (i + 1) / steps) / cfg.epochs)
        rate = meter.n / (time.perf_counter() - start)
        bar.set_postfix(
            loss=f"{meter.loss / meter.n:.3f}",
            top1=f"{100 * meter.c1 / meter.n:.1f}",
            img_s=f"{rate:.0f}",
            lr=f"{lr:.4g}",
            refresh=False,
        )
        ticker.tick(i + 1, (meter.n - n0) * dist.world_size(), meter.loss / meter.n)
        if run.events is not None:  # TensorBoard (rank 0): this batch's loss, every few batches
            run.events.batch(run.step + i + 1, loss_value, lr)
        seconds = time.perf_counter() - start
        meters = {"loss": meter.loss, "c1": meter.c1, "n": meter.n, "skipped": skipped, "seconds": seconds}
        guard.step_done(i, {"batch": i + 1, **meters})
    return _epoch_result(run, meter, skipped, time.perf_counter() - start)


def compute_loss(output, labels: torch.Tensor, loss_cfg: LossConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy (label smoothing) plus aux_weight x each auxiliary head's loss; returns (loss, logits).

    A model with auxiliary heads returns ModelOutput(logits, aux) in training mode (docs/DESIGN.md).
    """
    smoothing = loss_cfg.label_smoothing
    logits, aux = (output.logits, output.aux) if hasattr(output, "aux") else (output, ())
    loss = F.cross_entropy(logits.float(), labels, label_smoothing=smoothing)
    for a in aux:
        if loss_cfg.aux_weight:
            loss = loss + loss_cfg.aux_weight * F.cross_entropy(a.float(), labels, label_smoothing=smoothing)
    return loss, logits


def _progress(run: Trainer, guard: RunGuard, first: int):
    """(bar, ticker): the epoch's batches behind a progress bar, from batch `first`, and a Ticker
    that prints a progress line every PROGRESS_SECONDS where there is no terminal (a log file,
    a pipe)."""
    steps = len(run.data.train)
    bar = tqdm(
        guard.batches(run.data.train, run.step),
        total=steps,
        initial=first,
        desc=f"epoch {run.epoch + 1}/{run.cfg.epochs}",
        unit="batch",
        file=sys.stderr,
        dynamic_ncols=True,
        leave=False,
        disable=None if dist.is_main() else True,
    )
    tty = getattr(sys.stderr, "isatty", lambda: False)()
    return bar, Ticker(run.epoch, run.cfg.epochs, steps, log, dist.is_main() and not tty, first)


def _epoch_result(run: Trainer, meter: Meter, skipped: int, seconds: float) -> dict:
    """The epoch's training figures; under torchrun the loss, hits and images of all ranks
    (images per second = the whole job's)."""
    meter.loss, meter.c1, meter.n, skipped = dist.all_reduce_sums([meter.loss, meter.c1, meter.n, skipped])
    r = meter.result()
    epoch, steps, schedule = run.epoch, len(run.data.train), run.schedule
    return {
        "lr": schedule.lr_at(epoch + (steps - 1) / steps) if steps else schedule.lr_at(epoch),
        "train_loss": r["loss"],
        "train_top1": r["top1"],
        "train_images": r["images"],
        "train_seconds": seconds,
        "skipped": skipped,
        "images_per_second": r["images"] / seconds if seconds else 0.0,
    }


# ---- settings -----------------------------------------------------------------------------------------
def _already_finished(cfg: RunConfig, out: str, state: dict) -> dict:
    log(f"run in {out} is already finished ({state['epoch']}/{cfg.epochs} epochs); nothing to do")
    summary = make_summary(cfg, state["history"], state["best"], {})
    dist.cleanup()  # (after log and summary: once the group is gone every process counts as rank 0)
    return summary


def _on_this_machine(cfg: RunConfig, world: dist.DistInfo) -> tuple[RunConfig, float, int]:
    """(cfg, lr, global batch): the settings as this machine runs them - precision and
    channels_last "auto" made the fastest that keeps results on this device (accel.py), the
    device the process group gave - and the lr for the global batch."""
    global_batch = cfg.batch_size * cfg.accum_steps * world.world_size
    precision, channels_last = resolve_auto(cfg.precision, cfg.channels_last, world.device)
    cfg = dataclasses.replace(cfg, device=str(world.device), precision=precision, channels_last=channels_last)
    return cfg, scaled_lr(cfg.optim, global_batch), global_batch


def scaled_lr(optim: OptimConfig, global_batch: int) -> float:
    """`optim.lr`, times global batch / lr_base_batch with lr_scaling linear (Goyal et al. 2017)."""
    return optim.lr * (global_batch / optim.lr_base_batch if optim.lr_scaling == "linear" else 1)


def _start(run: Trainer, notes, lr: float, global_batch: int) -> None:
    """config.yaml and the event log (rank 0), then what the command chose for the run (`notes`,
    once) and one line saying what trains where."""
    cfg, world, data = run.cfg, run.world, run.data
    if dist.is_main():
        config_yaml = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
        atomic_text(os.path.join(run.out, "config.yaml"), config_yaml)
        run.events = event_log(run.out, config_yaml, run.epoch, run.step, cfg.tensorboard)  # None without it
    for note in notes:  # what the command chose for this run (schedule length, preprocessing), once
        log(note)
    log(
        f"training {cfg.model} on {cfg.data_spec} ({run.data_sizes['train_images']} train / "
        f"{run.data_sizes['val_images']} val images, {len(data.classes)} classes, {data.input_size}px) "
        f"recipe {cfg.recipe}, {cfg.precision} on {world.device}, out {run.out}"
        + (
            f"; {world.world_size} processes ({world.backend}), global batch {global_batch}, lr {lr:.4g}"
            if dist.is_distributed()
            else ""
        )
    )
    if world.device.type == "cpu":
        hint = busy_hint()
        if hint:
            log(hint)


def _finish(run: Trainer) -> dict:
    """The run's summary, said in a line (and per class for a few classes)."""
    summary = run.summary()
    top5 = f" top5 {summary['top5']:.2f}" if len(run.data.classes) > 5 else ""  # always 100 % below 6 classes
    log(
        f"done: top1 {summary['top1']:.2f}{top5} (best {summary['best_top1']:.2f} "
        f"at epoch {summary['best_epoch']}), {summary['wall_seconds']:.0f}s; files in {run.out}"
    )
    if summary["per_class"]:
        log(per_class_line(summary["per_class"]))
    dist.cleanup()
    return summary


def _saved_state(
    ckpt_path: str, cfg: RunConfig, world: dist.DistInfo, resume: bool, restarted: bool
) -> dict | None:
    """The checkpoint a resumed run continues from, as this rank sees it (its own random states
    and meters; UserError for another world size mid-epoch); None for a fresh run."""
    if not resume:
        return None
    state = load_checkpoint(ckpt_path)
    if restarted:  # fit() restarts only where a checkpoint exists
        check_restart(state, cfg)
        log(f"torchrun restart {dist.restart_count()}: continuing the run in {os.path.dirname(ckpt_path)}")
    return for_rank(state, world.rank, world.world_size)


def _files_current(out: str, state: dict) -> bool:
    """Whether the run files are those of the checkpoint's epoch (rank 0 reads, every rank
    learns); a mid-epoch checkpoint always follows its epoch's files."""
    if state.get("batch") or not state["epoch"]:
        return True
    return bool(dist.broadcast_object(run_files_current(out, state["epoch"]) if dist.is_main() else None))


# ---- data ---------------------------------------------------------------------------------------------
def _run_data(cfg: RunConfig, out: str, world: dist.DistInfo, state: dict | None) -> tuple[Data, dict]:
    """(data, its identity): the run's loaders, checked against what the run needs (enough
    batches for one optimizer step, a resumed run's images); split.csv for a single tree."""
    data = build_data(cfg, world)
    check_accumulation(cfg.accum_steps, len(data.train))
    identity = data_identity(cfg.data_spec, *data.sizes, data.classes)
    if state is not None:  # the same folder (checked before) must still hold the same images
        check_data_identity(state.get("data_identity"), identity)
    if data.split is not None and world.is_main:
        atomic_text(os.path.join(out, "split.csv"), split_csv(data.split))
    return data, identity


@dataclass
class Data:
    train: torch.utils.data.DataLoader
    val: torch.utils.data.DataLoader
    classes: list[str]
    input_size: int
    native_size: int | None
    label_set: str
    spec: WeightSpec  # what the weights files record: `convzoo eval` rebuilds the same val set from it
    split: Split | None = None  # a single class-folder tree's split (written to split.csv)
    sizes: tuple[int, int] = (0, 0)  # images in the whole train and val splits (before any subset)


def image_count(dataset) -> int:
    """Images in a split: a stream (`shards:DIR`) knows all ranks' total, a map-style set its length."""
    total = getattr(dataset, "total", None)
    return int(total) if total is not None else len(cast(Sized, dataset))


def build_data(cfg: RunConfig, world: dist.DistInfo | None = None) -> Data:
    """Train/val loaders from the data SPEC, with the recipe's augmentation and the eval preset.

    Under torchrun (`world`), rank r reads its share: TrainSampler / EvalSampler for map-style
    datasets, the rank's range of the stream for `shards:DIR` (see engine/distributed.py).
    """
    world = world or dist.DistInfo()  # one process
    d, seed = cfg.data, cfg.seed
    source = open_source(cfg.data_spec, d.val_split_name, d.val_split, seed)
    train_set, val_set = source.train_val()
    split = source.tree() if source.layout == "single-tree" else None
    size = d.input_size or model_info(cfg.model).input_size
    native = train_set.native_size
    sizes = (image_count(train_set), image_count(val_set))
    check_classes(cfg.data_spec, list(train_set.classes), getattr(train_set, "targets", None))

    # 32x32 data at its own size: resize = crop = the image itself (also for `predict` later)
    resize = size if native and native == size else None
    train_tf = train_transform(d.augment, size, d.mean, d.std)
    val_tf = eval_transform(size, d.mean, d.std, resize_size=resize, crop="center", native_size=native)
    loaders = [
        _file_loader(cfg, world, train_set, train_tf, d.max_train_images, train=True),
        _file_loader(cfg, world, val_set, val_tf, d.max_val_images, train=False),
    ]
    if d.in_memory and native and native <= 64 and size == native and not dist.launched_by_torchrun():
        # small images: decoded once into a uint8 tensor, augmented per batch (data/memory.py)
        loaders = in_memory_loaders(
            train_set,
            val_set,
            d,
            cfg.batch_size,
            seed,
            size,
            subset_indices(len(train_set), d.max_train_images, seed),
            subset_indices(len(val_set), d.max_val_images, seed + 1),
        )
    elif d.in_memory:
        log(
            "data.in_memory: only for images of at most 64px at their own size in one process; using files"
            + (" (and data.progressive, which needs it, is off)" if d.progressive else "")
        )
    elif d.progressive:
        log("data.progressive works with data.in_memory only; training at the full size")
    classes = list(train_set.classes)
    spec = WeightSpec(
        model=cfg.model,
        num_classes=len(classes),
        labels=classes,
        mean=d.mean,
        std=d.std,
        input_size=size,
        crop_size=size,
        resize_size=resize,
        source="convzoo",
        extra={"native_size": native, "label_set": train_set.label_set, **source.record()},
    )
    return Data(
        train=loaders[0],
        val=loaders[1],
        classes=classes,
        input_size=size,
        native_size=native,
        label_set=train_set.label_set,
        spec=spec,
        split=split,
        sizes=sizes,
    )


def _file_loader(cfg: RunConfig, world: dist.DistInfo, ds, tf, limit: int | None, train: bool):
    """A DataLoader over a split's files (or its shards) with transform `tf`, `limit` images."""
    pin = cfg.device != "cpu" and torch.cuda.is_available()
    bs, workers, seed = cfg.batch_size, cfg.workers, cfg.seed
    if isinstance(ds, ShardDataset):  # shards:DIR streams its own share
        ds.take(limit)  # the first `limit` packed samples (pack shuffled the training split)
        ds.transform, ds.rank, ds.world_size, ds.batch_size = tf, world.rank, world.world_size, bs
        return make_loader(ds, bs, workers, shuffle=False, pin_memory=pin)
    mapped = Mapped(ds, tf, subset_indices(len(ds), limit, seed if train else seed + 1))
    sampler = None
    if dist.launched_by_torchrun():
        sampler = (
            dist.TrainSampler(len(mapped), world.rank, world.world_size, seed)
            if train
            else dist.EvalSampler(len(mapped), world.rank, world.world_size)
        )
    return make_loader(mapped, bs, workers, shuffle=train, pin_memory=pin, sampler=sampler)


TINY_CLASS = 5  # fewer training images than this: a class the network can hardly learn

IMBALANCE = 10  # a class with under 1/IMBALANCE of the largest class's images is predicted rarely

PER_CLASS_MAX = 20  # per-class accuracy is reported for at most this many classes


def check_classes(spec: str, classes: list[str], targets: list[int] | None) -> None:
    """One class: refused (a classifier of one class is 100 % right and learns nothing). Classes
    with few training images, or far fewer than the largest: one warning naming them, once per
    run. `targets`: the training labels (None for a stream, whose counts are not known ahead)."""
    if len(classes) < 2:
        raise UserError(
            f"{spec}: {len(classes)} class{'' if len(classes) == 1 else 'es'} "
            f"({', '.join(classes) or 'none'}); training a classifier needs at least two class folders"
        )
    if targets is None or not targets:
        return
    counts = np.bincount(np.asarray(targets, dtype=np.int64), minlength=len(classes)).tolist()
    largest = max(counts)
    tiny = [c for c, n in zip(classes, counts) if n < TINY_CLASS]
    small = [c for c, n in zip(classes, counts) if n >= TINY_CLASS and n * IMBALANCE < largest]
    if not tiny and not small:
        return
    named = {c: n for c, n in zip(classes, counts)}
    parts = []
    if tiny:
        parts.append(f"under {TINY_CLASS} training images in {_named(tiny, named)}")
    if small:
        parts.append(
            f"under 1/{IMBALANCE} of the largest class ({largest}) in {_named(small, named)}, which the "
            "network will rarely predict"
        )
    shown = " (the per-class accuracy at the end shows what they reach)"
    shown = shown if len(classes) <= PER_CLASS_MAX else ""
    log(f"warning: {'; '.join(parts)}: add images to these classes{shown}")


def _named(names: list[str], counts: dict[str, int], most: int = 8) -> str:
    shown = ", ".join(f"{c} ({counts[c]})" for c in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


# ---- model ------------------------------------------------------------------------------------------
def _model(
    cfg: RunConfig, data: Data, world: dist.DistInfo, fresh: bool
) -> tuple[nn.Module, nn.Module, list | None, str | None]:
    """The run's model `net`, the module that trains it (DDP / compiled wrappers), its optimizer
    param groups, and what `compile: auto` chose and why (said with the run's other choices)."""
    net, param_groups = prepare_model(cfg, len(data.classes), log)
    if fresh and not cfg.finetune.weights and hasattr(net, "init_from_data"):
        init_from_data(net, data.train, log)
    if cfg.sync_bn:
        net = dist.convert_sync_batchnorm(net, world.device)
    keep_frozen_bn_eval(net)  # --freeze: frozen BN keeps its running statistics
    net = net.to(world.device)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    model = net
    if dist.is_distributed():
        # aux heads whose loss weight is 0 get no gradient: DDP must then look for unused parameters
        unused = not cfg.loss.aux_weight and any("aux" in n.lower() for n, _ in net.named_modules())
        model = nn.parallel.DistributedDataParallel(
            net,
            device_ids=[world.device] if world.device.type == "cuda" else None,
            find_unused_parameters=unused,
        )
    compiled, compile_note = compile_run(cfg, net, data, world)
    if compiled:
        model = cast(nn.Module, torch.compile(model))
    # evaluation (`validate`) bypasses DDP: ranks may hold different numbers of validation batches,
    # and DDP's forward can broadcast buffers (a collective every rank must join)
    return net, model, param_groups, compile_note


def compile_run(cfg: RunConfig, net: nn.Module, data: Data, world: dist.DistInfo) -> tuple[bool, str | None]:
    """(whether the run compiles, what to say): `compile`, with auto decided by cost
    (`accel.compile_decision`: the network's estimated time saved over the run's training images,
    or its time budget, against the compile time) on a CPU; off elsewhere, where those
    estimates were not measured."""
    first = "the first batch compiles (a minute or more on a CPU) before the bar moves"
    if cfg.compile != "auto":
        return bool(cfg.compile), f"torch.compile is on: {first}" if cfg.compile else None
    if world.device.type != "cpu":
        chosen, why = False, f"the cost rule is measured on CPUs, not {world.device.type}; --compile asks"
    else:
        images = image_count(data.train.dataset) * cfg.epochs // world.world_size
        budget = cfg.time_limit_minutes * 60 if cfg.time_limit_minutes else None
        chosen, why = compile_decision(
            net, data.input_size, images, cfg.precision, training=True, within_s=budget
        )
    if chosen:
        return True, f"torch.compile on (auto: {why}): {first}"
    return False, f"torch.compile off (auto: {why})"


def averaging(net: nn.Module, cfg: RunConfig) -> ModelEMA | Lookahead | None:
    """The run's weight averaging, if any: `ema` (Polyak) or `lookahead` (not both)."""
    if cfg.lookahead is not None:
        return Lookahead(net, cfg.lookahead.every, cfg.lookahead.decay)
    return ModelEMA(net, cfg.ema) if cfg.ema else None


DATA_INIT_IMAGES = 5000  # airbench estimates its whitening from 5,000 images


def init_from_data(net: nn.Module, loader, log) -> None:
    """A fresh run of a model that declares a data-dependent initialisation (`init_from_data`,
    e.g. vgg8_cifar's whitening convolution): give it up to DATA_INIT_IMAGES normalised training
    images, the first batches of the training loader. Before DDP wraps the model, so rank 0's
    result is the one every rank starts from (DDP broadcasts the parameters)."""
    images, n = [], 0
    for batch, *_ in loader:
        batch = batch.float()
        images.append(batch)
        n += len(batch)
        if n >= DATA_INIT_IMAGES:
            break
    if not images:
        raise UserError("the training split has no images to initialise the model from")
    net.init_from_data(torch.cat(images)[:DATA_INIT_IMAGES])  # type: ignore[operator]
    log(
        f"initialised {type(net).__name__} from {min(n, DATA_INIT_IMAGES):,} training images (init_from_data)"
    )


def _data_sizes(data: Data, world: dist.DistInfo, global_batch: int) -> dict:
    return {
        "num_classes": len(data.classes),
        "input_size": data.input_size,
        **{
            f"{k}_images": image_count(loader.dataset)
            for k, loader in (("train", data.train), ("val", data.val))
        },
        "world_size": world.world_size,
        "global_batch_size": global_batch,
    }


# ---- checkpoints -------------------------------------------------------------------------------------
def _resume(run: Trainer, state: dict, ckpt_path: str) -> None:
    """Continue `run` from a checkpoint: weights, optimizer, schedule, scaler, averaging, the
    epoch and step, the history and this rank's random states; the run files of its epoch are
    written again where a stop came between the checkpoint and them."""
    run.net.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.schedule.load_state_dict(state["schedule"])
    run.scaler.load_state_dict(state["scaler"])
    if run.ema is not None:
        run.ema.load_state_dict(state["ema"])
    run.epoch, run.step, run.history, run.best = (
        state["epoch"],
        state["step"],
        state["history"],
        state["best"],
    )
    set_rng_state(state["rng"])
    world_size = run.world.world_size
    log(
        f"resuming {run.cfg.model} from epoch {run.epoch} of {run.cfg.epochs}"
        + (f", {state['batch']} batches into epoch {run.epoch + 1}" if state.get("batch") else "")
        + f" ({ckpt_path})"
        + (
            f"; written by {state['world_size']} processes, now {world_size}: the global batch changes"
            if state.get("world_size", world_size) != world_size
            else ""
        )
    )
    if not _files_current(run.out, state):  # stopped between the checkpoint and the files
        log(f"writing the files of epoch {run.epoch} again from {ckpt_path} (stopped before they were)")
        if dist.is_main():
            run.save_files(is_best=run.best.get("epoch") == run.epoch)


def _save(run: Trainer, guard: RunGuard, ckpt_path: str, position: dict | None = None) -> None:
    """checkpoint.pt (rank 0 writes) after epoch `run.epoch`, or inside it when `position` is
    given. Every rank's random states and epoch meters go in: a collective, all ranks call it."""
    ranks = dist.gather_to_main({"rng": rng_state(), "partial": position["partial"] if position else None})
    if ranks is not None:  # rank 0
        state = checkpoint_state(run, position, guard.bad_total, ranks)
        save_checkpoint(ckpt_path, {**state, "data_identity": run.identity})
    dist.barrier()  # the checkpoint is complete before any rank goes on (or fails)
    guard.saved()


def checkpoint_state(run: Trainer, position: dict | None, bad_steps: int, ranks: list[dict]) -> dict:
    """checkpoint.pt's content. `position` None: after epoch `run.epoch` (epochs done: it and those
    before; `run.step`: the next epoch's first step); else inside it: batches done in the epoch
    and its meters so far. `ranks`: every rank's `{"rng", "partial"}` (training/checkpoint.py)."""
    epochs_done = run.epoch + (position is None)
    position = position or {"batch": 0, "partial": None}
    state = {
        "format": "convzoo-checkpoint-1",
        "config": run.cfg.to_dict(),
        "epoch": epochs_done,
        "step": run.step,
        "batch": position["batch"],
        "partial": ranks[0]["partial"],
        "bad_steps": bad_steps,
        "model": run.net.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "schedule": run.schedule.state_dict(),
        "scaler": run.scaler.state_dict(),
        "ema": run.ema.state_dict() if run.ema is not None else None,
        "history": run.history,
        "best": run.best,
        "rng": ranks[0]["rng"],
        "world_size": len(ranks),
    }
    if len(ranks) > 1:
        state["ranks"] = ranks
    return state


# ---- validation and what the run says ---------------------------------------------------------------
def validate(
    weights_model: nn.Module, loader, device, precision: str, channels_last: bool, per_class: int = 0
) -> dict:
    """Validation through the model `convzoo eval` runs (accel.fast_inference: BN folded, weights
    cast once to the precision), so the top-1 a run reports for its weights is the top-1 that
    `convzoo eval` gives for them on the same split at the same precision. Not compiled: a fresh
    copy each epoch would compile again.

    The CPU random stream is restored afterwards (a DataLoader draws a seed from it for every
    pass), so training is the same whether or how often it validates (`val_every`). With
    `per_class` (the number of classes) it also counts the top-1 hits of each class."""
    with torch.random.fork_rng(devices=[]):
        model, precision, _ = fast_inference(weights_model, precision, channels_last, device, compile=False)
        channels_last = channels_last and precision not in FAST_INFERENCE_PRECISIONS
        return evaluate(model, loader, device, precision, channels_last, per_class=per_class)


# An epoch between two validations (`val_every` > 1): its metrics row has no val_* figures.
NOT_VALIDATED: dict = {"loss": None, "top1": None, "top5": None, "skipped": 0}


def epoch_line(row: dict, cfg: RunConfig, num_classes: int) -> str:
    if row["val_top1"] is None:
        val = f"(validation every {cfg.val_every} epochs)  "
    else:
        top5 = f"top5 {row['val_top5']:.2f}  " if num_classes > 5 else ""  # always 100 % below 6 classes
        val = f"val loss {row['val_loss']:.4f} top1 {row['val_top1']:.2f} {top5}"
    skipped = f"  ({row['skipped']} unreadable images skipped)" if row["skipped"] else ""
    speed = f"{row['images_per_second']:.0f} img/s  {row['seconds']:.1f}s"
    return (
        f"epoch {row['epoch']:>3}/{cfg.epochs}  lr {row['lr']:.4g}  train loss {row['train_loss']:.4f} "
        f"top1 {row['train_top1']:.2f}  {val}{speed}{skipped}"
    )


def per_class_line(per_class: dict[str, list[int]]) -> str:
    """`{class: [hits, images]}` as one line: what a small class really reaches."""
    return "per class (val top-1): " + ", ".join(
        f"{c} {100 * h / n:.1f}% ({h}/{n})" if n else f"{c} (no val images)"
        for c, (h, n) in per_class.items()
    )
