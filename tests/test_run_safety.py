"""Run safety: no run is lost or mixed (run-folder locks, resume identity, SIGTERM checkpoints),
no small hostile file takes the machine down, and failures end in one line.

Runs here are in-process `fit` calls of the tiny test model on 32 synthetic images, batch 8
(4 steps an epoch), 2 epochs, one thread: the uninterrupted run is the reference that a
SIGTERMed-and-resumed run must equal bit for bit. Tests that need a command-line flag the
command layer does not have yet call the engine function it will call.
"""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from convzoo.errors import Interrupted, RunFailed, UserError
from convzoo.recipes.config import RunConfig
from convzoo.training.checkpoint import load_checkpoint
from convzoo.weights import read_state_dict
from helpers import one_line

SETS = ["data.max_train_images=32", "data.max_val_images=16"]


def config(epochs=2, data="synthetic", sets=(), **flags):
    from convzoo.recipes import resolve

    flags = {"epochs": epochs, "workers": 0, "batch_size": 8, **flags}
    return resolve("tiny_test", "demo", flags, [*SETS, *sets], data_spec=data)


def fit(cfg, out, **kw):
    from convzoo.training.train import fit as _fit

    return _fit(cfg, str(out), **kw)


def with_src() -> dict:
    """This environment with the checkout's src/ first on PYTHONPATH: a child `python -c` imports
    the convzoo under test, whether or not the package is installed."""
    src = str(Path(__file__).resolve().parents[1] / "src")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}


def same_weights(a: Path, b: Path) -> bool:
    x, y = read_state_dict(str(a / "last.safetensors")), read_state_dict(str(b / "last.safetensors"))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_models_one_thread):
    out = tmp_path_factory.mktemp("reference")
    fit(config(), out)
    return out


