"""Throughput, latency and MFU of training and inference steps (`convzoo bench`).

What is measured:
- images/s = batch size / median step time, over `steps` timed steps after `warmup`
  untimed ones (the median is robust to the noise of a shared machine);
- latency = the per-batch step time (median, 10th and 90th percentile, in ms);
- MFU = achieved FLOP/s / peak FLOP/s. Achieved FLOPs come from the model's counted
  multiply-accumulates (`analysis.profile`, 2 FLOPs per MAC, x3 for a training step:
  forward, grad wrt activations, grad wrt weights); the peak is the best of repeated large
  matmuls in the same precision, on the same device and threads, measured before AND after the
  model (not a datasheet number): a single short matmul at start, on a shared machine, once
  measured 219 GFLOP/s where the model then reached 311 (MFU 142 %). The CPU model and its
  ISA flags (avx512f, avx512_bf16, amx_bf16) are reported with it.
- compile time (torch.compile's first calls) is reported separately, never inside a step.
- peak memory of the measured run (model built, warmed and timed; `PeakMemory`): on CUDA
  torch.cuda.max_memory_allocated after a reset of the peak statistics; on the CPU the
  process's peak resident set size (VmHWM), its high-water mark reset through
  /proc/self/clear_refs first (Linux), else ru_maxrss, the process's lifetime peak
  (kind "rss_lifetime": it may include what came before the benchmark).

Defaults are convzoo's defaults (`engine.accel`): bf16 autocast + channels_last where the
hardware runs bf16 natively, BN folded for inference, torch.compile only when it pays
back within the run (it does not within a benchmark's few dozen steps, so `--compile`
asks for it explicitly).
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..analysis.profile import profile
from ..engine import accel
from ..engine.timing import matmul_peak, synchronize, time_steps
from ..errors import UserError
from ..factory import create_model
from ..registry import model_info
from . import runtime


def interleaved(
    steps: dict[str, Callable[[], object]], rounds: int, warmup: int = 2, device="cpu"
) -> dict[str, list[float]]:
    """Time several step functions in rotation (A B C A B C ...), so that load from other
    processes on a shared machine hits all of them alike; returns each one's step times."""
    device = torch.device(device)
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(rounds):
        for k, fn in steps.items():
            synchronize(device)
            t0 = time.perf_counter()
            fn()
            synchronize(device)
            times[k].append(time.perf_counter() - t0)
    return times


MIB = 2**20


class PeakMemory:
    """Peak memory from `start()` to `read()`: (MiB, kind). Kinds: "cuda_allocated" (tensors
    torch allocated on the GPU), "rss" (the process's resident peak since start, Linux) and
    "rss_lifetime" (its resident peak since it began: clear_refs missing or not writable)."""

    def __init__(
        self, device="cpu", status: str = "/proc/self/status", clear_refs: str = "/proc/self/clear_refs"
    ):
        self.device, self._status, self._clear_refs = torch.device(device), status, clear_refs
        self.kind = "rss_lifetime"

    def start(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.kind = "cuda_allocated"
            return self
        try:  # "5" resets the peak RSS (VmHWM) to the current RSS (Linux >= 4.0, proc(5))
            with open(self._clear_refs, "w") as f:
                f.write("5")
            self.kind = "rss" if self._vm_kib("VmHWM") is not None else "rss_lifetime"
        except OSError:
            self.kind = "rss_lifetime"
        return self

    def read(self) -> tuple[float, str]:
        if self.kind == "cuda_allocated":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) / MIB, self.kind
        if self.kind == "rss":
            kib = self._vm_kib("VmHWM")
            if kib is not None:
                return kib / 1024, self.kind
        return _ru_maxrss_bytes() / MIB, "rss_lifetime"

    def current_mib(self) -> float | None:
        """The resident set size now (CPU, Linux), e.g. before a step; None where unknown."""
        kib = self._vm_kib("VmRSS")
        return None if kib is None else kib / 1024

    def _vm_kib(self, field: str) -> int | None:
        try:
            with open(self._status) as f:
                for line in f:
                    if line.startswith(field + ":"):
                        return int(line.split()[1])  # "VmHWM:\t  123456 kB"
        except (OSError, ValueError, IndexError):
            pass
        return None


def _ru_maxrss_bytes() -> int:
    import resource  # lazy: POSIX only (there is no such module on Windows)

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if platform.system() == "Darwin" else rss * 1024  # bytes on macOS, KiB elsewhere


def summarize(times: list[float], batch_size: int) -> dict:
    q = statistics.quantiles(times, n=10) if len(times) >= 2 else [times[0]] * 9
    med = statistics.median(times)
    return {
        "images_per_second": batch_size / med,
        "latency": {"median_ms": med * 1e3, "p10_ms": q[0] * 1e3, "p90_ms": q[-1] * 1e3},
        "steps": len(times),
    }


ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8")


