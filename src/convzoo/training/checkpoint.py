"""Atomic checkpoint files and exact resume.

`checkpoint.pt` holds only tensors, numbers, strings, dicts and lists, so it loads with
`torch.load(weights_only=True)` (never without it): model, optimizer, schedule, grad scaler,
EMA, epoch, step, best top-1, the metrics history, the resolved config, and the random-number
states (python, numpy, torch CPU and CUDA) so `--resume` continues exactly where it stopped.
Under torchrun every rank has its own random streams and its own meters of the epoch so far:
each write gathers them to rank 0 (`ranks`, one entry per rank, with `world_size`), and on
resume each rank takes its own entry (`for_rank`). The top-level `rng` and `partial` are rank
0's, all a single process needs (and all that checkpoints from before `ranks` hold).
Every write goes to a temporary file in the same folder, is flushed and fsynced, renamed over
the old file with os.replace, and the folder is fsynced so the rename itself survives a crash.
"""

from __future__ import annotations

import os
import pickle
import random
import re
from typing import cast

import numpy as np
import torch

from ..errors import UserError
from ..outputs import atomic_text, atomic_write, fsync_dir  # noqa: F401  (re-exported: the engine writes through these)
from ..untrusted import check_zip_crc, check_zip_sizes

CHECKPOINT = "checkpoint.pt"


def rng_state() -> dict:
    py_version, py_state, py_gauss = random.getstate()
    # legacy=True (the default) gives the tuple form; the stub's return type also allows a dict
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = cast(
        tuple[str, np.ndarray, int, int, float], np.random.get_state()
    )
    state = {
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
        "numpy": {
            "name": np_name,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def for_rank(state: dict, rank: int, world: int) -> dict:
    """`state` as rank `rank` of `world` processes resumes it: with its own `rng` and `partial`.

    A checkpoint written inside an epoch resumes exactly only with the world size that wrote it
    (the epoch's batches are split over the ranks, each with its own random stream): another
    world size is a UserError. At an epoch's end any world size may resume (the samplers and
    the ranks' torch streams are re-seeded per epoch; the global batch changes, as asked)."""
    saved = state.get("world_size")  # None: written before world sizes were recorded
    if saved is not None and saved != world and state.get("batch"):
        n = lambda w: f"{w} process{'es' if w != 1 else ''}"  # noqa: E731
        raise UserError(
            f"--resume: {CHECKPOINT} is from {state['batch']} batches into epoch {state['epoch'] + 1} "
            f"of a run of {n(saved)}; it resumes exactly only with {n(saved)}, not {n(world)} "
            f"(use --nproc_per_node {saved}, or resume from the checkpoint of an epoch's end)"
        )
    ranks = state.get("ranks")
    if saved == world and ranks:
        return {**state, "rng": ranks[rank]["rng"], "partial": ranks[rank]["partial"]}
    return state


def save_checkpoint(path: str, state: dict) -> None:
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str) -> dict:
    """checkpoint.pt as written by `save_checkpoint`; UserError (one line) for anything else.

    A pickle that names any class or function (what a malicious file needs to run code) is
    refused by `weights_only=True` before anything is called; there is no fallback.
    """
    if not os.path.isfile(path):
        raise UserError(f"--resume: no checkpoint at {path}")
    check_zip_sizes(path)  # before torch.load allocates what the zip declares
    try:
        check_zip_crc(path)  # torch.load itself reads a flipped byte as a different number
    except UserError as e:
        raise UserError(f"--resume: {e}") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        why = re.search(r"GLOBAL \S+", str(e))  # the class or function the pickle names
        if not why:  # not a refused object: just bytes that are no pickle
            raise UserError(
                f"--resume: {path} is not a readable convzoo checkpoint (truncated or corrupt?)"
            ) from None
        raise UserError(
            f"--resume: {path} refused: it holds objects other than tensors, numbers, strings, "
            f"lists and dicts, which a checkpoint never does: it names {why.group(0)[7:]!r}"
        ) from None
    except Exception as e:  # truncated or garbage files fail in many ways; all mean "not ours"
        raise UserError(
            f"--resume: {path} is not a readable convzoo checkpoint (truncated or corrupt? "
            f"{type(e).__name__})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != "convzoo-checkpoint-1":
        raise UserError(f"--resume: {path} is not a convzoo checkpoint")
    problem = _state_problem(state)
    if problem:
        raise UserError(f"--resume: {path} is damaged or was edited: {problem}")
    return state


def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


_FIELDS = (  # key, check, what it must be (what fit() reads from a checkpoint)
    (
        "config",
        lambda v: (
            isinstance(v, dict) and isinstance(v.get("model"), str) and isinstance(v.get("data_spec"), str)
        ),
        "a config with model and data_spec",
    ),
    ("epoch", _count, "a count of epochs"),
    ("step", _count, "a count of steps"),
    ("batch", lambda v: v is None or _count(v), "a count of batches"),
    (
        "model",
        lambda v: (
            isinstance(v, dict)
            and v
            and all(isinstance(k, str) and isinstance(t, torch.Tensor) for k, t in v.items())
        ),
        "a state dict of tensors",
    ),
    (
        "optimizer",
        lambda v: (
            isinstance(v, dict)
            and isinstance(v.get("state"), dict)
            and isinstance(v.get("param_groups"), list)
        ),
        "an optimizer state",
    ),
    ("schedule", lambda v: isinstance(v, dict), "a schedule state"),
    ("scaler", lambda v: isinstance(v, dict), "a loss-scaler state"),
    ("ema", lambda v: v is None or isinstance(v, dict), "null or an EMA state"),
    (
        "history",
        lambda v: isinstance(v, list) and all(isinstance(r, dict) for r in v),
        "a list of epoch rows",
    ),
    ("best", lambda v: isinstance(v, dict), "a dict"),
    ("rng", lambda v: isinstance(v, dict) and {"python", "numpy", "torch"} <= set(v), "random-number states"),
)


def _state_problem(state: dict) -> str | None:
    """What a checkpoint lacks or holds of the wrong type (None: it is whole)."""
    for key, ok, want in _FIELDS:
        if key not in state:
            return f"{key!r} is missing"
        if not ok(state[key]):
            return f"{key!r} is not {want} ({type(state[key]).__name__})"
    if len(state["history"]) != state["epoch"]:
        return f"{len(state['history'])} epochs of history for epoch {state['epoch']}"
    return None