@pytest.fixture
def run_copy(reference, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    return out


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# ---- runs lost or silently mixed ---------------------------------------------------------------------
def test_train_into_a_run_folder_is_refused_without_resume(run_copy):
    before = {p.name: p.read_bytes() for p in run_copy.iterdir() if p.is_file()}
    with pytest.raises(UserError, match="already holds a run") as e:
        fit(config(), run_copy)
    assert "--resume" in str(e.value) and "fresh --out" in str(e.value) and one_line(e.value)
    assert {p.name: p.read_bytes() for p in run_copy.iterdir() if p.is_file()} == before


def test_overwrite_replaces_the_run_and_a_stale_lock_is_reported_then_taken(run_copy, capsys):
    (run_copy / "train.lock").write_text(f'{{"pid": {dead_pid()}, "host": "{os.uname().nodename}"}}')
    (run_copy / ".checkpoint.pt.tmp999999").write_bytes(b"half a checkpoint")  # a killed write's leftover
    summary = fit(config(epochs=1), run_copy, overwrite=True)
    err = capsys.readouterr().err
    assert "which no longer runs: taking it over" in err and "removed 1 temporary files" in err
    assert summary["epochs"] == 1 and load_checkpoint(str(run_copy / "checkpoint.pt"))["epoch"] == 1
    names = sorted(p.name for p in run_copy.iterdir() if p.is_file())
    assert "train.lock" not in names and not any(".tmp" in n for n in names), names
    modes = {p.name: p.stat().st_mode & 0o777 for p in run_copy.iterdir() if p.is_file()}
    assert len(set(modes.values())) == 1, modes  # every run file gets the same permissions


def test_a_live_lock_refuses_a_second_writer(tmp_path):
    from convzoo.training.runfolder import RunLock

    first = RunLock(str(tmp_path))
    first.acquire()
    try:
        with pytest.raises(UserError, match=rf"in use by another train \(pid {os.getpid()} on "):
            fit(config(), tmp_path)
        with pytest.raises(UserError, match="in use by another train"):
            RunLock(str(tmp_path)).acquire()
    finally:
        first.release()
    (tmp_path / "train.lock").write_text('{"pid": 1, "host": "elsewhere.example"}')
    with pytest.raises(UserError, match="another machine .* delete .*train.lock"):
        RunLock(str(tmp_path)).acquire()


def test_two_real_processes_one_waits_out(tmp_path):
    """A process holding the lock (as a running train does) makes a second one fail in one line."""
    code = (
        "import sys, time; from convzoo.training.runfolder import RunLock; "
        "RunLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(30)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=with_src()
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=f"pid {holder.pid}"):
            fit(config(), tmp_path)
    finally:
        holder.kill()
        holder.wait()


def test_torchrun_restart_validates_like_resume(run_copy, monkeypatch, capsys):
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    metrics = (run_copy / "metrics.csv").read_text()
    with pytest.raises(UserError, match=r"torchrun restart: optim.lr differs .*0.1 there, 0.5 now") as e:
        fit(config(optim={"lr": 0.5}), run_copy)
    assert one_line(e.value)
    with pytest.raises(UserError, match="torchrun restart: ema differs"):  # a null counts too
        fit(config(sets=["ema=0.9"]), run_copy)
    with pytest.raises(UserError, match="torchrun restart: data differs"):
        fit(config(data=str(run_copy)), run_copy)
    assert (run_copy / "metrics.csv").read_text() == metrics
    summary = fit(config(), run_copy)  # the same command line: continues (here: already finished)
    assert summary["epochs"] == 2 and "already finished" in capsys.readouterr().err


def test_resume_identifies_the_data_by_folder_and_fingerprint(tmp_path, monkeypatch, tiny_models_one_thread):
    from convzoo.training.resilience import resume_config
    from helpers import synthetic_folder

    for where in ("a", "b"):
        synthetic_folder(tmp_path / where / "data", per_class=4)
    (tmp_path / "b" / "data" / "train" / "b" / "3.png").unlink()  # b's data: another folder, 7 images
    monkeypatch.chdir(tmp_path / "a")
    run = tmp_path / "run"
    cfg = config(epochs=2, data="data", sets=["data.input_size=32"], batch_size=2)
    monkeypatch.setenv("CONVZOO_FAULT", "term@step=1")
    with pytest.raises(Interrupted):
        fit(cfg, run)
    monkeypatch.delenv("CONVZOO_FAULT")
    state = load_checkpoint(str(run / "checkpoint.pt"))
    assert state["data_identity"]["train_images"] == 8 and state["batch"] == 2
    monkeypatch.chdir(tmp_path / "b")  # the same relative --data from elsewhere: another folder
    with pytest.raises(UserError, match="data differs from the run being resumed") as e:
        resume_config(state, "tiny_test", "data")
    assert str(tmp_path / "a" / "data") in str(e.value) and one_line(e.value)
    with pytest.raises(UserError, match="data differs"):  # fit itself checks too (the CLI of today)
        fit(RunConfig.from_dict(state["config"]), run, resume=True)
    same = resume_config(state, "tiny_test", str(tmp_path / "a" / "data"))  # absolute path, same folder
    assert same.data_spec == str(tmp_path / "a" / "data")
    (tmp_path / "a" / "data" / "train" / "a" / "0.png").unlink()  # the dataset shrank mid-epoch
    with pytest.raises(UserError, match="data changed since the checkpoint: training images 8 there, 7 now"):
        fit(same, run, resume=True)


def test_sigterm_checkpoints_at_the_step_and_resumes_bitwise(reference, tmp_path, monkeypatch, capsys):
    """SIGTERM (CONVZOO_FAULT sends it just before step 5, inside epoch 2) with checkpoints every 10
    minutes: a checkpoint after step 5, exit code 143, the resume command printed; resumed, the
    run equals the uninterrupted one bit for bit."""
    monkeypatch.setenv("CONVZOO_FAULT", "term@step=5")
    with pytest.raises(Interrupted) as e:
        fit(config(), tmp_path)
    monkeypatch.delenv("CONVZOO_FAULT")
    assert e.value.code == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert "stopped by SIGTERM after batch 2" in err and f"--out {tmp_path} --resume" in err, err
    state = load_checkpoint(str(tmp_path / "checkpoint.pt"))
    assert (state["epoch"], state["batch"]) == (1, 2)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers put back
    fit(config(), tmp_path, resume=True)
    assert same_weights(reference, tmp_path)


def test_stop_request_catches_the_first_signal_and_not_the_second():
    import threading
    import time

    from convzoo.training.resilience import StopRequest

    def ctrl_c() -> None:
        # to the main thread itself: a process-directed signal may land on a native worker thread
        # (OpenVINO's, ONNX Runtime's pools, from earlier tests in this process), and Python then
        # runs the handler a moment later, possibly after the line that expects it
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        time.sleep(0.05)  # the handler runs at the next bytecode boundary; sleep is interrupted by it

    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # what a process starts with
    with StopRequest() as stop:
        ctrl_c()
        assert stop.signum == signal.SIGINT  # no KeyboardInterrupt: the run checkpoints first
        with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C stops at once
            ctrl_c()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    signal.signal(signal.SIGINT, before)


def test_every_rank_stops_when_any_rank_got_the_signal(monkeypatch):
    """Under torchrun the stop flag rides the per-step all-reduce: a rank without a signal of its
    own (another rank's vote in the sum) still checkpoints and stops at the same step."""
    from convzoo.engine import distributed as dist
    from convzoo.training.resilience import RunGuard, StopRequest

    monkeypatch.setattr(dist, "is_distributed", lambda: True)
    monkeypatch.setattr(dist, "world_size", lambda: 2)
    # the sums of two ranks: rank 1 has the same images and votes stop
    monkeypatch.setattr(dist, "all_reduce_sums", lambda v: [v[0], v[1] * 2, v[2], v[3] + 1])
    saved = []
    guard = RunGuard(torch.nn.Linear(1, 1), 10, save=saved.append, stop=StopRequest())
    assert guard.batch_ok(8, "epoch 1, batch 0")
    with pytest.raises(Interrupted) as e:
        guard.step_done(0, {"n": 8})
    assert saved == [{"batch": 1, "partial": {"n": 8}}] and e.value.code == 128 + signal.SIGTERM


# ---- small files that would take the machine down --------------------------------------------------
# Each crafted file is a few KB to a few MB. They are read in one child process whose address space
# is capped at what it uses after the imports plus 1 GiB (RLIMIT_AS), with a timeout: a regression
# fails the test (MemoryError, hang) instead of taking the machine down.
BOUNDED = r"""
import json, resource, sys
from convzoo.errors import UserError
from convzoo.data import datasets, matfile, shards
from convzoo.training import checkpoint
from convzoo import create_model, interop, weights
from convzoo.interop import caffe_format
readers = {"shard": lambda p: list(shards._read_tar(p, 0, 10)), "pt_convert": interop.load_checkpoint,
           "pt_resume": checkpoint.load_checkpoint, "idx": datasets.read_idx, "mat": matfile.read_ilsvrc_meta,
           "spec": weights.read_spec, "caffemodel": caffe_format.read_caffemodel,
           "mean": caffe_format.read_mean_file, "build": lambda p: create_model("resnet50", weights=p)}
pages = int(open("/proc/self/statm").read().split()[0])
limit = pages * resource.getpagesize() + (1 << 30)
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
out = {}
for name, (reader, path) in json.loads(sys.argv[1]).items():
    try:
        readers[reader](path)
        out[name] = "accepted"
    except UserError as e:
        out[name] = "UserError: " + str(e)
    except BaseException as e:
        out[name] = f"{type(e).__name__}: {e}"[:300]
print(json.dumps(out))
"""


def sparse_shard(path: Path, declared: int = 8 << 30) -> Path:
    """A tar whose image member is a PAX sparse file of `declared` bytes (16 real ones)."""
    import io
    import tarfile

    block = b"1\n0\n16\n".ljust(512, b"\0") + b"x" * 16  # sparse map: one 16-byte region at 0
    info = tarfile.TarInfo("00000000.png")
    info.size = len(block)
    info.pax_headers = {
        "GNU.sparse.major": "1",
        "GNU.sparse.minor": "0",
        "GNU.sparse.name": "00000000.png",
        "GNU.sparse.realsize": str(declared),
    }
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        t.addfile(info, io.BytesIO(block))
        cls = tarfile.TarInfo("00000000.cls")
        cls.size = 1
        t.addfile(cls, io.BytesIO(b"0"))
    return path


def zip_bomb_pt(path: Path, declared: int = 0xFFFF0000) -> Path:
    """torch.save's zip, its tensor record deflated and its directory declaring ~4 GiB."""
    import zipfile

    plain = path.with_suffix(".plain")
    torch.save({"format": "convzoo-checkpoint-1", "w": torch.zeros(1 << 16)}, plain)
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            kind = zipfile.ZIP_DEFLATED if info.filename.endswith("/data/0") else zipfile.ZIP_STORED
            dst.writestr(info.filename, src.read(info), compress_type=kind)
    blob = bytearray(path.read_bytes())
    name = next(n for n in zipfile.ZipFile(path).namelist() if n.endswith("/data/0")).encode()
    for sig, at in ((b"PK\x01\x02", 24), (b"PK\x03\x04", 22)):  # central and local header: size field
        pos = 0
        while (pos := blob.find(sig, pos)) >= 0:
            name_at = pos + (46 if sig == b"PK\x01\x02" else 30)
            if blob[name_at : name_at + len(name)] == name:
                blob[pos + at : pos + at + 4] = declared.to_bytes(4, "little")
            pos += 4
    path.write_bytes(bytes(blob))
    return path


def gzip_idx_bomb(path: Path) -> Path:
    """An idx header declaring 10x28x28 bytes, then 2 GiB of zeros (gzip members, 2 MB on disk)."""
    import gzip

    header = bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (10, 28, 28))
    zeros = gzip.compress(b"\0" * (16 << 20), compresslevel=1)
    path.write_bytes(gzip.compress(header + b"\0" * 7840) + zeros * 128)
    return path


