"""Load test of `convzoo serve`: dynamic batching against one image per forward pass.

N concurrent clients (default 32) send real photos (../shared/data/imagenet-samples.tar when
present, else generated JPEGs) for T seconds (default 60), with 5 % bad uploads mixed in (not an
image, truncated JPEG, wrong content type, decompression bomb header, 20000 x 2 PNG). The same
server is run twice in this run, back to back with the same settings: with --max-batch B (default
16) and with --max-batch 1, in the order A B (B A again with --rounds 2). Each server is started fresh on a
free 127.0.0.1 port, warmed up, loaded, then stopped with SIGTERM (its exit code is recorded).

Reports per configuration: good images/s, p50/p95/p99 latency of good requests, mean batch size
(from the server's /metrics), failed good requests (anything but 200), server errors (5xx of any
request), and bad uploads answered 4xx. Writes
benchmarks/results/serve_load-<model>-batch<B>_vs_1_<N>clients-<date>.json.

    python benchmarks/serve_load.py --model resnet18 --duration 20
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import io
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, SAMPLES_TAR, sample_files, write_result

SERVER = (
    "import sys, argparse; from convzoo.commands import serve; p = argparse.ArgumentParser(); "
    "serve.add_arguments(p); serve.run(p.parse_args(sys.argv[1:]))"
)


def random_weights(model: str, folder: str) -> str:
    """Random-init weights with a real WeightSpec (the model's class count and input size; the
    ImageNet labels for 1000 classes)."""
    import torch

    from convzoo.data.labels import load_labels
    from convzoo.factory import create_model
    from convzoo.registry import model_info
    from convzoo.weights import WeightSpec, save_weights

    torch.manual_seed(0)
    info = model_info(model)
    labels = load_labels("imagenet1k") if info.num_classes == 1000 else None
    path = os.path.join(folder, f"{model}_random.safetensors")
    save_weights(
        path,
        create_model(model),
        WeightSpec(info.name, info.num_classes, labels=labels, input_size=info.input_size, source="random"),
    )
    return path


def photos(limit: int) -> tuple[list[bytes], str]:
    if SAMPLES_TAR.is_file():
        files = sample_files()[:limit]
        return [Path(f).read_bytes() for f in files], f"{len(files)} photos from {SAMPLES_TAR.name}"
    import numpy as np
    from PIL import Image

    out = []
    for i in range(limit):
        rng = np.random.RandomState(i)
        yy, xx = np.mgrid[0:375, 0:500]
        channels = [(xx * (i + 1)) % 256, (yy * 3) % 256, rng.randint(0, 256, (375, 500))]
        img = np.stack(channels, -1).astype("uint8")
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out, f"{limit} generated 500x375 JPEGs ({SAMPLES_TAR} not found)"


def bad_uploads(photo: bytes) -> list[tuple[bytes, str]]:
    sys.path.insert(0, str(ROOT / "tests"))
    from _serve_models import bomb_png, thin_png  # 200-byte PNGs: 900 MP announced; 20000 x 2

    return [
        (b"this is not an image", "image/jpeg"),
        (photo[: len(photo) // 3], "image/jpeg"),
        (photo, "application/x-www-form-urlencoded"),
        (bomb_png(), "image/png"),
        (thin_png(), "image/png"),
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args, max_batch: int, weights: str, port: int, log) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": str(args.threads)}
    cmd = [
        sys.executable,
        "-c",
        SERVER,
        args.model,
        "--weights",
        weights,
        "--port",
        str(port),
        "--max-batch",
        str(max_batch),
        "--max-wait-ms",
        str(args.max_wait_ms),
        "--precision",
        args.precision,
        "--queue-size",
        str(max(64, 2 * args.clients)),
    ]
    cmd += ["--compile"] if args.compile else []
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


async def wait_ready(client, base: str, proc, model: str, timeout: float = 900) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode} before it was ready")
        try:
            if (await client.get(f"{base}/readyz")).status_code == 200:
                # the page's chart is built in the background at start-up: let it finish first,
                # so it does not take CPU from the measurement
                await client.get(f"{base}/v1/models/{model}/chart.png", timeout=timeout)
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.5)
    raise SystemExit(f"server not ready in {timeout} s")


async def load(client, base: str, args, good: list[bytes], bad: list, seconds: float) -> list[tuple]:
    """(kind, status, seconds) per request of `args.clients` clients for `seconds`."""
    records: list[tuple] = []
    deadline = time.monotonic() + seconds

    async def one_client(i: int):
        rng = random.Random(i)
        while time.monotonic() < deadline:
            if rng.random() < args.bad_fraction:
                kind, (data, ctype) = "bad", rng.choice(bad)
            else:
                kind, data, ctype = "good", rng.choice(good), "image/jpeg"
            t0 = time.perf_counter()
            try:
                r = await client.post(f"{base}/v1/predict", content=data, headers={"content-type": ctype})
                status = r.status_code
            except Exception as e:  # noqa: BLE001 - a transport failure is a failed request, recorded
                status = f"{type(e).__name__}"
            records.append((kind, status, time.perf_counter() - t0))

    await asyncio.gather(*(one_client(i) for i in range(args.clients)))
    return records


def metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


async def measure(args, max_batch: int, weights: str, good: list[bytes], bad: list, log) -> dict:
    import httpx

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_server(args, max_batch, weights, port, log)
    try:
        limits = httpx.Limits(max_connections=args.clients + 4, max_keepalive_connections=args.clients + 4)
        async with httpx.AsyncClient(timeout=args.timeout, limits=limits) as client:
            await wait_ready(client, base, proc, args.model)
            await load(client, base, args, good, bad, min(5.0, args.duration / 4))  # warm-up, not counted
            before = (await client.get(f"{base}/metrics")).text
            records = await load(client, base, args, good, bad, args.duration)
            after = (await client.get(f"{base}/metrics")).text
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = "killed after 120 s"
    lat = sorted(s for kind, status, s in records if kind == "good" and status == 200)
    batches = metric(after, "convzoo_batch_size_count") - metric(before, "convzoo_batch_size_count")
    images = metric(after, "convzoo_batch_size_sum") - metric(before, "convzoo_batch_size_sum")
    return {
        "max_batch": max_batch,
        "seconds": args.duration,
        "good_requests": sum(k == "good" for k, _, _ in records),
        "good_images_per_second": len(lat) / args.duration,
        "latency_p50_s": percentile(lat, 50) if lat else None,
        "latency_p95_s": percentile(lat, 95) if lat else None,
        "latency_p99_s": percentile(lat, 99) if lat else None,
        "mean_batch_size": images / batches if batches else None,
        "failed_good_requests": sum(k == "good" and s != 200 for k, s, _ in records),
        "server_errors": sum(isinstance(s, int) and s >= 500 for _, s, _ in records),
        "bad_requests": sum(k == "bad" for k, _, _ in records),
        "bad_answered_4xx": sum(k == "bad" and isinstance(s, int) and 400 <= s < 500 for k, s, _ in records),
        "statuses": dict(sorted(collections.Counter(str(s) for _, s, _ in records).items())),
        "server_exit_code": code,
    }


def table(runs: list[dict]) -> str:
    head = (
        "| max batch | good img/s | p50 ms | p95 ms | p99 ms | mean batch | failed good | 5xx "
        "| bad -> 4xx |\n" + "|---:" * 9 + "|"
    )
    rows = [
        f"| {r['max_batch']} | {r['good_images_per_second']:.1f} | {r['latency_p50_s'] * 1e3:.0f} | "
        f"{r['latency_p95_s'] * 1e3:.0f} | {r['latency_p99_s'] * 1e3:.0f} | {r['mean_batch_size']:.2f} | "
        f"{r['failed_good_requests']} | {r['server_errors']} | "
        f"{r['bad_answered_4xx']}/{r['bad_requests']} |"
        for r in runs
    ]
    return "\n".join([head, *rows])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument(
        "--weights", default=None, help="weights file (default: random weights with ImageNet labels)"
    )
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load per configuration")
    p.add_argument("--bad-fraction", type=float, default=0.05)
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=1, help="A B, then B A, ... (alternating order)")
    p.add_argument("--threads", type=int, default=2, help="the server's torch threads")
    p.add_argument("--precision", default="auto")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--photos", type=int, default=200, help="distinct photos the clients cycle through")
    p.add_argument("--timeout", type=float, default=120.0, help="per request, seconds")
    args = p.parse_args()

    good, source = photos(args.photos)
    bad = bad_uploads(good[0])
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights or random_weights(args.model, tmp)
        with open(os.path.join(tmp, "server.log"), "w+b") as log:
            for rnd in range(args.rounds):
                order = [args.max_batch, 1] if rnd % 2 == 0 else [1, args.max_batch]
                for mb in order:
                    print(
                        f"round {rnd + 1}: max batch {mb}, {args.clients} clients, {args.duration:.0f} s",
                        file=sys.stderr,
                    )
                    runs.append({"round": rnd + 1, **asyncio.run(measure(args, mb, weights, good, bad, log))})
                    print(table(runs[-1:]), file=sys.stderr)
            log.seek(0)
            tail = log.read().decode(errors="replace").splitlines()[-20:]
    print(table(runs))
    settings = {**vars(args), "weights": args.weights or f"random ({args.model})"}
    what = f"batch{args.max_batch}_vs_1_{args.clients}clients"
    payload = {
        "settings": settings,
        "photos": source,
        "runs": runs,
        "table": table(runs),
        "server_log_tail": tail,
    }
    write_result("serve_load", args.model, what, payload)


if __name__ == "__main__":
    main()
