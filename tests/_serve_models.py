"""Test models and weights for the serve tests, and the server entry for a subprocess:
`python tests/_serve_models.py <convzoo serve args>` serves with `serve_test` registered (and a
four-model accuracy-vs-cost chart).

`serve_test` is tests/tiny_models.ConvBNNet (global average pooling then one Linear, so class
activation maps work) at a 32 px input; its weights files are real convzoo safetensors with
a WeightSpec (random weights, non-trivial BN statistics)."""

import contextlib
import os
import struct
import subprocess
import sys
import time
import zlib

import torch

from convzoo import registry
from convzoo.weights import WeightSpec, save_weights
from helpers import free_port, randomize_  # noqa: F401  (free_port: the serve tests call it from here)
from tiny_models import ConvBNNet

NAME = "serve_test"
CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@contextlib.contextmanager
def registered():
    registry._ensure_loaded()
    registry._MODELS[NAME] = registry.ModelInfo(
        NAME,
        lambda num_classes=10, **kw: ConvBNNet(num_classes, **kw),
        "serve test model",
        input_size=32,
        num_classes=10,
        min_input_size=16,
    )
    try:
        yield NAME
    finally:
        registry._MODELS.pop(NAME, None)


def make_weights(path, places: bool = False, seed: int = 0, labels: list[str] | None = None) -> str:
    """A `serve_test` weights file: 10 CIFAR classes (or `labels`), or the 365 Places classes with
    their label set."""
    from convzoo.data.labels import load_labels

    torch.manual_seed(seed)
    labels = load_labels("places365") if places else (labels or CIFAR)
    model = randomize_(ConvBNNet(len(labels)), seed)
    spec = WeightSpec(
        NAME,
        len(labels),
        labels=list(labels),
        input_size=32,
        resize_size=36,
        source="places365" if places else "convzoo",
        extra={"label_set": "places365"} if places else {},
    )
    save_weights(str(path), model, spec)
    return str(path)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png() -> bytes:
    """A 200-byte PNG whose header says 30000 x 30000 (900 MP): decoding it would take 900 MB."""
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 30001 * 4)
    chunks = _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def thin_png() -> bytes:
    """A 20000 x 2 PNG (under 200 bytes): resized to a 256 px shorter side it would be 2.56 M px long."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (20000, 2), (90, 140, 200)).save(buf, "PNG")
    return buf.getvalue()


def start_server(args: list[str], port: int, timeout: float = 90) -> subprocess.Popen:
    """`convzoo serve` in a subprocess (serve_test registered) on 127.0.0.1:port, once /readyz answers."""
    import httpx

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, os.path.abspath(__file__), *args, "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode}: {proc.stdout.read()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"server not ready in {timeout} s: {proc.stdout.read()[-2000:]}")


if __name__ == "__main__":
    import argparse

    from convzoo.analysis import chart
    from convzoo.commands import serve

    torch.set_num_threads(1)
    # four bubbles instead of profiling all ~25 charted models at start-up (10-25 s of CPU on 2 busy
    # cores): the chart's code path is the same
    chart.PUBLISHED = {k: chart.PUBLISHED[k] for k in ("alexnet", "googlenet", "resnet18", "vgg16")}
    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    with registered():
        serve.run(parser.parse_args(sys.argv[1:]))