def mat_billions(path: Path) -> Path:
    """meta.mat whose `synsets` struct array (no fields) declares (2**31-1)**2 elements."""
    import struct

    def element(typ, data):
        return struct.pack("<II", typ, len(data)) + data + b"\0" * (-len(data) % 8)

    body = (
        element(6, struct.pack("<II", 2, 0))
        + element(5, struct.pack("<ii", 2**31 - 1, 2**31 - 1))
        + element(1, b"synsets")
        + element(5, struct.pack("<i", 1))
        + element(1, b"")
    )
    path.write_bytes(
        b"MATLAB 5.0 MAT-file".ljust(124, b" ") + struct.pack("<H", 0x0100) + b"IM" + element(14, body)
    )
    return path


def spec_file(path: Path, **spec) -> Path:
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(path), metadata={"convzoo": json.dumps(spec)})
    return path


def empty_layers_caffemodel(path: Path, layers: int = 4_000_000) -> Path:
    """A NetParameter of `layers` empty `layer` entries (field 100, length 0: 3 bytes each)."""
    path.write_bytes(b"\xa2\x06\x00" * layers)
    return path


def chunked_mean(path: Path, chunks: int = 2_000_000) -> Path:
    """A 3 x 1 x `chunks`/3 mean BlobProto whose packed floats come in one 4-byte chunk each
    (legal protobuf: the parser joins them; Caffe writes one)."""
    width = chunks // 3

    def varint(n: int) -> bytes:
        out = b""
        while n >= 0x80:
            out, n = out + bytes([n & 0x7F | 0x80]), n >> 7
        return out + bytes([n])

    head = b"\x08\x01\x10\x03\x18\x01\x20" + varint(width)  # num 1, channels 3, height 1, width
    path.write_bytes(head + b"\x2a\x04\x00\x00\x80\x3f" * (3 * width))  # data: 1.0f per chunk
    return path


