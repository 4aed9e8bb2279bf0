"""torch.distributed for the engine: setup from torchrun's environment, samplers, metric all-reduce.

`torchrun --nproc_per_node N -m convzoo train ...` starts N processes with RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT set; `init_distributed()` joins the process group (NCCL
on CUDA, gloo on the CPU) and every other helper here is a no-op in a plain single process.

Samplers (both are pure functions of (seed, epoch, rank, world size), so a resumed or restarted
run sees exactly the order it would have seen):
- `TrainSampler`: one seeded permutation of the whole training set per epoch, the same on every
  rank; rank r takes positions r, r + W, r + 2W, ... of the first W * (n // W). So the union of
  the ranks' k-th batches of B is the k-th batch of W * B of a single process over the same
  permutation (what makes a W-process run equal a 1-process run with the same global batch), and
  every rank does the same number of steps (DDP's all-reduces must pair up). At most W - 1 images
  an epoch are left out, different ones each epoch.
- `EvalSampler`: rank r takes r, r + W, ... of 0..n-1, with no padding. torch's DistributedSampler
  pads the split to a multiple of W by repeating images, which counts them twice; here each
  validation image is seen exactly once, ranks may differ by one image, and the sums (loss, top-1
  and top-5 hits, images) are all-reduced after the loop (`all_reduce_sums`), so distributed top-1
  and top-5 equal a single-process evaluation exactly.

Time-out: every collective (and joining the group) waits at most `process_group_timeout()` for the
other ranks, 10 minutes unless $CONVZOO_DIST_TIMEOUT (seconds) says otherwise, instead of gloo's 30
minutes; a rank that stopped (SIGSTOP), hung or lost its node then ends its peers' run with an
error, which torchrun's --max-restarts can act on.

Leaving the group: `cleanup()` leaves nothing of it running. gloo's worker threads, its socket
loop and rank 0's TCP store thread belong to the process group object, and they are joined only
when the last reference to that object goes. `torch.distributed.nn` binds `group.WORLD` into its
functions' default arguments when it is first imported, and DistributedDataParallel imports it:
imported after the group was created, it keeps the group, and those threads, alive into the
interpreter's exit, where one of them occasionally aborts the finished process ("terminate called
without an active exception", SIGABRT). It is therefore imported before the group is created.
What else holds the group after `cleanup()` (a DistributedDataParallel wrapper, in a reference
cycle with the run that used it) is collected by an exit handler, while the interpreter is still
whole, after a cleanup.

A failed rank: an exception that ends a rank while its group is still up (a collective that timed
out, a peer lost, any error on this rank alone) cannot leave through `cleanup()` (its barrier would
wait for peers that are gone or stopped) nor through the interpreter's exit (gloo's threads, still
alive and reading a broken connection, abort it: "terminate called ...", SIGABRT, exit -6). The
hook `init_distributed` installs (`end_failed_rank`) writes one line for a failure of the group
itself (the traceback of any other error), flushes stdout and stderr and ends the process with
`os._exit(1)`: torchrun sees exit code 1 and restarts or ends the job, and the peers' own
collectives then fail the same way.

`SyncBatchNorm`: torch's nn.SyncBatchNorm runs only on GPUs; `convert_sync_batchnorm` uses it on
CUDA and, on the CPU (gloo), `CPUSyncBatchNorm` below, which all-reduces the batch sums with
autograd so forward and backward equal batch norm over the global batch.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import functools
import gc
import importlib
import math
import os
import sys
import traceback
from dataclasses import dataclass
from types import TracebackType
from typing import NoReturn

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import Sampler

from ..errors import UserError

__all__ = [
    "DistInfo",
    "init_distributed",
    "cleanup",
    "is_distributed",
    "rank",
    "world_size",
    "is_main",
    "barrier",
    "rank_zero_only",
    "main_process_first",
    "all_reduce_sums",
    "broadcast_object",
    "gather_to_main",
    "agree_finite",
    "unwrap",
    "TrainSampler",
    "EvalSampler",
    "CPUSyncBatchNorm",
    "convert_sync_batchnorm",
    "restart_count",
    "process_group_timeout",
    "end_failed_rank",
    "is_group_failure",
    "TIMEOUT_ENV",
    "DEFAULT_TIMEOUT_SECONDS",
]

TIMEOUT_ENV = "CONVZOO_DIST_TIMEOUT"
# Long enough for what one rank legitimately does while the others wait (rank 0 writing weights
# and a checkpoint, a first torch.compile, reading a large checkpoint), short enough that a rank
# that stopped or hung ends the job in minutes instead of gloo's 30 (NCCL's default is 10 too).
DEFAULT_TIMEOUT_SECONDS = 600.0


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str | None = None
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def _env_int(name: str) -> int:
    try:
        return int(os.environ[name])
    except (KeyError, ValueError):
        raise UserError(f"torchrun environment incomplete: ${name} is missing or not an integer") from None


def resolve_device(name: str | torch.device | None) -> torch.device:
    """`auto` (or None) -> cuda when available, else cpu; a bad or unavailable device is a UserError."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available here")
    return dev


