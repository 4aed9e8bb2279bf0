"""`convzoo bench`: the JSON contract and bad input. No timing is asserted (shared CI
machines are noisy); only that the numbers exist and are consistent with each other."""

import json
import mmap
import os
import re

import pytest
import torch
import torch.nn as nn

from convzoo import cli
from convzoo.commands.bench import format_result
from convzoo.inference.bench import PeakMemory
from convzoo.registry import list_models, register


def _model_name() -> str:
    if "resnet18" in list_models():
        return "resnet18"
    name = "_bench_tiny"  # stand-in until the ResNet family is in this tree
    if name not in list_models():

        @register(name, paper="test stand-in", input_size=64)
        def _bench_tiny(num_classes=1000):
            return nn.Sequential(
                nn.Conv2d(3, 8, 3, 2, 1, bias=False),
                nn.BatchNorm2d(8),
                nn.ReLU(),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                nn.Linear(8, num_classes),
            )

    return name


@pytest.mark.parametrize("mode", ["infer", "train"])
def test_bench_json_contract(mode, capsys):
    name = _model_name()
    rc = cli.main(
        [
            "bench",
            name,
            "--mode",
            mode,
            "--batch-size",
            "2",
            "--input-size",
            "64",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--json",
        ]
    )
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)  # exactly one JSON document
    for key in (
        "model",
        "mode",
        "precision",
        "batch_size",
        "images_per_second",
        "latency",
        "mfu",
        "macs_per_image",
        "peak_flops_per_second",
        "channels_last",
        "compiled",
        "machine",
    ):
        assert key in doc, key
    assert (doc["model"], doc["mode"], doc["batch_size"], doc["input_size"]) == (name, mode, 2, 64)
    assert doc["precision"] in ("bf16", "fp32")
    assert doc["images_per_second"] > 0 and 0 < doc["mfu"]
    # images/s and the median latency describe the same steps
    assert doc["images_per_second"] == pytest.approx(2 / (doc["latency"]["median_ms"] / 1e3))
    # MFU is achieved over peak, achieved = FLOPs/image x images/s (2 per MAC, x3 for training)
    factor = 3 if mode == "train" else 1
    assert doc["flops_per_image"] == 2 * factor * doc["macs_per_image"]
    assert doc["mfu"] == pytest.approx(
        doc["flops_per_image"] * doc["images_per_second"] / doc["peak_flops_per_second"]
    )
    # peak memory of the run: a process that imported torch and ran a model holds over 10 MiB
    assert doc["peak_memory_kind"] in ("rss", "rss_lifetime", "cuda_allocated")
    assert 10 < doc["peak_memory_mib"] < 1e6
    shown = re.search(r"^  peak memory +(\d+) MiB \(", format_result(doc), re.M)
    assert shown and int(shown.group(1)) == round(doc["peak_memory_mib"])


def test_bench_fp32_nchw_and_int8(capsys):
    name = _model_name()
    base = [
        "bench",
        name,
        "--batch-size",
        "2",
        "--input-size",
        "64",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--json",
    ]
    assert cli.main(base + ["--precision", "fp32", "--no-channels-last"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["precision"], doc["channels_last"]) == ("fp32", False)
    assert cli.main(base + ["--backend", "torch", "--precision", "int8"]) == 0  # PyTorch's own int8
    assert json.loads(capsys.readouterr().out)["precision"] == "int8"


@pytest.mark.parametrize(
    "extra",
    [
        ["--precision", "fp8"],
        ["--mode", "train", "--precision", "int8"],
        ["--batch-size", "0"],
        ["--device", "gpu0"],
    ],
)
def test_bench_bad_input_exits_2(extra, capsys):
    rc = cli.main(["bench", _model_name(), "--input-size", "64", "--steps", "1", *extra])
    assert rc == 2
    assert "error" in capsys.readouterr().err


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="Linux /proc only")
def test_peak_memory_sees_an_allocation_and_resets():
    mib = 96
    memory = PeakMemory("cpu").start()
    before = memory.current_mib()
    # fresh pages from the kernel (a malloc'd block may reuse memory earlier tests left resident)
    with mmap.mmap(-1, mib * 2**20) as block:
        written = torch.frombuffer(block, dtype=torch.uint8).fill_(1)  # written, so resident
        del written
    peak, kind = memory.read()
    assert kind == "rss"
    assert peak - before >= 0.9 * mib
    # the reset forgets it: unmapped, the new peak is lower
    memory.start()
    after, _ = memory.read()
    assert after < peak - 0.5 * mib


def test_peak_memory_reads_vmhwm_and_falls_back(tmp_path):
    status, refs = tmp_path / "status", tmp_path / "clear_refs"
    status.write_text("Name:\tpython\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n")
    refs.write_text("")
    memory = PeakMemory("cpu", status=str(status), clear_refs=str(refs)).start()
    assert refs.read_text() == "5"  # the high-water mark reset asked of the kernel
    assert memory.read() == (200.0, "rss") and memory.current_mib() == 100.0
    # no clear_refs to write: the process's lifetime peak (ru_maxrss), said so
    lifetime = PeakMemory("cpu", status=str(status), clear_refs=str(tmp_path / "none" / "x")).start()
    peak, kind = lifetime.read()
    assert kind == "rss_lifetime" and peak > 10


def test_bench_says_why_its_default_precision(monkeypatch, capsys):
    """`--precision auto` on a CPU whose bf16 units measured slower than fp32 runs fp32, and the
    command says so once, with the measurement (replaced here: the test does not time the CPU)."""
    from convzoo.engine import accel

    monkeypatch.delenv("CONVZOO_PRECISION", raising=False)
    monkeypatch.setattr(accel, "bf16_measured_fast", lambda: (False, "bf16 matmuls measured 0.60x fp32"))
    argv = ["bench", _model_name(), "--backend", "torch", "--batch-size", "2", "--input-size", "64"]
    assert cli.main([*argv, "--steps", "1", "--warmup", "0", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["precision"] == "fp32"
    assert captured.err.count("precision fp32 by default: bf16 matmuls measured 0.60x fp32") == 1
    monkeypatch.setattr(accel, "bf16_measured_fast", lambda: (True, "bf16 matmuls measured 6.00x fp32"))
    assert cli.main([*argv, "--steps", "1", "--warmup", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["precision"] == "bf16"
