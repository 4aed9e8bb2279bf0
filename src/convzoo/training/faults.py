"""Fault injection: `CONVZOO_FAULT` makes a training process fail at a chosen point, exactly as an
outside fault at that moment would (the tests and the reliability measurements use it; a run
without the variable never pays more than one dictionary lookup per step).

Format: `SIGNAL@step=N` or `SIGNAL@epoch=E`, optionally followed by `,rank=R`:

- SIGNAL is `kill` (SIGKILL: no clean-up), `term`, `int` or `stop` (SIGSTOP: a hung process);
- `step=N`: just before global step N (0-based) starts, i.e. after the checkpoints of steps
  0..N-1 were written or skipped;
- `epoch=E`: after epoch E's (1-based) checkpoint and run files;
- `rank=R`: only the process of that rank (default: every process).

Examples: `kill@step=6`, `term@step=5`, `kill@epoch=1,rank=1`. The fault fires in the first
torchrun round only, so that `--max-restarts` can recover from it. A malformed value is a one-line
error when training starts (the data is read and the model built by then, no step taken).
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

from ..engine import distributed as dist
from ..errors import UserError

ENV = "CONVZOO_FAULT"
SIGNALS = {"kill": signal.SIGKILL, "term": signal.SIGTERM, "int": signal.SIGINT, "stop": signal.SIGSTOP}


@dataclass(frozen=True)
class Fault:
    signum: int
    when: str  # "step" or "epoch"
    at: int
    rank: int | None = None


def parse(text: str) -> Fault:
    """`kill@step=6,rank=1` -> Fault(SIGKILL, "step", 6, 1); UserError naming the format otherwise."""
    usage = f"{ENV}={text!r}: expected SIGNAL@step=N or SIGNAL@epoch=E[,rank=R], SIGNAL: {', '.join(SIGNALS)}"
    name, sep, rest = text.strip().partition("@")
    parts = [p.partition("=") for p in rest.split(",")]
    fields = {k.strip(): v.strip() for k, eq, v in parts if eq}
    if (
        not sep
        or name.lower() not in SIGNALS
        or len(fields) != len(parts)
        or not fields.keys() <= {"step", "epoch", "rank"}
    ):
        raise UserError(usage)
    when = [k for k in ("step", "epoch") if k in fields]
    try:
        values = {k: int(v) for k, v in fields.items()}
    except ValueError:
        raise UserError(usage) from None
    if len(when) != 1 or min(values.values()) < 0:
        raise UserError(usage)
    return Fault(SIGNALS[name.lower()], when[0], values[when[0]], values.get("rank"))


def planned() -> Fault | None:
    """The fault `CONVZOO_FAULT` asks of this process now (None: none, or not this rank or round)."""
    text = os.environ.get(ENV)
    if not text:
        return None
    fault = parse(text)
    if dist.restart_count() > 0 or (fault.rank is not None and fault.rank != dist.rank()):
        return None
    return fault


def at(fault: Fault | None, when: str, value: int) -> None:
    """Send the fault's signal to this process when `when` == fault.when and `value` == fault.at."""
    if fault is not None and fault.when == when and fault.at == value:
        os.kill(os.getpid(), fault.signum)