def process_group_timeout() -> datetime.timedelta:
    """How long a collective waits for the other ranks: $CONVZOO_DIST_TIMEOUT seconds, else 10 min."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return datetime.timedelta(seconds=DEFAULT_TIMEOUT_SECONDS)
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and 0 < seconds <= 7 * 24 * 3600):
        raise UserError(f"${TIMEOUT_ENV} must be a number of seconds between 0 and 604800, got {raw!r}")
    return datetime.timedelta(seconds=seconds)


def init_distributed(device: str = "auto", backend: str | None = None) -> DistInfo:
    """Join the process group described by torchrun's environment variables (idempotent).

    Without them: a single process (rank 0 of 1) on `device`. With them: backend NCCL when the
    device is CUDA (each process takes cuda:LOCAL_RANK), gloo otherwise; `backend` overrides.
    Collectives time out after `process_group_timeout()`.
    """
    if not launched_by_torchrun():
        return DistInfo(device=resolve_device(device))
    rank_, world, local = _env_int("RANK"), _env_int("WORLD_SIZE"), int(os.environ.get("LOCAL_RANK", 0))
    dev = resolve_device(device)
    if dev.type == "cuda":
        if local >= torch.cuda.device_count():
            raise UserError(
                f"LOCAL_RANK {local} but only {torch.cuda.device_count()} CUDA devices: "
                f"use --nproc_per_node <= the number of GPUs"
            )
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
    if not dist.is_initialized():
        timeout = process_group_timeout()
        # before the group exists, so that its default arguments hold None, not the group
        # (see the module docstring: imported later, it keeps the group's threads alive at exit)
        importlib.import_module("torch.distributed.nn")

        dist.init_process_group(
            backend=backend,
            rank=rank_,
            world_size=world,
            timeout=timeout,
            device_id=dev if dev.type == "cuda" else None,
        )
        atexit.register(_collect_left_group)
        sys.excepthook = _failed_rank_hook(sys.excepthook)  # after torch's own (it adds "[rankN]:")
    return DistInfo(rank=rank_, local_rank=local, world_size=world, backend=dist.get_backend(), device=dev)


def cleanup() -> None:
    """Leave the process group; every rank waits for the others first, so that none closes its
    connections while a peer still reads from them. The group's threads end once nothing else
    holds it (a DistributedDataParallel wrapper does until it is freed; see the module docstring)."""
    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


def _collect_left_group() -> None:
    """At exit, after `cleanup()`: free what still holds the destroyed group, so that its threads
    are joined now, while the interpreter is whole, and not during its finalisation."""
    if dist.is_available() and not dist.is_initialized():
        gc.collect()


def is_group_failure(error: BaseException) -> bool:
    """The process group itself failed: torch's distributed errors, or an error raised inside
    torch.distributed (gloo reports a timed-out or broken collective as a plain RuntimeError)."""
    if isinstance(error, dist.DistError):
        return True
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and f"{os.sep}torch{os.sep}distributed{os.sep}" in tb.tb_frame.f_code.co_filename


def _failure_line(error: BaseException) -> str:
    text = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
    if text.startswith("[") and "] " in text:  # gloo's "[third_party/gloo/.../pair.cc:545] Read error"
        text = text.split("] ", 1)[1]
    text = text.split(". ", 1)[0]  # the error itself, not gloo's advice after it
    return (
        f"convzoo: error: rank {rank()} of {world_size()}: the process group failed ({text}); a peer "
        f"stopped, hung or was lost (${TIMEOUT_ENV} sets how long a collective waits for it)"
    )


def end_failed_rank(error: BaseException, report=traceback.print_exception) -> NoReturn:
    """End this rank at once, exit code 1, without the teardown its group cannot finish (see the
    module docstring): one line for a failure of the group, `report(error)` (the traceback) for
    any other error, then stdout and stderr flushed and `os._exit(1)`."""
    # a closed or broken pipe must not keep the rank alive into the teardown
    with contextlib.suppress(Exception):
        if is_group_failure(error):
            print(_failure_line(error), file=sys.stderr)
        else:
            report(error)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(1)


def _failed_rank_hook(previous):
    """sys.excepthook: an error that ends a rank of a group still up ends it by `end_failed_rank`;
    others (a single process, or after `cleanup()`) go to `previous`."""

    def hook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
        if is_distributed() and world_size() > 1 and isinstance(error, Exception):
            end_failed_rank(error, report=lambda e: previous(kind, e, tb))
        previous(kind, error, tb)

    return hook


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed() and world_size() > 1:
        dist.barrier()


def rank_zero_only(fn):
    """Decorator: run `fn` on rank 0 only (returns None elsewhere); for files, logs, plots."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs) if is_main() else None

    return wrapper


@contextlib.contextmanager
def main_process_first():
    """Rank 0 runs the block first (e.g. unpacking or indexing data), the others after it."""
    if not is_main():
        barrier()
    try:
        yield
    finally:
        if is_main():
            barrier()


