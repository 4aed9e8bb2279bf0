"""The run folder's guards: one writer at a time, no run overwritten by accident, and a record of
which data a run trained on.

- `RunLock`: `train.lock` in the folder holds the writer's pid, host and start time, created with
  O_EXCL (two processes cannot both create it). A second `train` into the folder is refused while
  the owner runs. A lock left by a process that is gone (same host, pid not running) is reported
  on stderr and taken over; a lock from another host cannot be checked from here and is refused,
  naming the file to delete.
- `check_fresh(out, resume, overwrite)`: a folder that already holds a run is refused unless the
  run is resumed (`--resume`) or `overwrite` says to replace it (its run files are removed first,
  so a later torchrun restart can never pick up the old checkpoint).
- The epoch's files are one transaction: `checkpoint.pt` is written first and is the commit; the
  files derived from it (weights, metrics, plots, then `summary.json` last) follow. A run stopped
  between the two (a kill, a full disk, a rank lost before the checkpoint's gather) leaves a
  folder whose checkpoint is the last complete state: `run_files_current` tells whether the
  derived files caught up, and a resume writes them again from the checkpoint when they did not.
- The files of an epoch (`save_run_files`): last/best.safetensors, metrics.csv, the plots and
  summary.json (`make_summary`), written by rank 0 from the run's history after the checkpoint.
- A run that fails before its first checkpoint leaves no folder behind (`remove_unused_folder`).
- `data_identity(spec, sizes, classes)`: where the data is (the resolved folder, not the string
  given) and a fingerprint (image counts, classes); `check_data_identity` compares a resumed run's
  record with the data found now, so a relative `--data` from another directory, or a dataset that
  changed since the checkpoint, ends in one line instead of a silently different run.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import shutil
import socket
import sys
import time

import torch.nn as nn

from ..analysis.curves import TENSORBOARD_DIR, plot_curves
from ..data.datasets import resolve_spec
from ..engine import distributed as dist
from ..errors import UserError
from ..outputs import atomic_text, output_dir, remove_stale_temps
from ..recipes.config import RunConfig
from ..weights import WeightSpec, save_weights
from .checkpoint import CHECKPOINT

LOCK = "train.lock"
# what makes a folder "hold a run": any of these is replaced by the next epoch of a new run
RUN_FILES = (
    "checkpoint.pt",
    "last.safetensors",
    "best.safetensors",
    "metrics.csv",
    "summary.json",
    "config.yaml",
    "split.csv",
    "loss.png",
    "top1.png",
)


def holds_run(out: str) -> bool:
    return any(os.path.exists(os.path.join(out, name)) for name in RUN_FILES[:4])


def run_files_current(out: str, epochs_done: int) -> bool:
    """True when the files derived from the checkpoint (weights, metrics, summary) are those of
    epoch `epochs_done`: `summary.json`, written after the others, says so."""
    try:
        with open(os.path.join(out, "summary.json"), "rb") as f:
            summary = json.loads(f.read(1 << 20))
    except (OSError, ValueError, RecursionError):
        return False
    return (
        isinstance(summary, dict)
        and summary.get("epochs") == epochs_done
        and os.path.isfile(os.path.join(out, "last.safetensors"))
    )


def check_fresh(out: str, resume: bool, overwrite: bool) -> None:
    """UserError when `out` holds a run that is neither resumed nor to be overwritten."""
    if resume or not holds_run(out):
        return
    if not overwrite:
        raise UserError(
            f"--out {out} already holds a run (checkpoint, weights, metrics): continue it with "
            f"--resume, or choose a fresh --out (or --overwrite to replace it)"
        )
    for name in RUN_FILES:
        path = os.path.join(out, name)
        if os.path.isfile(path):
            os.remove(path)


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    """`with RunLock(out):` - the folder's single writer (see the module docstring)."""

    def __init__(self, out: str):
        self.path = os.path.join(out, LOCK)
        self.held = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        for _ in range(3):  # a stale lock removed by us (or a racing process) is retried
            if self._create():
                self.held = True
                return
            self._handle_existing()
        raise UserError(f"--out: could not take {self.path} (another process keeps taking it)")

    def release(self) -> None:
        if self.held:
            self.held = False
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass

    def _create(self) -> bool:
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(info, f)
        return True

    def _owner(self) -> dict | None:
        try:
            with open(self.path) as f:
                owner = json.loads(f.read(4096))
        except FileNotFoundError:
            return {}  # released meanwhile: retry
        except (OSError, ValueError, RecursionError):
            return None
        if not isinstance(owner, dict):
            return None
        pid = owner.get("pid")
        # a pid the kernel could have given (os.kill(10**23, 0) is an OverflowError)
        return owner if isinstance(pid, int) and not isinstance(pid, bool) and 0 < pid < 2**31 else None

    def _handle_existing(self) -> None:
        owner = self._owner()
        if owner == {}:
            return
        if owner is None:
            raise UserError(
                f"--out is locked by {self.path}, which is unreadable; delete it if no train "
                f"is writing to that folder"
            )
        pid, host = owner["pid"], owner.get("host")
        who = f"pid {pid} on {host}, since {owner.get('started', '?')}"
        if host != socket.gethostname():
            raise UserError(
                f"--out is in use by a train on another machine ({who}); if it no longer runs, "
                f"delete {self.path}"
            )
        if _pid_running(pid):
            raise UserError(f"--out is in use by another train ({who}): wait for it, or choose another --out")
        print(
            f"warning: {self.path} was left by {who}, which no longer runs: taking it over",
            file=sys.stderr,
            flush=True,
        )
        stale = f"{self.path}.stale{os.getpid()}"
        try:
            os.replace(self.path, stale)  # atomic: of two processes taking it over, one gets it
            os.remove(stale)
        except FileNotFoundError:
            pass