@pytest.fixture(scope="module")
def bounded(tmp_path_factory):
    """Every crafted file read in one memory-capped child: {case: outcome line}."""
    d = tmp_path_factory.mktemp("bombs")
    cases = {
        "sparse_tar": ("shard", sparse_shard(d / "train-000000.tar")),
        "pt_bomb_convert": ("pt_convert", zip_bomb_pt(d / "bomb.pth")),
        "pt_bomb_resume": ("pt_resume", d / "bomb.pth"),
        "gzip_idx": ("idx", gzip_idx_bomb(d / "train-images-idx3-ubyte.gz")),
        "mat_billions": ("mat", mat_billions(d / "meta.mat")),
        "spec_huge_input": (
            "spec",
            spec_file(d / "huge.safetensors", model="tiny_test", num_classes=2, input_size=10**9),
        ),
        "caffe_empty_layers": ("caffemodel", empty_layers_caffemodel(d / "empty.caffemodel")),
        "mean_in_chunks": ("mean", chunked_mean(d / "mean.binaryproto")),
        "spec_wide_model": (
            "build",
            spec_file(
                d / "wide.safetensors", model="resnet50", num_classes=10, model_kwargs={"base_width": 512}
            ),
        ),
        "spec_300k_classes": (
            "build",
            spec_file(d / "classes.safetensors", model="resnet50", num_classes=300_000),
        ),
        "spec_unknown_option": (
            "build",
            spec_file(d / "option.safetensors", model="resnet50", num_classes=10, model_kwargs={"widht": 2}),
        ),
    }
    todo = json.dumps({k: [a, str(b)] for k, (a, b) in cases.items()})
    r = subprocess.run(
        [sys.executable, "-c", BOUNDED, todo],
        capture_output=True,
        text=True,
        timeout=120,
        env={**with_src(), "OMP_NUM_THREADS": "1"},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "case, message",
    [
        ("sparse_tar", "as a sparse file"),
        ("pt_bomb_convert", "decompression bomb"),
        ("pt_bomb_resume", "decompression bomb"),
        ("gzip_idx", "decompresses to more than the 7,840 bytes it declares"),
        ("mat_billions", "elements in"),
        ("spec_huge_input", "input_size must be an integer in 1..4096"),
        ("caffe_empty_layers", "more than 200,000 protobuf fields"),
        ("mean_in_chunks", "more than 1,000 protobuf fields"),
        ("spec_wide_model", "do not fit resnet50"),
        ("spec_300k_classes", "do not fit resnet50"),
        ("spec_unknown_option", "resnet50 cannot be built with the file's options"),
    ],
)
def test_small_hostile_file_fails_fast_in_one_line(bounded, case, message):
    outcome = bounded[case]
    assert outcome.startswith("UserError: ") and message in outcome and one_line(outcome), outcome


