"""Two torchrun nodes simulated on this machine, and what one does when the other is lost.

Each "node" is a torchrun agent started as on a real node: `--nnodes 2 --nproc-per-node 1
--rdzv-backend c10d --rdzv-endpoint 127.0.0.1:PORT` (node 0 hosts the rendezvous store), gloo on
the loopback interface. The job: `train plain_test` (tests/_dist_entry.py) on 64 synthetic images,
2 epochs of 4 steps (2 x batch 8), a checkpoint after every step (`--checkpoint-minutes 0`), with
CONVZOO_DIST_TIMEOUT=T (default 30 s). Node 1's worker stops itself (SIGSTOP, fault
injection CONVZOO_FAULT=stop@step=6) before global step 6, i.e. 2 batches into epoch 2; then:

- `lost`: node 1 (its agent and its worker) is killed (SIGKILL), node 0 runs with --max-restarts 0:
  how long node 0 takes to give up, and its exit code;
- `stopped`: node 1 is left stopped (alive, connected, silent): node 0 must give up after about
  T seconds instead of gloo's 30 minutes;
- `replaced`: both with --max-restarts 1; node 1 is killed and a new agent started in its place
  (restart count 0 there, 1 on node 0): both resume from the last checkpoint (step 5) and finish
  with exit 0 and the weights of the uninterrupted run (a 2-process `--standalone` run of the same
  command), compared tensor by tensor.

    python benchmarks/torchrun_two_nodes.py --timeout 30

Writes benchmarks/results/torchrun_two_nodes-plain_test-<scenarios>-<date>.json.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, write_result

ENTRY = ROOT / "tests" / "_dist_entry.py"
STOP_AT = 6
TRAIN = [
    *("train", "plain_test", "--data", "synthetic", "--recipe", "demo", "--epochs", "2"),
    *("--workers", "0", "--batch-size", "8", "--lr", "0.05", "--checkpoint-minutes", "0"),
    *("--set", "data.augment=none", "--set", "data.max_train_images=64", "--set", "data.max_val_images=37"),
    *("--set", "schedule.warmup_epochs=0"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(timeout: float) -> dict:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "OMP_NUM_THREADS": "1",
        "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
        "GLOO_SOCKET_IFNAME": "lo",
        "CONVZOO_DIST_TIMEOUT": str(timeout),
    }


class Node:
    def __init__(self, node: int, port: int, out: Path, restarts: int, env: dict, log: Path):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1"]
        cmd += ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "bench"]
        cmd += ["--rdzv-conf", f"is_host={int(node == 0)}", "--local-addr", "127.0.0.1"]
        cmd += ["--max-restarts", str(restarts), str(ENTRY), *TRAIN, "--out", str(out)]
        self.log, self.port = log, port
        self._f = open(log, "w")  # noqa: SIM115 (closed in wait)
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._f, stderr=self._f)

    def workers(self) -> list[int]:
        kids = []
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    stat = Path(f"/proc/{pid}/stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                    kids.append(int(pid))
        return kids

    def stopped_worker(self) -> int | None:
        for pid in self.workers():
            try:
                if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T":
                    return pid
            except OSError:
                pass
        return None

    def kill(self) -> None:
        """The whole node: its agent and its worker (a worker runs in a session of its own)."""
        for pid in [*self.workers(), self.proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        finally:
            self._f.flush()

    def tail(self) -> str:
        lines = [x for x in self.log.read_text(errors="replace").splitlines() if "Warning" not in x]
        return "\n".join(lines[-12:])


def wait_for(pred, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def start_pair(tmp: Path, out: Path, restarts: int, env: dict, tag: str) -> tuple[Node, Node]:
    port = free_port()
    n0 = Node(0, port, out, restarts, env, tmp / f"{tag}-node0.log")

    def listening():
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_for(listening, 180, "node 0's rendezvous store")
    stop = {**env, "CONVZOO_FAULT": f"stop@step={STOP_AT}"}
    n1 = Node(1, port, out, restarts, stop, tmp / f"{tag}-node1.log")
    return n0, n1


def scenario(tmp: Path, name: str, env: dict, pg_timeout: float, reference: Path | None) -> dict:
    out = tmp / name
    n0, n1 = start_pair(tmp, out, 1 if name == "replaced" else 0, env, name)
    wait_for(n1.stopped_worker, 600, "node 1's worker to stop itself")
    t0 = time.monotonic()
    result: dict = {"pg_timeout_s": pg_timeout}
    if name in ("lost", "replaced"):
        n1.kill()
    if name == "replaced":
        n1 = Node(1, n0.port, out, 1, env, tmp / f"{name}-node1-new.log")  # without the stop
        rc1 = n1.wait(600)
        rc0 = n0.wait(120)
        result.update(node0_exit=rc0, new_node1_exit=rc1, seconds=round(time.monotonic() - t0, 1))
        logs = n0.log.read_text() + n1.log.read_text()
        result["resumed"] = "batches into epoch 2" in logs
        if rc0 == 0 and rc1 == 0 and reference is not None:
            from convzoo.weights import read_state_dict

            a = read_state_dict(str(reference / "last.safetensors"))
            b = read_state_dict(str(out / "last.safetensors"))
            result["weights_equal_to_uninterrupted"] = a.keys() == b.keys() and all(
                bool((a[k] == b[k]).all()) for k in a
            )
    else:
        rc0 = n0.wait(pg_timeout + 300)
        result.update(node0_exit=rc0, node0_seconds_after_node1_went=round(time.monotonic() - t0, 1))
        result["node0_gave_up"] = rc0 is not None
        n1.kill()
        if rc0 is None:
            n0.kill()
    result["node0_log_tail"] = n0.tail()
    result["node1_log_tail"] = n1.tail()
    print(f"{name}: {result}", file=sys.stderr, flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--timeout", type=float, default=30, help="CONVZOO_DIST_TIMEOUT for the job (s)")
    ap.add_argument("--scenarios", default="lost,stopped,replaced")
    a = ap.parse_args()
    env = base_env(a.timeout)
    names = a.scenarios.split(",")
    payload: dict = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        reference = None
        if "replaced" in names:
            reference = tmp / "reference"
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
            cmd += [str(ENTRY), *TRAIN, "--out", str(reference)]
            r = subprocess.run(cmd, env=env, capture_output=True)
            payload["reference_exit"] = r.returncode
        for name in names:
            payload[name] = scenario(tmp, name, env, a.timeout, reference)
    write_result("torchrun_two_nodes", "plain_test", "_".join(names), payload)


if __name__ == "__main__":
    main()
