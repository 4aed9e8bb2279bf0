"""Peak memory of `convzoo serve` under large uploads, and how long a normal request waits meanwhile.

N concurrent uploads (default 4) of one small-file, many-pixel RGBA PNG (default 6000 x 6000, a
few hundred KB) are sent to a fresh server on a free 127.0.0.1 port by a bounded client (every
request has a timeout), while one small JPEG is classified every 0.25 s. The server's resident
memory is sampled from /proc every 20 ms; its VmHWM (peak) is read at the end.

`--src DIR` runs the server from another convzoo source tree (e.g. a `git archive` of an older
commit), so two versions can be measured in one run; by default the one here. Each source tree
given is measured in turn, in the order given:

    python benchmarks/serve_decode_memory.py --src /tmp/old/src --src src --size 6000

Writes benchmarks/results/serve_decode_memory-<model>-<N>x<size>-<date>.json.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from _common import ROOT, write_result
from serve_load import SERVER, free_port, random_weights


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def big_png(size: int) -> bytes:
    """A size x size RGBA PNG with a transparent border: a few hundred KB for ~4 * size^2 bytes of pixels."""
    from PIL import Image, ImageDraw

    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    ImageDraw.Draw(img).ellipse((size // 8, size // 8, size * 7 // 8, size * 7 // 8), fill=(200, 80, 40, 255))
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=False, compress_level=9)
    return buf.getvalue()


def small_jpeg() -> bytes:
    import numpy as np
    from PIL import Image

    yy, xx = np.mgrid[0:375, 0:500]
    buf = io.BytesIO()
    Image.fromarray(np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1).astype("uint8")).save(buf, "JPEG")
    return buf.getvalue()


def measure(src: str, args, weights: str, png: bytes, jpeg: bytes) -> dict:
    import httpx

    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.path.abspath(src), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-c",
        SERVER,
        args.model,
        "--weights",
        weights,
        "--port",
        str(port),
        *args.server_args,
    ]
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise SystemExit(f"server did not start: {log.read()[-2000:].decode(errors='replace')}")
            try:
                if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        for _ in range(3):  # warm: the first requests pay for lazy imports
            httpx.post(f"{base}/v1/predict", content=jpeg, headers={"content-type": "image/jpeg"}, timeout=60)
        time.sleep(1)
        baseline = rss_kib(proc.pid)
        peak, stop = [baseline], threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], rss_kib(proc.pid))
                time.sleep(0.02)

        big_codes: list = []
        small_latency: list[float] = []
        small_codes: list[int] = []

        def upload():
            try:
                r = httpx.post(
                    f"{base}/v1/predict",
                    content=png,
                    headers={"content-type": "image/png"},
                    timeout=args.timeout,
                )
                big_codes.append((r.status_code, r.json().get("error", "")[:160]))
            except httpx.HTTPError as e:
                big_codes.append((type(e).__name__, ""))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.monotonic()
        uploads = [threading.Thread(target=upload) for _ in range(args.uploads)]
        for t in uploads:
            t.start()
        while any(t.is_alive() for t in uploads) and time.monotonic() - t0 < args.timeout:
            s0 = time.monotonic()
            try:
                r = httpx.post(
                    f"{base}/v1/predict",
                    content=jpeg,
                    headers={"content-type": "image/jpeg"},
                    timeout=args.timeout,
                )
                small_codes.append(r.status_code)
            except httpx.HTTPError:
                small_codes.append(0)
            small_latency.append(time.monotonic() - s0)
            time.sleep(0.25)
        for t in uploads:
            t.join(args.timeout)
        wall = time.monotonic() - t0
        stop.set()
        sampler.join()
        hwm = rss_kib(proc.pid, "VmHWM")
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return {
        "src": src,
        "server_args": args.server_args,
        "baseline_rss_mib": round(baseline / 1024, 1),
        "peak_rss_mib_sampled": round(peak[0] / 1024, 1),
        "vm_hwm_mib": round(hwm / 1024, 1),
        "big_uploads": big_codes,
        "seconds_until_all_big_answered": round(wall, 2),
        "small_requests": len(small_codes),
        "small_requests_ok": small_codes.count(200),
        "small_latency_max_s": round(max(small_latency), 3) if small_latency else None,
        "small_latency_median_s": round(statistics.median(small_latency), 3) if small_latency else None,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--src", action="append", default=[], help="convzoo source tree(s) to serve from (default: src)"
    )
    p.add_argument("--model", default="resnet20_cifar")
    p.add_argument("--size", type=int, default=6000, help="side of the square RGBA PNG")
    p.add_argument("--uploads", type=int, default=4, help="concurrent large uploads")
    p.add_argument("--timeout", type=float, default=180, help="seconds any request may take")
    p.add_argument("server_args", nargs="*", help="extra `convzoo serve` flags (after --)")
    args = p.parse_args()
    srcs = args.src or [str(ROOT / "src")]
    png, jpeg = big_png(args.size), small_jpeg()
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        weights = random_weights(args.model, folder)
        for src in srcs:
            print(f"measuring {src} ...", file=sys.stderr)
            runs.append(measure(src, args, weights, png, jpeg))
            print(runs[-1], file=sys.stderr)
    what = f"{args.uploads}x{args.size}"
    payload = {"png_bytes": len(png), "size": args.size, "uploads": args.uploads, "runs": runs}
    write_result("serve_decode_memory", args.model, what, payload)


if __name__ == "__main__":
    main()
