"""engine/distributed.py: samplers, metric all-reduce, CPU synchronised batch norm (gloo, 2 processes).

Expected values are derived independently: the samplers against the single-process permutation
they must partition, the all-reduce against sums computed by hand, CPUSyncBatchNorm against
torch's own BatchNorm2d run on the concatenated global batch.
"""

import os
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn as nn

from convzoo.engine import distributed as D
from convzoo.errors import UserError
from helpers import free_port, one_line


def test_train_sampler_partitions_the_single_process_order():
    n, world, batch = 23, 3, 2
    perm = D.epoch_permutation(n, seed=5, epoch=2)
    parts = []
    for r in range(world):
        s = D.TrainSampler(n, r, world, seed=5)
        s.set_epoch(2)
        parts.append(list(s))
    assert [len(p) for p in parts] == [n // world] * world  # same number of steps per rank
    flat = [i for p in parts for i in p]
    assert len(set(flat)) == len(flat) and set(flat) <= set(range(n))
    # the union of the ranks' k-th batches is the k-th batch of world*batch of one process
    for k in range(n // world // batch):
        union = sorted(i for p in parts for i in p[k * batch : (k + 1) * batch])
        assert union == sorted(perm[k * world * batch : (k + 1) * world * batch])
    one = D.TrainSampler(n, 0, 1, seed=5)
    one.set_epoch(2)
    assert list(one) == perm
    one.set_epoch(3)
    assert list(one) != perm


@pytest.mark.parametrize("n,world", [(7, 3), (2, 4), (10, 2)])
def test_eval_sampler_counts_every_image_exactly_once(n, world):
    flat = sorted(i for r in range(world) for i in D.EvalSampler(n, r, world))
    assert flat == list(range(n))  # no padding, no duplicate
    assert sum(len(D.EvalSampler(n, r, world)) for r in range(world)) == n


def test_single_process_helpers_are_no_ops():
    assert not D.is_distributed() and D.rank() == 0 and D.world_size() == 1 and D.is_main()
    assert D.all_reduce_sums([1, 2.5]) == [1, 2.5]
    assert D.rank_zero_only(lambda: 7)() == 7
    with D.main_process_first():
        pass


def _worker(rank, world, port, results):
    torch.set_num_threads(1)
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    info = D.init_distributed("cpu")
    try:
        out = {"info": (info.rank, info.world_size, info.backend)}
        # hits and counts as a rank would have them: rank r saw r + 1 images, r correct
        out["sums"] = D.all_reduce_sums([rank, rank + 1, 0.5])
        out["bcast"] = D.broadcast_object({"from": D.rank()})
        # sync BN: this rank's half of a fixed global batch
        torch.manual_seed(0)
        x = torch.randn(4 * world, 3, 5, 5) * 3 + 1
        bn = D.convert_sync_batchnorm(nn.Sequential(nn.BatchNorm2d(3)), torch.device("cpu"))
        with torch.no_grad():
            bn[0].weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        mine = x[4 * rank : 4 * (rank + 1)].requires_grad_()
        y = bn(mine)
        (y * torch.arange(y.numel()).view_as(y).float().sin()).sum().backward()
        out["y"], out["gx"] = y.detach(), mine.grad
        grads = [bn[0].weight.grad.clone(), bn[0].bias.grad.clone()]
        for g in grads:  # DDP averages parameter grads; sum them to compare with one process
            torch.distributed.all_reduce(g)
        out["gw"], out["gb"] = grads
        out["running"] = (bn[0].running_mean.clone(), bn[0].running_var.clone())
        out["type"] = type(bn[0]).__name__
        results[rank] = out
    finally:
        D.cleanup()


def test_two_gloo_processes_reduce_and_sync_batch_norm():
    world = 2
    results = mp.Manager().dict()
    mp.start_processes(_worker, args=(world, free_port(), results), nprocs=world, start_method="spawn")
    assert [results[r]["info"] for r in range(world)] == [(0, 2, "gloo"), (1, 2, "gloo")]
    assert results[1]["sums"] == [0 + 1, 1 + 2, 1.0] and results[0]["sums"] == results[1]["sums"]
    assert results[1]["bcast"] == {"from": 0}
    assert results[0]["type"] == "CPUSyncBatchNorm"
    # reference: plain BatchNorm2d over the global batch in one process
    torch.manual_seed(0)
    x = (torch.randn(4 * world, 3, 5, 5) * 3 + 1).requires_grad_()
    bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
    y = bn(x)
    weights = torch.cat([torch.arange(4 * 75).view(4, 3, 5, 5).float().sin()] * world)
    (y * weights).sum().backward()
    y_dist = torch.cat([results[r]["y"] for r in range(world)])
    gx_dist = torch.cat([results[r]["gx"] for r in range(world)])
    torch.testing.assert_close(y_dist, y.detach(), rtol=0, atol=1e-5)
    torch.testing.assert_close(gx_dist, x.grad, rtol=0, atol=1e-5)
    torch.testing.assert_close(results[0]["gw"], bn.weight.grad, rtol=0, atol=1e-4)
    torch.testing.assert_close(results[0]["gb"], bn.bias.grad, rtol=0, atol=1e-4)
    for r in range(world):
        torch.testing.assert_close(results[r]["running"][0], bn.running_mean, rtol=0, atol=1e-6)
        torch.testing.assert_close(results[r]["running"][1], bn.running_var, rtol=0, atol=1e-5)


# ---- leaving the group: nothing of it runs into the interpreter's exit ------------------------------
# A run as train does it: DistributedDataParallel (which imports torch.distributed.nn) in a reference
# cycle, cleanup(), return. Printed at exit by a handler registered before the group exists (so it
# runs after convzoo's): the native threads the group started that are still alive then. Alive at
# exit, gloo's and the TCP store's threads are where a finished rank occasionally aborted
# ("terminate called without an active exception"): torch.distributed.nn, imported after the
# group existed, held it in its functions' default arguments for good.
_LEAVE = r"""
import atexit, os, sys
import torch

def tids():
    return set(os.listdir("/proc/self/task"))

before = tids()
started = set()
atexit.register(lambda: print("ALIVE", sorted(started & tids()), "STARTED", len(started)))

from convzoo.engine import distributed as D

def run():
    D.init_distributed("cpu")
    started.update(tids() - before)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 2))
    state = {"model": model}
    state["self"] = state
    model(torch.randn(3, 4)).sum().backward()
    assert D.all_reduce_sums([2]) == [2]
    D.cleanup()

run()
"""


def test_no_thread_of_the_process_group_outlives_the_run():
    env = {
        **os.environ,
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "OMP_NUM_THREADS": "1",
    }
    r = subprocess.run([sys.executable, "-c", _LEAVE], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    line = [x for x in r.stdout.splitlines() if x.startswith("ALIVE")][-1]
    assert int(line.rsplit(" ", 1)[1]) >= 1, line  # the group did start threads (gloo, TCP store)
    assert line.startswith("ALIVE [] "), line


# ---- a peer that stops answering -----------------------------------------------------------------
def test_process_group_timeout_is_ten_minutes_unless_set(monkeypatch):
    monkeypatch.delenv(D.TIMEOUT_ENV, raising=False)
    assert D.process_group_timeout().total_seconds() == D.DEFAULT_TIMEOUT_SECONDS == 600
    monkeypatch.setenv(D.TIMEOUT_ENV, "2.5")
    assert D.process_group_timeout().total_seconds() == 2.5
    for bad in ("0", "-3", "ten", "nan", "inf", "1e9"):
        monkeypatch.setenv(D.TIMEOUT_ENV, bad)
        with pytest.raises(UserError, match=f"{D.TIMEOUT_ENV} must be a number of seconds") as e:
            D.process_group_timeout()
        assert one_line(e.value)


_PEER = r"""
import atexit, os, signal, sys
from convzoo.engine import distributed as D
D.init_distributed("cpu")
how = sys.argv[1]
if D.rank() == 1 and how == "stopped":
    os.kill(os.getpid(), signal.SIGSTOP)  # alive, connected, silent
if D.rank() == 1 and how == "lost":
    os._exit(9)  # its connections close
if D.rank() == 0 and how == "failing":
    raise ValueError("an error on rank 0 alone")
if D.rank() == 0 and how == "refused":  # bad input found by rank 0 alone, through the CLI
    from types import SimpleNamespace
    from convzoo import cli
    from convzoo.errors import UserError

    def refuse(args):
        raise UserError("a setting rank 0 alone refuses")

    cli.COMMANDS["refuse"] = SimpleNamespace(HELP="", add_arguments=lambda p: None, run=refuse)
    atexit.register(print, "the interpreter's teardown ran", file=sys.stderr)
    print(f"rank {D.rank()} waits", end="")
    sys.exit(cli.main(["refuse"]))
print(f"rank {D.rank()} waits", end="")  # no newline, no flush: lost unless the rank flushes at its end
D.all_reduce_sums([1])  # raises on the rank still waiting; nothing here catches it
"""


def _two_ranks(how: str, waiting: int) -> subprocess.CompletedProcess:
    """Both ranks of a gloo group running `_PEER`; -> the finished rank `waiting`. A collective
    waits 2 s for a peer ($CONVZOO_DIST_TIMEOUT). The subprocess time-out only turns a hang into
    a failure."""
    env = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    env.update(OMP_NUM_THREADS="1", CONVZOO_DIST_TIMEOUT="2", LOCAL_RANK="0")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _PEER, how],
            env={**env, "RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    try:
        out, err = procs[waiting].communicate(timeout=120)
    finally:
        for p in procs:
            p.kill()  # a stopped one too: SIGKILL still ends it
            p.communicate()
    return subprocess.CompletedProcess(procs[waiting].args, procs[waiting].returncode, out, err)


def _ends_with_one_line(r: subprocess.CompletedProcess, rank: int) -> str:
    """Exit code 1 (not -6, SIGABRT in a teardown of the broken group), stdout flushed, and one
    line about the group on stderr instead of a traceback."""
    assert r.returncode == 1, (r.returncode, r.stderr[-3000:])
    assert r.stdout == f"rank {rank} waits"
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"convzoo: error: rank {rank} of 2: the process group failed ("), last
    return last


def test_a_stopped_peer_ends_the_wait_after_the_timeout():
    """Rank 1 stops itself (SIGSTOP) after joining; rank 0's next all-reduce fails after
    $CONVZOO_DIST_TIMEOUT (2 s) instead of gloo's 30 minutes, and rank 0 ends with exit code 1."""
    last = _ends_with_one_line(_two_ranks("stopped", waiting=0), rank=0)
    assert "Timed out waiting 2000ms" in last, last


def test_a_lost_peer_ends_the_other_rank_with_exit_code_1():
    last = _ends_with_one_line(_two_ranks("lost", waiting=0), rank=0)
    assert "onnection" in last, last  # gloo: "Connection reset by peer" or "Connection closed by peer"


def test_a_rank_failing_alone_keeps_its_traceback_and_ends_its_peer():
    """An error of one rank's own (not of the group) is reported with its traceback, and that rank
    too leaves with exit code 1 without tearing down the group its peer is still waiting in."""
    failing = _two_ranks("failing", waiting=0)
    assert failing.returncode == 1, (failing.returncode, failing.stderr[-3000:])
    assert "ValueError: an error on rank 0 alone" in failing.stderr, failing.stderr[-3000:]
    assert "Traceback" in failing.stderr
    _ends_with_one_line(_two_ranks("failing", waiting=1), rank=1)


def test_a_rank_refusing_bad_input_alone_exits_2_with_one_line_and_ends_its_peer():
    """A UserError raised on one rank while its group is up: the CLI's one line and exit code 2,
    stdout flushed, and no interpreter teardown (no atexit handler runs) while its peer still
    waits in the group."""
    refused = _two_ranks("refused", waiting=0)
    assert refused.returncode == 2, (refused.returncode, refused.stderr[-3000:])
    assert refused.stdout == "rank 0 waits"
    assert refused.stderr.strip() == "convzoo refuse: error: a setting rank 0 alone refuses"
    _ends_with_one_line(_two_ranks("refused", waiting=1), rank=1)


def test_group_failures_are_told_from_other_errors():
    assert D.is_group_failure(torch.distributed.DistBackendError("NCCL error"))
    try:
        raise ValueError("not the group's")
    except ValueError as e:
        assert not D.is_group_failure(e)
    try:
        torch.distributed.all_reduce(torch.zeros(1))  # no group: raised inside torch.distributed
    except (RuntimeError, ValueError) as e:
        assert D.is_group_failure(e)
    else:
        pytest.fail("an all-reduce without a process group did not fail")
