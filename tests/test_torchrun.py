"""`convzoo train` / `convzoo eval` under torchrun (gloo on the CPU, 1 thread per process).

Every expectation compares two runs of the real command, never a stored number:
- 2 processes x batch 8 == 1 process x batch 16 == 1 process x batch 8 x 2 accumulation steps
  (a model without batch statistics; and a batch-norm model with --sync-bn): the union of the
  ranks' batches is the single process's batch, so the weights agree up to float summation order;
- distributed evaluation == single-process evaluation, exactly, on 37 images over 2 ranks;
- a worker killed (SIGKILL) after epoch 1 under --max-restarts 1: the run resumes from the
  checkpoint and ends with the weights of the uninterrupted run;
- both ranks killed in the middle of an epoch (with random augmentation) and `--resume`d under
  torchrun: every rank restores its own random states and meters, the same weights bit for bit;
- one rank with a batch of unreadable files only: every rank skips that step; no hang;
- two nodes simulated on this machine (two torchrun agents, c10d rendezvous on 127.0.0.1, one
  process each): the same weights, bit for bit, as the 2-process run on one node.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from convzoo.errors import UserError
from convzoo.recipes.config import RunConfig
from convzoo.training.train import fit
from convzoo.weights import read_state_dict
from helpers import free_port, one_line, synthetic_folder

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
COMMON = [
    "--data",
    "synthetic",
    "--recipe",
    "demo",
    "--epochs",
    "2",
    "--workers",
    "0",
    "--set",
    "data.augment=none",
    "--set",
    "data.max_train_images=64",
    "--set",
    "data.max_val_images=37",
    "--set",
    "schedule.warmup_epochs=0",
    "--lr",
    "0.05",
]


def torchrun(nproc, *args, restarts=0, env=None, check=True, timeout=300):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(nproc),
        "--max-restarts",
        str(restarts),
        str(HERE / "_dist_entry.py"),
        *map(str, args),
    ]
    e = {
        **os.environ,
        "PYTHONPATH": str(SRC),
        "OMP_NUM_THREADS": "1",
        # torch 2.14 + --standalone: a restarted round can hang on the previous round's TCP store
        "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
        **(env or {}),
    }
    # output through files, not pipes: workers outliving a killed torchrun would keep pipes open
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(cmd, env=e, stdout=out, stderr=err, text=True)
        try:
            p.wait(timeout=timeout)
            hung = False
        except subprocess.TimeoutExpired:  # on SIGTERM torchrun stops its workers, then exits
            hung = True
            p.terminate()
            try:
                p.wait(timeout=90)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        out.seek(0)
        err.seek(0)
        r = subprocess.CompletedProcess(cmd, p.returncode, out.read(), err.read())
    if hung:
        pytest.fail(
            f"torchrun {' '.join(map(str, args[:2]))} still running after {timeout}s (hung?): "
            f"{r.stderr[-2000:]}"
        )
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


def train(out, nproc, model, *extra, **kw):
    return torchrun(nproc, "train", model, "--out", out, *COMMON, *extra, **kw)


def weights(run):
    return read_state_dict(str(run / "last.safetensors"))


def assert_same_weights(a, b, atol):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=atol, msg=k)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, worker_id):
    """Six processes of training, done once per pytest session: under xdist every worker that
    runs one of these tests would otherwise train them all again, at the same time as the other."""
    if worker_id == "master":  # no xdist
        return train_runs(tmp_path_factory.mktemp("torchrun"))
    from filelock import FileLock  # (a dependency of torch)

    root = tmp_path_factory.getbasetemp().parent / "torchrun-runs"  # this pytest run's, shared by its workers
    with FileLock(f"{root}.lock"):
        if (root / "runs.json").exists():
            saved = json.loads((root / "runs.json").read_text())
            return {k: Path(v) if k != "killed_log" else v for k, v in saved.items()}
        root.mkdir(exist_ok=True)
        r = train_runs(root)
        (root / "runs.json").write_text(json.dumps({k: str(v) for k, v in r.items()}))
        return r


def train_runs(root):
    r = {name: root / name for name in ("one", "two", "accum", "killed")}
    train(r["one"], 1, "plain_test", "--batch-size", "16")
    train(r["two"], 2, "plain_test", "--batch-size", "8")
    train(r["accum"], 1, "plain_test", "--batch-size", "8", "--accum-steps", "2")
    r["killed_log"] = train(
        r["killed"],
        2,
        "plain_test",
        "--batch-size",
        "8",
        restarts=1,
        env={"CONVZOO_FAULT": "kill@epoch=1,rank=1"},
    ).stderr
    return r


def test_two_processes_equal_one_with_the_same_global_batch(runs):
    assert_same_weights(runs["one"], runs["two"], atol=1e-6)
    s1, s2 = (json.loads((runs[k] / "summary.json").read_text()) for k in ("one", "two"))
    assert (s1["world_size"], s2["world_size"]) == (1, 2)
    assert s1["global_batch_size"] == s2["global_batch_size"] == 16
    assert s1["val_images"] == s2["val_images"] == 37  # every validation image once, on 2 ranks too
    assert s1["top1"] == s2["top1"] and s1["top5"] == s2["top5"]
    assert sorted(p.name for p in runs["two"].iterdir() if "tmp" in p.name) == []


def test_gradient_accumulation_equals_the_larger_batch(runs):
    assert_same_weights(runs["one"], runs["accum"], atol=1e-6)
    assert json.loads((runs["accum"] / "summary.json").read_text())["global_batch_size"] == 16


def test_killed_worker_is_restarted_and_resumes(runs):
    assert "resuming plain_test from epoch 1" in runs["killed_log"]
    assert_same_weights(runs["two"], runs["killed"], atol=0)
    assert json.loads((runs["killed"] / "summary.json").read_text())["epochs"] == 2


def test_sync_bn_two_processes_equal_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    train(one, 1, "tiny_test", "--batch-size", "16", "--epochs", "1")
    train(two, 2, "tiny_test", "--batch-size", "8", "--epochs", "1", "--sync-bn")
    assert_same_weights(one, two, atol=1e-6)  # measured 2.6e-7; without --sync-bn 7e-2


def plain(*args):
    """The same entry point without torchrun: one ordinary process."""
    return subprocess.run(
        [sys.executable, str(HERE / "_dist_entry.py"), *map(str, args)],
        env={**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )


def test_distributed_eval_equals_single_process(runs):
    args = [
        "eval",
        "plain_test",
        "--weights",
        runs["one"] / "last.safetensors",
        "--data",
        "synthetic",
        "--limit",
        "37",
        "--workers",
        "0",
        "--batch-size",
        "8",
        "--json",
    ]
    single = json.loads(plain(*args).stdout)
    double = json.loads(torchrun(2, *args).stdout)  # 37 images: rank 0 gets 19, rank 1 gets 18
    assert double["images"] == single["images"] == 37
    assert (double["top1"], double["top5"]) == (single["top1"], single["top5"])


def test_streamed_shards_evaluated_on_two_ranks_equal_one_process(runs, tmp_path):
    from convzoo.data.pack import pack
    from convzoo.data.synthetic import SyntheticDataset

    src, shards = tmp_path / "src", tmp_path / "shards"
    val = SyntheticDataset("val")
    for i in range(41):  # 41 images in 10 class folders, 4 shards of up to 12: 21 + 20 over 2 ranks
        folder = src / "val" / f"{val.targets[i]:02d}_{val.classes[val.targets[i]]}"
        folder.mkdir(parents=True, exist_ok=True)
        val.image(i).save(folder / f"{i}.png")
    for c, name in enumerate(val.classes):  # every class folder exists, so labels = synthetic's
        (src / "val" / f"{c:02d}_{name}").mkdir(exist_ok=True)
    pack(str(src), str(shards), "12", splits=["val"], progress=False)
    args = [
        "eval",
        "plain_test",
        "--weights",
        runs["one"] / "last.safetensors",
        "--workers",
        "2",
        "--batch-size",
        "4",
        "--json",
        "--data",
        f"shards:{shards}",
        "--split",
        "val",
    ]
    single = json.loads(plain(*args).stdout)
    double = json.loads(torchrun(2, *args).stdout)
    assert double["images"] == single["images"] == 41
    assert (double["top1"], double["top5"]) == (single["top1"], single["top5"])


# ---- exact mid-epoch resume under torchrun ---------------------------------------------------------
# 64 images, 2 ranks x batch 8: 4 steps an epoch, 2 epochs. The cifar augmentation (random crop with
# padding, random flip) draws from each rank's own torch RNG, so a rank resumed with another rank's
# random state trains on different crops and ends with different weights.
AUGMENTED = ["--set", "data.augment=cifar"]
KILL_AT = 6  # global step (0-based): the checkpoint of step 5 = epoch 2, 2 batches done


def checkpoint(run):
    return torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)


def test_killed_mid_epoch_resumes_exactly_under_torchrun(tmp_path):
    """Uninterrupted 2-process run vs the same run SIGKILLed (CONVZOO_FAULT, both ranks) at step 6 with a
    checkpoint after every step, then `--resume`d under torchrun: the same weights bit for bit and
    the same per-epoch train loss (every rank's meters). Resuming that mid-epoch checkpoint in one
    process is refused with a one-line error naming both world sizes (before anything is touched)."""
    ref, run = tmp_path / "ref", tmp_path / "run"
    train(ref, 2, "plain_test", "--batch-size", "8", *AUGMENTED)
    killed = train(
        run,
        2,
        "plain_test",
        "--batch-size",
        "8",
        *AUGMENTED,
        "--checkpoint-minutes",
        "0",
        env={"CONVZOO_FAULT": f"kill@step={KILL_AT}"},
        check=False,
    )
    assert killed.returncode != 0, killed.stderr[-2000:]
    state = checkpoint(run)
    assert (state["epoch"], state["batch"], state["world_size"]) == (1, 2, 2)
    assert len(state["ranks"]) == 2 and not torch.equal(
        state["ranks"][0]["rng"]["torch"], state["ranks"][1]["rng"]["torch"]
    )

    with pytest.raises(UserError) as refused:  # the same checkpoint in this (single) process
        fit(RunConfig.from_dict(state["config"]), str(run), resume=True)
    message = str(refused.value)
    assert "of a run of 2 processes" in message and "not 1 process " in message and one_line(message), message

    resumed = train(run, 2, "plain_test", "--batch-size", "8", *AUGMENTED, "--resume")
    assert "2 batches into epoch 2" in resumed.stderr
    assert_same_weights(ref, run, atol=0)
    assert [r["train_loss"] for r in checkpoint(ref)["history"]] == [
        r["train_loss"] for r in checkpoint(run)["history"]
    ]


def test_each_rank_takes_its_own_entry_and_world_size_changes_only_at_epoch_ends():
    """for_rank on hand-made checkpoints: own entry; another world size refused mid-epoch only;
    checkpoints without `world_size` (written before it existed) resume as they did."""
    from convzoo.training.checkpoint import for_rank

    ranks = [{"rng": "rng0", "partial": "meters0"}, {"rng": "rng1", "partial": "meters1"}]
    mid = {"epoch": 1, "batch": 2, "world_size": 2, "rng": "rng0", "partial": "meters0", "ranks": ranks}
    assert (for_rank(mid, 1, 2)["rng"], for_rank(mid, 1, 2)["partial"]) == ("rng1", "meters1")
    assert for_rank(mid, 0, 2)["rng"] == "rng0"
    with pytest.raises(UserError, match="2 batches into epoch 2 of a run of 2 processes.* not 3 processes"):
        for_rank(mid, 2, 3)
    boundary = {**mid, "batch": 0, "partial": None, "ranks": [{**r, "partial": None} for r in ranks]}
    assert for_rank(boundary, 0, 1)["rng"] == "rng0"  # 2 -> 1 process at an epoch's end
    old = {"epoch": 1, "batch": 2, "rng": "rng0", "partial": "meters0"}
    assert for_rank(old, 1, 2)["rng"] == "rng0"


# ---- a batch with no readable image on one rank only ---------------------------------------------
def test_batch_unreadable_on_one_rank_is_skipped_by_every_rank(tmp_path):
    """A folder of 8 training images (2 classes x 4), 2 ranks x batch 2: 2 steps in the one epoch.
    The two files that TrainSampler gives rank 1 in its first batch (positions 1 and 3 of epoch 0's
    permutation for seed 0) are garbage, so rank 1 has nothing to train on at step 0 while rank 0
    has 2 images. Both ranks must skip that step together (a rank skipping alone leaves the other
    waiting in DDP's all-reduce forever: the subprocess timeout turns a hang into a failure), the
    files are named in warnings, and only step 1's 2 x 2 = 4 images are trained on."""
    from convzoo.data.datasets import build_dataset
    from convzoo.engine.distributed import epoch_permutation

    synthetic_folder(tmp_path / "d")
    samples = build_dataset(f"folder:{tmp_path / 'd'}", "train").samples
    order = epoch_permutation(len(samples), 0, 0)
    broken = [Path(samples[order[p]][0]) for p in (1, 3)]  # rank 1 of 2, first batch of 2
    for path in broken:
        path.write_bytes(b"not an image at all")
    r = torchrun(
        2,
        "train",
        "plain_test",
        "--data",
        tmp_path / "d",
        "--out",
        tmp_path / "run",
        "--recipe",
        "demo",
        "--epochs",
        "1",
        "--workers",
        "0",
        "--batch-size",
        "2",
        "--seed",
        "0",
        "--set",
        "data.input_size=32",
        "--set",
        "data.augment=none",
        timeout=90,
    )
    for path in broken:
        assert f"{path.parent.name}/{path.name}" in r.stderr, r.stderr[-3000:]
    assert "no readable image on 1 of 2 processes at epoch 1, batch 0" in r.stderr, r.stderr[-3000:]
    assert "(2 unreadable images skipped)" in r.stderr
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["skipped_images"] == 2
    assert checkpoint(tmp_path / "run")["history"][0]["train_images"] == 4


# ---- two nodes, simulated on this machine --------------------------------------------------------
def node_agent(node: int, port: int, restarts: int) -> list[str]:
    """torchrun as node `node` of 2 would run it, one process per node, on loopback addresses only;
    node 0 hosts the c10d rendezvous store at 127.0.0.1:`port`."""
    return [
        *(sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1"),
        *("--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "two-nodes"),
        *("--rdzv-conf", f"is_host={int(node == 0)}", "--local-addr", "127.0.0.1"),
        *("--max-restarts", str(restarts)),
    ]


def wait_for_port(port: int, proc, seconds: float = 180) -> None:
    """Until something listens on 127.0.0.1:`port` (`proc` must still be running)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    pytest.fail(f"nothing listens on 127.0.0.1:{port} (rendezvous host exited with {proc.poll()})")


def test_two_nodes_on_loopback_equal_two_processes_on_one(runs, tmp_path):
    """Two torchrun agents, as two nodes would start them (`--nnodes 2 --nproc-per-node 1`, c10d
    rendezvous at 127.0.0.1:PORT; the first hosts it), train into one --out (as a shared
    filesystem): both exit 0, and the weights and top-1 are those of `torchrun --standalone
    --nproc_per_node 2` with the same arguments, bit for bit (the same ranks, the same sums).
    Only loopback addresses: the agents' and gloo's (GLOO_SOCKET_IFNAME=lo)."""
    port, out = free_port(), tmp_path / "two_nodes"
    env = {
        **os.environ,
        "PYTHONPATH": str(SRC),
        "OMP_NUM_THREADS": "1",
        "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
        "GLOO_SOCKET_IFNAME": "lo",
    }
    agents = []
    with tempfile.TemporaryFile("w+") as err0, tempfile.TemporaryFile("w+") as err1:
        for node, err in enumerate((err0, err1)):
            cmd = node_agent(node, port, restarts=0)
            cmd += [str(HERE / "_dist_entry.py"), "train", "plain_test", "--out", str(out), *COMMON]
            cmd += ["--batch-size", "8"]
            agents.append(subprocess.Popen(cmd, env=env, stdout=err, stderr=err, text=True))
            if node == 0:  # the second agent connects to the first one's rendezvous store
                wait_for_port(port, agents[0])
        try:
            for a in agents:
                a.wait(timeout=300)  # a hang fails the test instead of the suite
        finally:
            for a in agents:
                if a.poll() is None:
                    a.terminate()
                    a.wait(timeout=90)
        logs = []
        for err in (err0, err1):
            err.seek(0)
            logs.append(err.read())
    assert [a.returncode for a in agents] == [0, 0], "\n----\n".join(x[-2000:] for x in logs)
    assert sum("done: top1" in x for x in logs) == 1  # rank 0 reports, on whichever node it is
    assert_same_weights(runs["two"], out, atol=0)
    s1, s2 = (json.loads((p / "summary.json").read_text()) for p in (runs["two"], out))
    assert s2["world_size"] == 2 and (s1["top1"], s1["top5"]) == (s2["top1"], s2["top5"])