def _reduce_device() -> torch.device:
    # NCCL reduces CUDA tensors only; gloo reduces CPU tensors
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sums(values):
    """Sum each number over all ranks (float64: counts up to 2**53 stay exact); same list back."""
    values = list(values)
    if not is_distributed() or world_size() == 1:
        return values
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_reduce_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return [type(v)(x) if isinstance(v, int) else x for v, x in zip(values, t.tolist())]


def agree_finite(loss: torch.Tensor) -> torch.Tensor:
    """`loss`, or NaN when the loss of any rank is not finite, so that every rank skips that step
    together (a rank that skipped its backward alone would leave the others waiting in DDP)."""
    if not is_distributed() or world_size() == 1:
        return loss
    bad = all_reduce_sums([0.0 if bool(torch.isfinite(loss.detach()).all()) else 1.0])[0]
    return loss if bad == 0 else torch.full_like(loss.detach(), float("nan"))


def broadcast_object(obj, src: int = 0):
    """`obj` from rank `src` on every rank (picklable objects: small settings, not tensors)."""
    if not is_distributed() or world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=_reduce_device())
    return box[0]


def gather_to_main(obj) -> list | None:
    """[rank 0's obj, rank 1's, ...] on rank 0 and None on the others; [obj] in a single process.
    For small picklable state (random-number states, meters), not for large tensors."""
    if not is_distributed() or world_size() == 1:
        return [obj]
    out = [None] * world_size() if is_main() else None
    dist.gather_object(obj, out, dst=0)
    return out


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside torch.compile and DistributedDataParallel wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        if inner is None and isinstance(model, nn.parallel.DistributedDataParallel):
            inner = model.module
        if inner is None:
            return model
        model = inner


# ---- samplers ---------------------------------------------------------------------------------
def epoch_permutation(n: int, seed: int, epoch: int) -> list[int]:
    """The epoch's order of 0..n-1; the same on every rank, in every restart."""
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    return torch.randperm(n, generator=g).tolist()


class TrainSampler(Sampler[int]):
    """Shuffled, strided over ranks, equal length on each rank (see the module docstring)."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1, seed: int = 0, shuffle: bool = True):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        if n < world_size:
            raise UserError(f"{n} training images cannot be split over {world_size} processes")
        self.n, self.rank, self.world_size, self.seed, self.shuffle = n, rank, world_size, seed, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // self.world_size

    def __iter__(self):
        order = epoch_permutation(self.n, self.seed, self.epoch) if self.shuffle else list(range(self.n))
        used = len(self) * self.world_size
        return iter(order[self.rank : used : self.world_size])


class EvalSampler(Sampler[int]):
    """Every index exactly once over all ranks, in order, no padding (see the module docstring)."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.n, self.rank, self.world_size = n, rank, world_size

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world_size))

    def __iter__(self):
        return iter(range(self.rank, self.n, self.world_size))


# ---- synchronised batch norm ---------------------------------------------------------------------
class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks, differentiable: the gradient of a sum is the sum of the ranks' gradients."""

    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics are those of the global batch, for gloo (CPU).

    The per-rank sums of x and x**2 and the count are all-reduced with autograd
    (`_AllReduceSum`), so the gradient also flows through the other ranks'
    share of the mean and variance - exactly batch norm over the concatenated batch. Running
    statistics use the unbiased variance, as nn.BatchNorm does. Eval mode is plain batch norm.
    """

    def _check_input_dim(self, input):
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed() and world_size() > 1):
            return super().forward(x)
        dims = [d for d in range(x.dim()) if d != 1]
        xf = x.float()
        count = torch.tensor([x.numel() / x.shape[1]], dtype=xf.dtype)
        stats = torch.cat([xf.sum(dims), (xf * xf).sum(dims), count])
        stats = _AllReduceSum.apply(stats)
        c = x.shape[1]
        n = stats[-1]
        mean, meansq = stats[:c] / n, stats[c : 2 * c] / n
        var = meansq - mean * mean
        if self.track_running_stats:
            # the buffers exist when track_running_stats is set (the stub types them Optional)
            tracked, running_mean, running_var = self.num_batches_tracked, self.running_mean, self.running_var
            assert tracked is not None and running_mean is not None and running_var is not None
            with torch.no_grad():
                tracked += 1  # in place: the module's buffer
                m = self.momentum if self.momentum is not None else 1.0 / float(tracked)
                unbiased = var * (n / (n - 1).clamp_min(1))
                running_mean.mul_(1 - m).add_(m * mean.to(running_mean.dtype))
                running_var.mul_(1 - m).add_(m * unbiased.to(running_var.dtype))
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm*d -> synchronised batch norm (nn.SyncBatchNorm on GPUs, CPUSyncBatchNorm else)."""
    if device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, CPUSyncBatchNorm):
        out = CPUSyncBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        out.load_state_dict(module.state_dict())
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, convert_sync_batchnorm(child, device))
    return out


# ---- restarts ------------------------------------------------------------------------------------
def restart_count() -> int:
    """How many times torchrun has restarted the workers (0 in the first round)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
