"""Timing on a shared machine: a step's wall times, and the best matmul rate (the peak that MFU
and accel's bf16 check divide by). Below both `bench` and `accel`, which use it."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously; the CPU needs nothing)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step: Callable[[], object], steps: int, warmup: int, device="cpu") -> list[float]:
    """Wall seconds of each of `steps` calls of `step` after `warmup` untimed calls."""
    device = torch.device(device)
    for _ in range(warmup):
        step()
    synchronize(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


def matmul_peak(
    precision: str = "fp32",
    device="cpu",
    n: int | None = None,
    reps: int = 5,
    rounds: int = 2,
    budget_s: float = 0.5,
) -> float:
    """Best FLOP/s of n x n x n matmuls in `precision` (int8: torch._int_mm, ops/s): `rounds` of
    up to `reps` timed calls (stopping once a round has spent `budget_s`) at each of two sizes
    (1024 and 2048 on CPU, 4096 and 8192 on CUDA), the best taken - an upper bound has to survive
    a moment of load on a shared machine. The larger size is skipped where one call of the
    smaller already takes longer than the budget (emulated bf16 on an old CPU)."""
    device = torch.device(device)
    sizes = [n] if n else ([4096, 8192] if device.type == "cuda" else [1024, 2048])
    best, seconds = 0.0, 0.0
    for size in sizes:
        if seconds > budget_s:
            break
        for _ in range(rounds):
            flops = _matmul_flops(precision, device, size, reps, budget_s)
            best, seconds = max(best, flops), 2 * size**3 / flops
            if seconds > budget_s:  # one call over the budget: another round tells nothing new
                break
    return best


def _matmul_flops(precision: str, device: torch.device, n: int, reps: int, budget_s: float = 0.5) -> float:
    if precision == "int8":
        m = min(n, 512) if device.type == "cpu" else n  # see below
        a = torch.randint(-64, 64, (m, m), dtype=torch.int8, device=device)
        b = torch.randint(-64, 64, (m, m), dtype=torch.int8, device=device)
        fn = lambda: torch._int_mm(a, b)  # noqa: E731
        try:
            fn()
        except (RuntimeError, NotImplementedError):  # no int8 GEMM here: bf16 is the bound
            return _matmul_flops("bf16", device, n, reps, budget_s)
        if device.type == "cpu":
            # torch's CPU _int_mm is a reference loop where oneDNN has no int8 GEMM for the ISA
            # (1 GFLOP/s on an AVX2 EPYC: 17 s for one 2048^3 product), so it is timed once at
            # 512 and the fp32 rate, which int8 units at least match, is the floor of the peak
            int8 = 2 * m**3 / min(time_steps(fn, 1, warmup=0, device=device))
            return max(_matmul_flops("fp32", device, n, reps, budget_s), int8)
    else:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        fn = lambda: torch.mm(a, b)  # noqa: E731
    times = time_steps(fn, 1, warmup=1, device=device)
    while len(times) < reps and sum(times) < budget_s:
        times += time_steps(fn, 1, warmup=0, device=device)
    return 2 * n**3 / min(times)