def open_run_folder(out: str, resume: bool, overwrite: bool) -> RunLock:
    """Check, lock and tidy `out` for a run (rank 0 only): returns the held lock."""
    output_dir(out, "--out")
    lock = RunLock(out)
    lock.acquire()
    try:
        check_fresh(out, resume, overwrite)
        removed = remove_stale_temps(out)
        if removed:
            print(
                f"removed {len(removed)} temporary files of an interrupted write in {out}: "
                f"{', '.join(removed[:3])}{' ...' if len(removed) > 3 else ''}",
                file=sys.stderr,
                flush=True,
            )
    except BaseException:
        lock.release()
        raise
    return lock


def open_for_every_rank(out: str, resume: bool, overwrite: bool) -> RunLock | None:
    """Rank 0 checks, locks and tidies `out`; every rank gets its verdict (a UserError on all).
    The lock on rank 0, None on the others."""
    error, lock = None, None
    if dist.is_main():
        try:
            lock = open_run_folder(out, resume, overwrite)
        except UserError as e:
            error = str(e)
    error = dist.broadcast_object(error)
    if error:
        raise UserError(error)
    return lock


def missing_folders(out: str) -> list[str]:
    """`out` and those of its parents that do not exist yet, innermost first (`--out runs/a`
    without runs/: both)."""
    missing, path = [], os.path.abspath(out)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        missing.append(path)
        path = os.path.dirname(path)
    return missing


def remove_unused_folder(out: str, made: list[str]) -> None:
    """A run that failed before its first checkpoint (bad data, a refused setting) leaves no
    folder behind: the files it wrote first (config.yaml, split.csv, tensorboard/) go, then the
    folders it made, each only when empty. A folder with a checkpoint holds a run to resume."""
    if os.path.exists(os.path.join(out, CHECKPOINT)):
        return
    for name in ("config.yaml", "split.csv"):
        with contextlib.suppress(OSError):
            os.remove(os.path.join(out, name))
    shutil.rmtree(os.path.join(out, TENSORBOARD_DIR), ignore_errors=True)
    for folder in made:
        try:
            os.rmdir(folder)  # only when empty: anything else in it is not ours to delete
        except OSError:
            return


# ---- the files of an epoch -------------------------------------------------------------------------
METRIC_COLUMNS = [
    "epoch",
    "lr",
    "train_loss",
    "train_top1",
    "val_loss",
    "val_top1",
    "val_top5",
    "seconds",
    "images_per_second",
]