def cpu_isa(cpuinfo: str | None = None) -> dict:
    """{"model": CPU model name, "isa": the ISA_FLAGS it has} from /proc/cpuinfo (or `cpuinfo`)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
    model, flags = platform.processor() or "unknown CPU", set[str]()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model in ("", "unknown CPU", platform.processor()):
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return {"model": model, "isa": [f for f in ISA_FLAGS if f in flags]}


def peak_description(precision: str, device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        cpu = cpu_isa()
        isa = ", ".join(cpu["isa"]) or "no AVX2/AVX-512/AMX"
        where = f"{cpu['model']} ({isa}, {torch.get_num_threads()} threads)"
    what = "int8 (or fp32, if faster)" if precision == "int8" else precision
    return f"best {what} matmul before and after the model, on {where}"


def _git_commit() -> str | None:
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info(device="cpu") -> dict:
    """Machine, versions, date and git commit, for every result file."""
    cpu = platform.processor()
    for line in open("/proc/cpuinfo") if os.path.exists("/proc/cpuinfo") else []:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    info = {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_bf16": accel.cpu_has_fast_bf16(),
        "amx": "amx_bf16" in accel.cpu_flags(),
        "isa": cpu_isa()["isa"],
        # on a shared machine the load says how far the absolute figures are from an idle one's
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "device": str(device),
        "torch": torch.__version__,
        "torchvision": importlib.metadata.version("torchvision"),
        "python": platform.python_version(),
        "git_commit": _git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _loss(out, target):
    """Cross-entropy; auxiliary heads (ModelOutput.aux) weighted 0.3 as in GoogLeNet."""
    if isinstance(out, tuple):
        logits, aux = out
        return F.cross_entropy(logits, target) + sum(0.3 * F.cross_entropy(a, target) for a in aux)
    return F.cross_entropy(out, target)


def make_train_step(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str, device="cpu", lr: float = 0.1
) -> Callable[[], None]:
    """One SGD step (momentum 0.9, weight decay 1e-4; the ResNet recipe) under autocast."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    model.train()

    def step():
        opt.zero_grad(set_to_none=True)
        with accel.autocast_context(precision, device):
            loss = _loss(model(x), y)
        loss.backward()
        opt.step()

    return step


def make_infer_step(model: nn.Module, x: torch.Tensor):
    """One forward pass of a prepared model (it casts the fp32 NCHW batch itself)."""

    def step():
        with torch.inference_mode():
            return model(x)

    return step


def bench_module(
    model: nn.Module,
    mode: str,
    batch_size: int,
    input_size: int,
    precision: str,
    channels_last: bool,
    compile: bool = False,
    device="cpu",
    steps: int = 10,
    warmup: int = 3,
    num_classes: int = 1000,
    calibration: list[torch.Tensor] | None = None,
    backend: str = "torch",
    name: str = "model",
) -> tuple[dict, Callable]:
    """Prepare `model` as `convzoo` would and time its steps; returns (result, step fn).
    `backend` onnxruntime/openvino: `name`'s ONNX graph on that runtime (inference/runtime.py; int8
    calibrated on random inputs, which is enough for its speed)."""
    device = torch.device(device)
    x = torch.randn(batch_size, 3, input_size, input_size, device=device)
    res: dict[str, object] = {"channels_last": channels_last, "compiled": bool(compile), "backend": backend}
    if mode == "infer" and backend != "torch":
        noise = list(torch.randn(32, 3, input_size, input_size, generator=torch.Generator().manual_seed(0)))
        random_images = runtime.calibration_from_items(noise, len(noise), "random inputs", "random-seed-0")
        model = runtime.runtime_model(
            model, name, backend, precision, input_size, random_images, "convzoo bench"
        )
        res["bn_folded"] = "by the runtime"
        if model.agreement is not None:
            res["int8_agreement"] = model.agreement
        step = make_infer_step(model, x)
    elif mode == "infer":
        if precision == "int8":
            calib = calibration or [torch.randn_like(x) for _ in range(4)]
            model = accel.quantize_int8(model, calib)
            res["bn_folded"] = "fused by quantization"
            if channels_last:
                model = accel.to_channels_last(model)
        else:
            model = accel.prepare_for_inference(model, precision, channels_last, compile, device)
            res["bn_folded"] = True
        step = make_infer_step(model, accel.to_channels_last(x) if channels_last else x)
    elif mode == "train":
        if precision == "int8":
            raise UserError("int8 is an inference precision; train with bf16 or fp32")
        model = accel.prepare_for_training(model, channels_last, compile, device)
        y = torch.randint(0, num_classes, (batch_size,), device=device)
        step = make_train_step(model, accel.to_channels_last(x) if channels_last else x, y, precision, device)
    else:
        raise UserError(f"unknown mode {mode!r}; choose train or infer")
    if compile:  # first call compiles: timed apart from the steps
        t0 = time.perf_counter()
        step()
        synchronize(device)
        res["compile_seconds"] = time.perf_counter() - t0
    res.update(summarize(time_steps(step, steps, warmup, device), batch_size))
    res["warmup"] = warmup
    return res, step


def _torch_int8(precision: str | None) -> bool:
    """int8 where no graph runtime is installed: PyTorch's own (FX) int8, which `bench` measures."""
    return precision == "int8" and not runtime.installed_runtimes()