# ---- folders: symlink loops, links leaving the tree, FIFOs; pack ----------------------------------
def linked_folder(tmp_path: Path) -> Path:
    """A 2-class folder dataset (4 images per class and split) plus, in train/a: a link loop to its
    own split, a link to an image outside the dataset, a dangling link and a FIFO named x.jpg."""
    from helpers import synthetic_folder

    root = synthetic_folder(tmp_path / "d")
    outside = tmp_path / "secret.png"
    outside.write_bytes((root / "train" / "a" / "0.png").read_bytes() + b"SECRET")
    (root / "train" / "a" / "loop").symlink_to(root / "train")
    (root / "train" / "a" / "out.png").symlink_to(outside)
    (root / "train" / "a" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    os.mkfifo(root / "train" / "a" / "x.jpg")
    return root


def test_folder_scan_follows_links_inside_once_and_opens_only_regular_files(tmp_path):
    import threading

    from convzoo.data.datasets import BadImage, BrokenImageWarning, build_dataset, load_image

    root = linked_folder(tmp_path)
    with pytest.warns(BrokenImageWarning, match="skipped 5 entries"):
        ds = build_dataset(str(root), "train")
    names = [os.path.relpath(p, root) for p, _ in ds.samples]
    assert len(names) == 8 and len(set(names)) == 8, names  # no duplicate through the loop
    assert not any(n.endswith(("out.png", "gone.png", "x.jpg")) for n in names)
    result = []
    fifo = root / "train" / "a" / "x.jpg"
    t = threading.Thread(
        target=lambda: result.append(_load_or_reason(load_image, BadImage, fifo)), daemon=True
    )
    t.start()
    t.join(10)
    assert result and "not a regular file" in result[0], "opening a FIFO blocked"


def _load_or_reason(load, bad, path):
    try:
        load(path)
        return "loaded"
    except bad as e:
        return str(e)


def test_pack_skips_links_leaving_the_tree_and_unreadable_files(tmp_path, monkeypatch):
    import convzoo.data.pack as packing

    root = linked_folder(tmp_path)
    (root / "train" / "a" / "x.jpg").unlink()
    real_open = packing.open_regular

    def deny_one(path, *a):
        if path.endswith("b/1.png"):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(path, *a)

    monkeypatch.setattr(packing, "open_regular", deny_one)
    with pytest.warns(UserWarning) as caught:
        meta = packing.pack(str(root), str(tmp_path / "packed"), progress=False)
    text = " ".join(str(w.message) for w in caught)
    assert "skipped 1 unreadable files" in text and "b/1.png (Permission denied)" in text, text
    assert meta["splits"]["train"]["count"] == 7 and meta["splits"]["train"]["skipped"] == 1
    files = sorted(p.name for p in (tmp_path / "packed").iterdir())
    assert not any(".tmp" in n for n in files), files
    assert all(b"SECRET" not in p.read_bytes() for p in (tmp_path / "packed").glob("*.tar"))


def test_shard_index_with_bad_counts_and_negative_labels_is_one_line(tmp_path):
    from convzoo.data import shards
    from convzoo.data.datasets import build_dataset
    from convzoo.data.pack import pack
    from helpers import synthetic_folder

    out = tmp_path / "packed"
    pack(str(synthetic_folder(tmp_path / "d")), str(out), progress=False)
    meta_path = out / shards.META
    good = json.loads(meta_path.read_text())
    for damage, message in (
        (lambda m: m["splits"]["train"]["shards"][0].update(count=-4), "count >= 0"),
        (lambda m: m["splits"]["train"].update(count=10**9), "not the sum"),
        (lambda m: m["splits"]["val"]["shards"][0].update(name="../x.tar"), "file name"),
    ):
        meta = json.loads(json.dumps(good))
        damage(meta)
        meta_path.write_text(json.dumps(meta))
        with pytest.raises(UserError, match=message) as e:
            build_dataset(f"shards:{out}", "train")
        assert one_line(e.value)
    meta_path.write_text(json.dumps(good))
    import tarfile

    tar = out / good["splits"]["val"]["shards"][0]["name"]
    with tarfile.open(tar) as t:
        members = [(m, t.extractfile(m).read()) for m in t]
    with tarfile.open(tar, "w", format=tarfile.USTAR_FORMAT) as t:
        for m, data in members:
            data = b"-1" if m.name.endswith(".cls") else data
            m.size = len(data)
            t.addfile(m, __import__("io").BytesIO(data))
    with pytest.raises(UserError, match="label -1 outside"):
        next(iter(build_dataset(f"shards:{out}", "val")))


# ---- one line, not a traceback -------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["file", "read-only", "empty"])
def test_unusable_output_paths_are_one_line(tmp_path, kind, monkeypatch):
    from convzoo.outputs import output_dir

    target = {"file": tmp_path / "f", "read-only": tmp_path / "ro" / "sub", "empty": ""}[kind]
    if kind == "file":
        target.write_text("x")
    if kind == "read-only":
        target.parent.mkdir()
        monkeypatch.setattr(os, "access", lambda p, mode: False)  # (root ignores chmod 555)
        monkeypatch.setattr(
            os,
            "makedirs",
            lambda *a, **k: (_ for _ in ()).throw(PermissionError(errno.EACCES, "Permission denied")),
        )
    for flag in ("--out", "--report", "--cam"):
        with pytest.raises(UserError, match=f"^{flag} ") as e:
            output_dir(target, flag)
        assert one_line(e.value)
    with pytest.raises(UserError, match="--out "):  # train checks --out before reading any data
        fit(config(), target)


def test_eval_and_predict_check_report_and_cam_before_any_work(tmp_path, monkeypatch):
    from convzoo.inference import evaluation
    from convzoo.inference import predict as predict_mod

    (tmp_path / "file").write_text("x")
    for module in (evaluation, predict_mod):  # where each looks create_model up
        monkeypatch.setattr(module, "create_model", lambda *a, **k: pytest.fail("work started"))
    job = {"model": "tiny_test", "weights": "w.safetensors", "data": "synthetic"}
    with pytest.raises(UserError, match="--report .* is a file"):
        evaluation.evaluate_weights(evaluation.EvalJob(**job, report=str(tmp_path / "file")))
    with pytest.raises(UserError, match="--cam .* is a file"):
        cam = str(tmp_path / "file")
        predict_mod.predict(
            predict_mod.PredictJob("tiny_test", "w.safetensors", (str(tmp_path),), cam_dir=cam)
        )
    for limit in (0, -5):
        with pytest.raises(UserError, match="--limit must be a positive number"):
            evaluation.EvalJob(**job, limit=limit)
    with pytest.raises(UserError, match="--input-size must be a positive integer"):
        evaluation.EvalJob(**job, input_size=0)


def test_full_disk_during_training_is_one_line_and_keeps_the_files(run_copy, monkeypatch):
    """The disk fills up while the next epoch's files are written: RunFailed (exit 1) saying so,
    no temporary file left, every previous file intact but the checkpoint, which was written
    first (the epoch's commit: a resume writes the files again from it)."""
    import safetensors.torch

    before = {p.name: p.read_bytes() for p in run_copy.iterdir() if p.is_file()}

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(RunFailed, match="no space left on device writing .*last.safetensors") as e:
        fit(config(epochs=3), run_copy, resume=True)
    assert one_line(e.value)
    after = {p.name: p.read_bytes() for p in run_copy.iterdir() if p.is_file()}
    assert after.pop("config.yaml") != before.pop("config.yaml")  # the resumed run's (epochs: 3)
    assert load_checkpoint(str(run_copy / "checkpoint.pt"))["epoch"] == 3
    after.pop("checkpoint.pt"), before.pop("checkpoint.pt")
    assert after == before


def test_corrupt_memory_cache_is_a_miss_and_is_rebuilt(tmp_path, monkeypatch):
    from convzoo.data import memory
    from convzoo.data.datasets import build_dataset
    from helpers import synthetic_folder

    monkeypatch.setenv("CONVZOO_CACHE", str(tmp_path / "cache"))
    ds = build_dataset(str(synthetic_folder(tmp_path / "d")), "train")
    images, labels, _ = memory.decode_split(ds, 32)
    (cache,) = (tmp_path / "cache").iterdir()
    for damage in (cache.read_bytes()[:100], b"not a zip at all"):
        cache.write_bytes(damage)
        again, again_labels, _ = memory.decode_split(ds, 32)
        assert torch.equal(again, images) and torch.equal(again_labels, labels)
    import numpy as np  # whole file, wrong content: negative labels would index past the classes

    np.savez(cache, images=images.numpy(), labels=-labels.numpy() - 1, skipped=np.int64(0))
    assert torch.equal(memory.decode_split(ds, 32)[1], labels)


@pytest.mark.parametrize(
    "tamper, message",
    [
        (lambda s: s.pop("optimizer"), "'optimizer' is missing"),
        (lambda s: s.update(epoch="2"), "'epoch' is not a count"),
        (lambda s: s.update(model={"fc.weight": [1.0]}), "'model' is not a state dict"),
        (lambda s: s.update(history=s["history"][:1]), "1 epochs of history for epoch 2"),
        (lambda s: s.update(rng={}), "'rng' is not random-number states"),
    ],
)
def test_tampered_checkpoint_is_one_line(reference, tmp_path, tamper, message):
    from convzoo.training.checkpoint import save_checkpoint

    state = torch.load(reference / "checkpoint.pt", weights_only=True)
    tamper(state)
    save_checkpoint(str(tmp_path / "checkpoint.pt"), state)
    with pytest.raises(UserError, match=message) as e:
        load_checkpoint(str(tmp_path / "checkpoint.pt"))
    assert one_line(e.value)


@pytest.mark.parametrize(
    "setting, message",
    [
        ("data.max_train_images=-3", "data.max_train_images must be null or a positive integer"),
        ("data.max_val_images=0", "data.max_val_images must be"),
        ("optim.lr=.inf", "optim.lr must be a finite number > 0"),
        ("optim.lr=.nan", "optim.lr must be a"),
        ("data.input_size=0", "data.input_size must be"),
        ("data.std=[0.2, 0, 0.2]", "data.std must be a list of 3 numbers > 0"),
        ("schedule.gamma=-1", "schedule.gamma must be"),
    ],
)
def test_out_of_range_settings_are_refused(setting, message):
    with pytest.raises(UserError, match=f"^{message}") as e:
        config(sets=[setting])
    assert one_line(e.value)


@pytest.mark.parametrize(
    "bad, message", [("int8", "is int8, the model needs floating-point"), ("nan", "holds NaN or Inf")]
)
def test_int8_or_nan_weights_are_refused(tmp_path, bad, message, tiny_models_one_thread):
    import tiny_models
    from convzoo.weights import WeightSpec, load_weights, save_weights

    state = tiny_models.TinyNet(10).state_dict()
    key = "fc.weight"
    state[key] = (
        torch.zeros_like(state[key], dtype=torch.int8)
        if bad == "int8"
        else state[key].clone().fill_(float("nan"))
    )
    spec = WeightSpec(model="tiny_test", num_classes=10, input_size=32)
    save_weights(str(tmp_path / "w.safetensors"), state, spec)
    with pytest.raises(UserError, match=message) as e:
        load_weights(tiny_models.TinyNet(10), str(tmp_path / "w.safetensors"))
    assert key in str(e.value) and one_line(e.value)


@pytest.mark.parametrize(
    "text, message",
    [
        ("null", "must be a JSON object, got NoneType"),
        ("[1, 2]", "must be a JSON object, got list"),
        ('{"model": "m"}', "lacks num_classes"),
        ('{"model": "m", "num_classes": 2, "crop_size": 100000}', "crop_size must be null or an integer"),
        ('{"model": "m", "num_classes": 2, "std": [0.2, 0, 0.2]}', "std must be 1 or 3 finite numbers > 0"),
        ('{"model": "m", "num_classes": 2, "mean": [0.5], "std": [0.2, 0.2, 0.2]}', "differ in length"),
        ('{"model": "m", "num_classes": 2, "labels": ["a"]}', "1 labels for 2 classes"),
        ('{"model": "m", "num_classes": true}', "num_classes must be an integer"),
    ],
)
def test_weightspec_fields_are_validated(text, message):
    from convzoo.weights import WeightSpec

    with pytest.raises(UserError, match=message):
        WeightSpec.from_json(text)


def test_input_size_zero_is_an_error_not_the_default():
    from convzoo.inference.bench import bench

    with pytest.raises(UserError, match="--input-size"):
        bench("resnet18", input_size=0, steps=1, warmup=0)