def write_metrics(out: str, history: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in history:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_text(os.path.join(out, "metrics.csv"), buf.getvalue())


def make_summary(cfg: RunConfig, history: list[dict], best: dict, data_sizes: dict) -> dict:
    validated = [r for r in history if r["val_top1"] is not None]
    last = validated[-1] if validated else {}
    seconds = sum(r["seconds"] for r in history)
    train_seconds = sum(r["train_seconds"] for r in history)
    return {
        "model": cfg.model,
        "data": cfg.data_spec,
        "recipe": cfg.recipe,
        "epochs": len(history),
        "epochs_planned": cfg.epochs,
        "finished": len(history) >= cfg.epochs,
        "top1": last.get("val_top1"),
        "top5": last.get("val_top5"),
        "loss": last.get("val_loss"),
        "best_top1": best.get("top1"),
        "best_epoch": best.get("epoch"),
        "images_per_second": (sum(r["train_images"] for r in history) / train_seconds)
        if train_seconds
        else None,
        "wall_seconds": seconds,
        "world_size": dist.world_size(),
        "precision": cfg.precision,
        "device": cfg.device,
        "batch_size": cfg.batch_size,
        "accum_steps": cfg.accum_steps,
        "seed": cfg.seed,
        "ema": cfg.ema,
        "lookahead": cfg.lookahead_plain,
        "skipped_images": sum(r.get("skipped", 0) for r in history),
        "nonfinite_steps": last.get("nonfinite_steps", 0),
        "per_class": last.get("val_per_class"),  # {class: [top-1 hits, images]} (<= 20 classes)
        **data_sizes,
    }


def save_run_files(
    out: str,
    cfg: RunConfig,
    spec: WeightSpec,
    weights: nn.Module,
    history: list[dict],
    best: dict,
    is_best: bool,
    data_sizes: dict,
) -> None:
    """The files derived from the checkpoint after the last epoch of `history`: the weights the
    run validates (`weights`, with `spec` and the epoch's metrics), metrics.csv, the plots, and
    summary.json last."""
    last = history[-1]
    measured = {"top1": last["val_top1"], "top5": last["val_top5"]} if last["val_top1"] is not None else {}
    spec = WeightSpec(
        **{**spec.__dict__, "metrics": {**measured, "epoch": last["epoch"], "data": cfg.data_spec}}
    )
    save_weights(os.path.join(out, "last.safetensors"), weights, spec)
    if is_best:
        save_weights(os.path.join(out, "best.safetensors"), weights, spec)
    write_metrics(out, history)
    plot_curves(history, out)
    # last: a summary of this epoch says every file of it is written (run_files_current)
    atomic_text(
        os.path.join(out, "summary.json"),
        json.dumps(make_summary(cfg, history, best, data_sizes), indent=1) + "\n",
    )


# ---- which data ----------------------------------------------------------------------------------
def data_location(spec: str) -> str:
    """`synthetic`, or KIND:/real/path of the folder a SPEC names from this working directory."""
    ds = resolve_spec(spec)
    return ds.kind if ds.path is None else f"{ds.kind}:{os.path.realpath(ds.path)}"


def data_identity(spec: str, train_images: int, val_images: int, classes: list[str]) -> dict:
    digest = hashlib.sha1("\n".join(map(str, classes)).encode()).hexdigest()[:12]
    return {
        "location": data_location(spec),
        "train_images": int(train_images),
        "val_images": int(val_images),
        "classes": len(classes),
        "classes_sha1": digest,
    }


def check_data_location(
    saved: dict | None, spec: str, saved_spec: str | None, where: str = "--resume"
) -> None:
    """UserError when `spec` names another folder than the run's (by location, not by string)."""
    if not saved:  # a checkpoint from before identities were recorded: compare the strings
        if spec != saved_spec:
            raise UserError(
                f"{where}: data differs from the run being resumed ({saved_spec!r} there, "
                f"{spec!r} now); drop the option or start a new run in another --out"
            )
        return
    here = data_location(spec)
    if here != saved.get("location"):
        raise UserError(
            f"{where}: data differs from the run being resumed ({saved.get('location')} there; "
            f"--data {spec!r} is {here} from here): drop --data (the run folder records "
            f"it) or give the run's folder (an absolute path is safest)"
        )


def check_data_identity(saved: dict | None, now: dict) -> None:
    """UserError when the data found now differs from the run's record (counts or classes)."""
    if not saved:
        return
    if saved.get("location") != now["location"]:
        raise UserError(
            f"--resume: data differs from the run being resumed ({saved.get('location')} there, "
            f"{now['location']} from here): give the run's data (an absolute path is safest)"
        )
    for key, what in (
        ("train_images", "training images"),
        ("val_images", "validation images"),
        ("classes", "classes"),
        ("classes_sha1", "class names"),
    ):
        if saved.get(key) != now.get(key):
            raise UserError(
                f"--resume: the data changed since the checkpoint: {what} {saved.get(key)} "
                f"there, {now.get(key)} now ({now['location']}); resume with the same data or "
                f"start a new run in another --out"
            )
