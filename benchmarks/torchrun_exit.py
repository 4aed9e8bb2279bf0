"""Does a finished 2-rank torchrun job exit 0, every time?

Runs R rounds of two consecutive `torchrun --standalone --nproc_per_node 2` jobs on the CPU
(gloo, one thread per process): `train` of the tiny `plain_test` model (tests/_dist_entry.py,
which also sets one thread) on 32 synthetic images for 1 epoch into a fresh folder, then `eval`
of its weights on 37 images. A job counts as aborted when a worker died of SIGABRT ("terminate
called without an active exception", torchrun's "exitcode  : -6"), as failed when torchrun exits
non-zero for any other reason.

`--control N` first runs N jobs of the faulty teardown the engine avoids, with torch alone (two
processes, no torchrun): the group created before `torch.distributed.nn` is imported (as
DistributedDataParallel then does), so the imported module's default arguments keep the
destroyed group and its gloo / TCP-store threads alive into the interpreter's finalisation; that
is where the abort happens. The same script with `--control-fixed` does what
`convzoo.engine.distributed` does (import first, collect after the group is left).

    python benchmarks/torchrun_exit.py --rounds 20 --control 30

Writes benchmarks/results/torchrun_exit-plain_test-<2R>jobs-<date>.json.
"""

from __future__ import annotations

import argparse
import collections
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, write_result

ENTRY = ROOT / "tests" / "_dist_entry.py"
ENV = {
    **os.environ,
    "PYTHONPATH": str(ROOT / "src"),
    "OMP_NUM_THREADS": "1",
    "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
    "PYTHONFAULTHANDLER": "1",  # a Python stack of every thread on SIGABRT, into the worker's stderr
}

# the faulty teardown (torch alone) and its fix; argv[1]: "faulty" or "fixed"
CONTROL = r"""
import gc, sys, torch, torch.distributed as dist
torch.set_num_threads(1)
fixed = sys.argv[1] == "fixed"
if fixed:
    import torch.distributed.nn  # before the group: its default arguments hold None
def run():
    dist.init_process_group("gloo")
    m = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 4))  # imports torch.distributed.nn
    state = {"model": m}
    state["self"] = state  # a reference cycle, as a training run's state has
    for _ in range(5):
        m(torch.randn(8, 4)).sum().backward()
        t = torch.tensor([1.0, 2.0]); dist.all_reduce(t); t.tolist()
    dist.barrier()
    dist.destroy_process_group()
run()
if fixed:
    gc.collect()  # the wrapper's cycle: its group's threads are joined here, not in finalisation
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], timeout: float) -> tuple[int, str, float]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(ENTRY)]
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        p = subprocess.run(cmd + args, env=ENV, stdout=subprocess.DEVNULL, stderr=err, timeout=timeout)
        err.seek(0)
        return p.returncode, err.read(), time.perf_counter() - t0


def classify(rc: int, stderr: str) -> str:
    if rc == 0:
        return "ok"
    if "terminate called" in stderr or "exitcode  : -6" in stderr or "Signal 6 (SIGABRT)" in stderr:
        return "aborted"
    return "failed"


def control(mode: str, n: int, timeout: float) -> dict:
    counts: collections.Counter = collections.Counter()
    for i in range(n):
        port = str(free_port())
        env = {**ENV, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", CONTROL, mode],
                env={**env, "RANK": str(r)},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for r in range(2)
        ]
        outcome = "ok"
        for p in procs:
            _, err = p.communicate(timeout=timeout)
            if p.returncode != 0:
                outcome = classify(p.returncode, err)
        counts[outcome] += 1
        print(f"control {mode} {i + 1}/{n}: {outcome}", file=sys.stderr, flush=True)
    return dict(counts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20, help="train + eval pairs (default 20: 40 jobs)")
    ap.add_argument("--control", type=int, default=0, help="jobs of the faulty teardown, torch alone")
    ap.add_argument("--control-fixed", type=int, default=0, help="jobs of the same with the fix")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per job before it counts as hung")
    a = ap.parse_args()

    payload: dict = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}
    if a.control:
        payload["control_faulty_teardown"] = control("faulty", a.control, a.timeout)
    if a.control_fixed:
        payload["control_fixed_teardown"] = control("fixed", a.control_fixed, a.timeout)
    jobs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(a.rounds):
            out = Path(tmp) / f"run{i}"
            train = ["train", "plain_test", "--data", "synthetic", "--out", str(out), "--recipe", "demo"]
            train += ["--epochs", "1", "--batch-size", "8", "--set", "data.augment=none"]
            train += ["--set", "data.max_train_images=32", "--set", "data.max_val_images=16"]
            train += ["--workers", "0", "--threads", "1"]
            evaluate = ["eval", "plain_test", "--weights", str(out / "last.safetensors")]
            evaluate += ["--data", "synthetic", "--limit", "37", "--batch-size", "8", "--json"]
            evaluate += ["--workers", "0"]
            for kind, args in (("train", train), ("eval", evaluate)):
                try:
                    rc, err, wall = torchrun(args, a.timeout)
                    outcome = classify(rc, err)
                except subprocess.TimeoutExpired:
                    rc, err, wall, outcome = None, "", a.timeout, "hung"
                jobs.append({"kind": kind, "rc": rc, "outcome": outcome, "seconds": round(wall, 1)})
                if outcome != "ok":  # the workers' own errors, then the end (torchrun's summary)
                    lines = err.splitlines()
                    jobs[-1]["error_lines"] = [x for x in lines if "Error" in x or "error:" in x][-20:]
                    jobs[-1]["stderr_tail"] = err[-2000:]
                print(f"{kind} {i + 1}/{a.rounds}: {outcome} ({wall:.1f}s)", file=sys.stderr, flush=True)
    by_kind = {
        k: dict(collections.Counter(j["outcome"] for j in jobs if j["kind"] == k)) for k in ("train", "eval")
    }
    payload.update(jobs=len(jobs), outcomes=by_kind, runs=jobs)
    write_result("torchrun_exit", "plain_test", f"{len(jobs)}jobs", payload)


if __name__ == "__main__":
    main()
