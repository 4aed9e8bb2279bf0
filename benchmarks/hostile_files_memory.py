"""Peak memory and time of the readers of small hostile files, per source tree.

Each case is crafted here and read in a fresh child process (one per case and source tree);
the child's peak resident memory after its imports (VmHWM less the VmRSS it had before the read)
and the seconds of the read are reported with the outcome's first line:

- `caffe_empty_layers`: a `.caffemodel` of `--layers` empty layers (3 bytes each);
- `mean_in_chunks`: a 3 x 1 x W mean `.binaryproto` whose floats come in one chunk each (`--chunks`);
- `spec_wide_model`: a 188-byte weights file whose WeightSpec asks for resnet50 with base_width 512;
- `spec_300k_classes`: the same with num_classes 300000.

`--src DIR` reads with another convzoo source tree (e.g. a `git archive` of an older commit);
each tree given is measured in turn. `--rlimit-gib` caps each child's address space above what
its imports hold (a tree that would take the machine down then ends in MemoryError instead):

    python benchmarks/hostile_files_memory.py --src /tmp/old/src --src src --layers 2000000

Writes benchmarks/results/hostile_files_memory-readers-<layers>-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import ROOT, write_result

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
case, path, cap = sys.argv[2], sys.argv[3], int(sys.argv[4])
from convzoo import create_model
from convzoo.interop import caffe_format
import google.protobuf  # imported before the baseline: its size is no part of the read
caffe_format.messages()
read = {"caffe_empty_layers": caffe_format.read_caffemodel, "mean_in_chunks": caffe_format.read_mean_file,
        "spec_wide_model": lambda p: create_model("resnet50", weights=p),
        "spec_300k_classes": lambda p: create_model("resnet50", weights=p)}[case]
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
before = status("VmRSS")
if cap:  # on top of the address space the imports hold
    limit = status("VmSize") + cap
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
t = time.perf_counter()
try:
    read(path)
    outcome = "accepted"
except BaseException as e:
    outcome = f"{type(e).__name__}: {e}".splitlines()[0][:200]
seconds = time.perf_counter() - t
peak_mb = round((status("VmHWM") - before) / 2**20, 1)
print(json.dumps({"outcome": outcome, "seconds": round(seconds, 3), "peak_mb": peak_mb}))
"""


def varint(n: int) -> bytes:
    out = b""
    while n >= 0x80:
        out, n = out + bytes([n & 0x7F | 0x80]), n >> 7
    return out + bytes([n])


def make_cases(d: Path, layers: int, chunks: int) -> dict[str, Path]:
    from safetensors.torch import save_file

    (d / "empty.caffemodel").write_bytes(b"\xa2\x06\x00" * layers)
    width = chunks // 3
    head = b"\x08\x01\x10\x03\x18\x01\x20" + varint(width)
    (d / "mean.binaryproto").write_bytes(head + b"\x2a\x04\x00\x00\x80\x3f" * (3 * width))
    for name, spec in (
        ("wide", {"model": "resnet50", "num_classes": 10, "model_kwargs": {"base_width": 512}}),
        ("classes", {"model": "resnet50", "num_classes": 300_000}),
    ):
        save_file({}, str(d / f"{name}.safetensors"), metadata={"convzoo": json.dumps(spec)})
    return {
        "caffe_empty_layers": d / "empty.caffemodel",
        "mean_in_chunks": d / "mean.binaryproto",
        "spec_wide_model": d / "wide.safetensors",
        "spec_300k_classes": d / "classes.safetensors",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", action="append", help="convzoo source trees (default: this one's src)")
    ap.add_argument("--layers", type=int, default=20_000_000)
    ap.add_argument("--chunks", type=int, default=15_000_000)
    ap.add_argument(
        "--rlimit-gib", type=float, default=0, help="address-space cap per child above its imports (0: none)"
    )
    ap.add_argument("--cases", default="", help="comma-separated subset of the cases")
    args = ap.parse_args()
    trees = args.src or [str(ROOT / "src")]
    with tempfile.TemporaryDirectory() as tmp:
        cases = make_cases(Path(tmp), args.layers, args.chunks)
        wanted = [c for c in cases if not args.cases or c in args.cases.split(",")]
        results = {}
        for tree in trees:
            for case in wanted:
                cap = int(args.rlimit_gib * 2**30)
                r = subprocess.run(
                    [sys.executable, "-c", CHILD, os.path.abspath(tree), case, str(cases[case]), str(cap)],
                    capture_output=True,
                    text=True,
                    env={**os.environ, "OMP_NUM_THREADS": "1"},
                )
                line = (r.stdout.strip().splitlines() or [f"exit {r.returncode}: {r.stderr[-200:]}"])[-1]
                got = json.loads(line) if line.startswith("{") else {"outcome": line}
                got["file_bytes"] = cases[case].stat().st_size
                results[f"{tree}:{case}"] = got
                print(tree, case, got, file=sys.stderr, flush=True)
    write_result(
        "hostile_files_memory",
        "readers",
        f"{args.layers}layers",
        {"layers": args.layers, "chunks": args.chunks, "rlimit_gib": args.rlimit_gib, "results": results},
    )


if __name__ == "__main__":
    main()