def bench(
    name: str,
    mode: str = "infer",
    batch_size: int = 32,
    precision: str | None = None,
    channels_last: bool | None = None,
    compile: bool | None = None,
    input_size: int | None = None,
    steps: int = 10,
    warmup: int = 3,
    device="cpu",
    backend: str = "auto",
) -> dict:
    """`convzoo bench`: one JSON-able dict with the docs/DESIGN.md keys (model, mode, precision,
    batch_size, images_per_second, ...), latency and MFU."""
    device = torch.device(device)
    info = model_info(name)
    auto_backend, asked = backend == "auto", precision
    if auto_backend and (mode != "infer" or compile or channels_last is not None or _torch_int8(precision)):
        backend = "torch"  # training, torch.compile and the memory format are PyTorch's
        auto_backend = False
    if backend not in ("torch", "auto"):
        if mode != "infer" or compile:
            raise UserError(f"--backend {backend} runs inference, uncompiled: --mode infer without --compile")
        precision = runtime.resolve_backend(backend, precision, device)
        channels_last, compile = False, False
    precision = accel.check_precision(precision or accel.default_precision(device), device)
    if asked is None and not auto_backend and (note := runtime.precision_note(precision, device)):
        print(f"convzoo bench: {note}", file=sys.stderr)
    if channels_last is None:
        channels_last = accel.default_channels_last(device, precision)
    size = info.input_size if input_size is None else input_size  # 0 is an error, not "the default"
    if batch_size < 1 or size < 1 or steps < 1 or warmup < 0:
        raise UserError("--batch-size, --input-size and --steps must be positive")
    compile_note = None
    if compile is None:  # auto: only where the run repays it (a benchmark never does)
        compile = False
        compile_note = (
            f"auto: not compiled, {steps + warmup} steps do not repay compile time (eval and predict "
            "compile where the job's estimated network time repays it); pass --compile to measure it"
        )
    with torch.device("meta"):
        meta = create_model(info.name)
    try:
        macs = profile(meta, size, name=info.name).macs
    except RuntimeError as e:
        raise UserError(f"{info.name} cannot run at {size}x{size}: {str(e).splitlines()[0]}") from None
    peak_precision = precision
    peak = matmul_peak(peak_precision, device)

    memory = PeakMemory(device).start()  # model, warm-up and steps: the measured run
    torch.manual_seed(0)
    model = create_model(info.name)
    backend_reason = None
    if auto_backend:
        # what a long job (an evaluation, a server) runs: a benchmark's few steps stand for it
        choice = runtime.choose_backend(
            model,
            info.name,
            size,
            precision,
            device,
            images=None,
            precision_by_default=asked is None,
            log=lambda message: print(f"convzoo bench: {message}", file=sys.stderr),
        )
        note = runtime.precision_note(choice.precision, device) if asked is None else ""
        print(
            f"convzoo bench: backend {choice.backend} {choice.precision} (auto: {choice.reason})"
            + (f"; {note}" if note else ""),
            file=sys.stderr,
        )
        # the precision too: auto may run a graph runtime in fp32 where PyTorch's default is bf16
        backend, backend_reason, precision = choice.backend, choice.reason, choice.precision
        if precision != peak_precision:  # the peak is the matmul rate in the precision that runs
            peak_precision, peak = precision, matmul_peak(precision, device)
        if backend != "torch":
            channels_last, compile, compile_note = False, False, None
    if backend == "auto":
        backend = "torch"
    res, _ = bench_module(
        model,
        mode,
        batch_size,
        size,
        precision,
        channels_last,
        compile,
        device,
        steps,
        warmup,
        num_classes=info.num_classes,
        backend=backend,
        name=info.name,
    )
    peak_mib, peak_kind = memory.read()
    peak = max(peak, matmul_peak(peak_precision, device))  # again after: the best of both
    flops_per_image = 2 * macs * (3 if mode == "train" else 1)
    achieved = flops_per_image * res["images_per_second"]
    out = {
        "model": info.name,
        "mode": mode,
        "precision": precision,
        "batch_size": batch_size,
        "input_size": size,
        "images_per_second": res.pop("images_per_second"),
        "latency": res.pop("latency"),
        "mfu": achieved / peak,
        "achieved_flops_per_second": achieved,
        "peak_flops_per_second": peak,
        "peak": peak_description(peak_precision, device),
        "macs_per_image": macs,
        "flops_per_image": flops_per_image,
        "peak_memory_mib": peak_mib,
        "peak_memory_kind": peak_kind,
    }
    out.update(res)
    if backend_reason:
        out["backend_reason"] = "auto: " + backend_reason
    if compile_note:
        out["compile_note"] = compile_note
    if out["mfu"] > 1 and precision == "int8" and "fp32" in str(out["peak"]):
        out["mfu_note"] = "above 100 %: int8 arithmetic outruns the fp32 matmul rate taken as the peak here"
    elif out["mfu"] > 1:  # should not happen; if it does, say so rather than print it plainly
        out["mfu_note"] = (
            "above 100 %: the machine was busier during the matmuls than during the model "
            "(shared cores?); rerun on an idle machine"
        )
    out["machine"] = machine_info(device)
    return out
