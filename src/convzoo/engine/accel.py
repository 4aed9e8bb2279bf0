"""Fast paths shared by the engine and the commands: precision, memory format, BN folding,
compilation and int8 quantization.

docs/DESIGN.md "Precision": `create_model` returns an fp32 NCHW module; whatever makes it fast is
applied here, by the caller, and can be switched off (`--precision fp32`,
`--no-channels-last`, `--no-compile`).

Defaults (`precision_choice`): bf16 autocast where bf16 is fast on the hardware (CUDA devices
with bf16 support; CPUs whose bf16 matmuls measured at least 1.5x fp32, `bf16_measured_fast`:
AMX runs them 5-10x, while some AVX512-BF16 machines run them slower than fp32), else fp32;
CONVZOO_PRECISION replaces the default everywhere; channels_last
whenever the precision is not fp32 on CPU/GPU (oneDNN and cuDNN pick their fast
convolution kernels for NHWC). torch.compile is used for inference only when the run is
long enough to repay the compile time (`compile_decision`: estimated network time saved
against the compile time measured on this machine, or estimated before the first).

int8: torch 2.14 no longer ships PT2E quantization (`torch.ao.quantization.quantize_pt2e`
and `X86InductorQuantizer` moved to the separate `torchao` package, which is not
installed here), so `quantize_int8` uses what torch itself still offers: FX graph-mode
static post-training quantization with the "x86" backend (fbgemm/oneDNN kernels),
per-channel int8 weights, uint8 activations calibrated with histogram observers.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterable
from typing import cast

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
from torch.fx.experimental.optimization import fuse
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..errors import UserError
from ..hub import cache_dir
from ..outputs import atomic_write
from . import flops
from .timing import matmul_peak


class _DropMessages(logging.Filter):
    """Third-party log lines that say nothing about the user's run."""

    NOISE = ("No CUDA runtime is found",)  # torch.compile on a CPU-only machine with a CUDA build

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.NOISE)


logging.getLogger("torch.utils.cpp_extension").addFilter(_DropMessages())

PRECISIONS = ("fp32", "bf16", "fp16", "int8")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# torch.compile pays back when what it saves of the network's time exceeds its compile time.
# The network's time is estimated from its multiply-adds at an upper estimate of PyTorch's rate
# (flops.TORCH_FLOPS_PER_THREAD), so it is not overestimated; compiled inference was measured
# 1.18x faster than eager for ResNet-20 (bf16, batch 64, 2 busy threads of an AVX512-BF16 CPU)
# and the estimate stays below that. Compiling itself took 60 s for ResNet-20 and about 75 s for
# ResNet-50 on 2 cores, little of it proportional to the network: a fixed part and a part per
# layer, until a compile on this machine has been timed (then the time measured, `compile_seconds`).
COMPILE_SPEEDUP = 1.15
COMPILE_SECONDS_BASE, COMPILE_SECONDS_PER_LAYER = 40.0, 0.5


def _device(device) -> torch.device:
    return device if isinstance(device, torch.device) else torch.device(device or "cpu")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with native bf16 matmul: AMX (Sapphire Rapids+) or AVX512-BF16 (Cooper Lake+).

    torch.backends.cpu.get_cpu_capability() only says "AVX512" on such CPUs (it names the
    vector ISA torch's own kernels use), so the flags decide; oneDNN's own check is the
    fallback where /proc/cpuinfo is missing.
    """
    flags = cpu_flags()
    if flags:
        return bool({"amx_bf16", "avx512_bf16"} & flags)
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_has_vnni() -> bool:
    """True on CPUs with int8 dot-product instructions (AVX512-VNNI, AVX-VNNI, AMX): their u8 x s8
    products accumulate in int32, so int8 weights need no 7-bit headroom against saturation."""
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & cpu_flags())


BF16_MIN_GAIN = 1.5  # bf16 matmuls at least this much faster than fp32 count as fast (AMX: 5-10x)
# fp32 and bf16 timed in turn this many times: one pass each, on a loaded 2-core machine, measured
# 0.66x and 1.50x within the same half hour (a load spike in one of the two decides it)
BF16_ROUNDS = 3


@functools.cache
def bf16_measured_fast() -> tuple[bool, str]:
    """(whether bf16 matmuls run faster than fp32 on this CPU, the measurement): the flags say a
    CPU has bf16 instructions, not that they are fast where it runs (a 2-core "Intel Xeon
    Processor" VM with avx512_bf16 ran bf16 matmuls at 0.6-0.8x fp32, and OpenVINO's bf16
    ResNet-50 at 0.43x ONNX Runtime's fp32). Measured once per machine (the best of a few 1024^3
    matmuls each, fp32 and bf16 alternated), kept in $CONVZOO_CACHE/cpu-bf16.json; False where
    the flags are missing."""
    if not cpu_has_fast_bf16():
        return False, "this CPU has no bf16 units (flags avx512_bf16, amx_bf16)"
    # the way of measuring is part of the key: a value measured another way is measured again
    machine = f"{sorted(cpu_flags())!r}-{torch.get_num_threads()}-{torch.__version__}-{BF16_ROUNDS}x1024"
    key = hashlib.sha256(machine.encode()).hexdigest()[:16]
    path = os.path.join(cache_dir(), "cpu-bf16.json")
    how = "measured once, cached"
    try:
        with open(path) as f:
            known = json.load(f)
        ratio = float(known[key])
    except (OSError, ValueError, KeyError, TypeError):
        fp32 = bf16 = 0.0
        for _ in range(BF16_ROUNDS):  # alternated, the best of each: passing load hits both alike
            fp32 = max(fp32, matmul_peak("fp32", "cpu", n=1024, reps=3, rounds=1, budget_s=0.2))
            bf16 = max(bf16, matmul_peak("bf16", "cpu", n=1024, reps=3, rounds=1, budget_s=0.2))
        ratio, how = bf16 / fp32, "measured now, once, cached"
        remember(path, key, round(ratio, 3))
    fast = ratio >= BF16_MIN_GAIN
    return fast, (
        f"bf16 matmuls measured {ratio:.2f}x fp32 on this CPU ({how}; bf16 from {BF16_MIN_GAIN:.1f}x)"
    )


def precision_choice(device="cpu") -> tuple[str, str]:
    """(the default precision on `device`, why): CONVZOO_PRECISION where it is set (fp32, bf16,
    fp16; e.g. fp32 for runs that must match bit for bit), else bf16 on a CUDA device with bf16
    support and on a CPU whose bf16 matmuls measured fast (`bf16_measured_fast`: having the bf16
    instructions is not enough), else fp32."""
    forced = os.environ.get("CONVZOO_PRECISION")
    if forced:
        return check_precision(forced, device), f"CONVZOO_PRECISION={forced}"
    dev = _device(device)
    if dev.type == "cuda":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return "bf16", "the GPU runs bf16 natively"
        return "fp32", "the GPU has no bf16 support"
    if dev.type == "cpu":
        fast, measured = bf16_measured_fast()
        return ("bf16" if fast else "fp32"), measured
    return "fp32", f"no fast reduced precision on {dev.type}"


def default_precision(device="cpu") -> str:
    """The precision `auto` means on `device` (`precision_choice`, which also says why)."""
    return precision_choice(device)[0]


def default_channels_last(device="cpu", precision: str | None = None) -> bool:
    """channels_last is the fast layout for oneDNN/cuDNN convolutions in reduced precision.

    In fp32 on CPU it is used too where bf16 would be the default (same oneDNN paths);
    on other devices (mps, ...) keep NCHW.
    """
    return _device(device).type in ("cpu", "cuda")


def resolve_precision(precision: str | None, device="cpu") -> str:
    """'auto' (or None) -> the device's default; anything else is checked and returned."""
    return default_precision(device) if precision in (None, "auto") else check_precision(precision, device)


def resolve_auto(precision: str | None, channels_last: bool | str | None, device) -> tuple[str, bool]:
    """`precision` and `channels_last` with `auto` (or None) made concrete for `device`.

    channels_last goes with reduced precision: it is what makes oneDNN/cuDNN's bf16 and fp16
    convolutions fast, while fp32 runs keep NCHW (and their bit-for-bit comparisons).
    """
    precision = resolve_precision(precision, device)
    if channels_last in (None, "auto"):
        return precision, default_channels_last(device) and precision in ("bf16", "fp16")
    return precision, bool(channels_last)


def check_precision(precision: str, device="cpu") -> str:
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    dev = _device(device)
    if precision == "fp16" and dev.type == "cpu":
        warnings.warn(
            "fp16 autocast on CPU has no fast kernels on most CPUs; bf16 is the CPU choice", stacklevel=2
        )
    if precision == "int8" and dev.type != "cpu":
        raise UserError("int8 (x86 static quantization) runs on the CPU only")
    return precision


def autocast_context(precision: str, device="cpu"):
    """`torch.autocast` for bf16/fp16, a no-op context for fp32 (and int8, already quantized)."""
    dev = _device(device)
    if precision in _DTYPES:
        return torch.autocast(device_type=dev.type, dtype=_DTYPES[precision])
    return contextlib.nullcontext()


def to_channels_last(x):
    """A 4-d tensor or a module in torch.channels_last (other tensors unchanged)."""
    if isinstance(x, nn.Module):
        return x.to(memory_format=torch.channels_last)
    if isinstance(x, torch.Tensor) and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def _fold_sequential_pairs(model: nn.Module) -> int:
    """Fallback when torch.fx cannot trace: fold Conv2d->BatchNorm2d that are adjacent in an
    nn.Sequential (ConvBNAct and most paper stacks) and replace the BN by Identity."""
    folded = 0
    for mod in list(model.modules()):
        if not isinstance(mod, nn.Sequential):
            continue
        names = list(mod._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = mod._modules[a], mod._modules[b]
            if (
                isinstance(conv, nn.Conv2d)
                and isinstance(bn, nn.BatchNorm2d)
                and bn.track_running_stats
                and bn.running_mean is not None
            ):
                mod._modules[a] = fuse_conv_bn_eval(conv, bn)
                mod._modules[b] = nn.Identity()
                folded += 1
    return folded


def fold_batchnorm(model: nn.Module) -> tuple[nn.Module, int]:
    """An eval-mode copy of `model` with every BatchNorm that follows a conv folded into it.

    conv(x)*g + b with g = gamma/sqrt(var+eps), b = beta - mean*g is a conv with scaled
    weights and a bias, so inference skips one memory pass per BN. Uses torch.fx's
    `optimization.fuse` (follows the dataflow, so residual blocks' conv1/bn1 pairs fold
    too); where the model cannot be traced, folds Conv->BN pairs adjacent in nn.Sequential.
    Returns (model, number of BNs folded). Weights are copied; the input model is untouched.
    """
    model = copy.deepcopy(model).eval()
    n_bn = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    try:
        fused = fuse(model, inplace=True)
        # Tracing runs type(model).forward, not model(): hooks on the root would be lost, and one
        # carries torchvision's `transform_input` for converted googlenet/inception_v3 weights.
        for hook in model._forward_pre_hooks.values():
            fused.register_forward_pre_hook(hook)
        for hook in model._forward_hooks.values():
            fused.register_forward_hook(hook)
        left = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fused.modules())
        return fused, n_bn - left
    except Exception:  # noqa: BLE001 - any tracing failure (data-dependent control flow, ...)
        model = copy.deepcopy(model)
        return model, _fold_sequential_pairs(model)


def _compile_times_path() -> str:
    return os.path.join(cache_dir(), "compile-seconds.json")


def compile_key(model: nn.Module, size: int, precision: str) -> str:
    """What a compile time is measured for: the network's class, input size, precision, threads
    and torch version (the weights do not change it)."""
    return f"{type(model).__name__}-{size}px-{precision}-{torch.get_num_threads()}t-torch{torch.__version__}"


def compile_seconds(model: nn.Module, size: int, precision: str) -> tuple[float, bool]:
    """(seconds torch.compile takes for `model`, whether that was measured here): the time of the
    last compile of the same `compile_key` on this machine, else the estimate."""
    try:
        with open(_compile_times_path()) as f:
            seconds = json.load(f).get(compile_key(model, size, precision))
        if isinstance(seconds, (int, float)) and seconds >= 0:
            return float(seconds), True
    except (OSError, ValueError, AttributeError):
        pass
    layers = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
    return COMPILE_SECONDS_BASE + COMPILE_SECONDS_PER_LAYER * layers, False


def record_compile_seconds(key: str, seconds: float) -> None:
    """Keep a measured compile time for the next decision (best effort: a read-only cache
    only means the estimate is used again)."""
    remember(_compile_times_path(), key, round(seconds, 2))


def remember(path: str, key: str, value: float | dict[str, float]) -> None:
    """Set `key` in the JSON object of measurements at `path`, atomically; best effort: an
    unreadable file starts afresh, and an unwritable cache only means measuring again."""
    try:
        try:
            with open(path) as f:
                known = json.load(f)
            known = known if isinstance(known, dict) else {}
        except (OSError, ValueError):
            known = {}
        known[key] = value
        os.makedirs(os.path.dirname(path), exist_ok=True)
        text = json.dumps(known, indent=1, sort_keys=True) + "\n"
        atomic_write(path, lambda f: f.write(text.encode()))
    except OSError:
        pass


def network_seconds(macs: int, images: int, precision: str) -> float:
    """An estimate of PyTorch's time for `images` images of `macs` multiply-adds each, at an
    upper estimate of its rate (so: rather too short than too long)."""
    rate = (
        flops.TORCH_FLOPS_PER_THREAD.get(precision, flops.TORCH_FLOPS_PER_THREAD["fp32"])
        * torch.get_num_threads()
    )
    return 2 * macs * images / rate


# A training step runs the forward's multiply-adds three times (forward, and the backward's two
# products per layer). Compiled, ResNet-50's fp32 step ran 1.66x eager on 2 cores of an AVX-512
# Xeon (docs/performance.md), ResNet-20's at parity and vgg8_cifar's at 0.88x (docs/cifar-fast.md):
# COMPILE_SPEEDUP stays the estimate. A long run of a small network compiles by it: ResNet-20's
# loses the minute, vgg8_cifar's would run 12 % slower (its airbench recipe says compile: false).
TRAINING_PASSES = 3


def compile_decision(
    model: nn.Module,
    size: int | None,
    images: int | None,
    precision: str,
    training: bool = False,
    within_s: float | None = None,
) -> tuple[bool, str]:
    """(whether torch.compile repays its compile time for `images` images through `model` at
    `size`, why): the network's estimated time saved against the measured (or estimated)
    compile time. `training`: the images are training steps' (forward and backward); `within_s`:
    a time budget, which caps what can be saved. A job of unknown length or size is not compiled
    unless asked."""
    if images is None or size is None:
        return False, "the number of images is not known"
    macs = flops.count_macs(model, size) * (TRAINING_PASSES if training else 1)
    saved = network_seconds(macs, images, precision) * (1 - 1 / COMPILE_SPEEDUP)
    if within_s is not None:
        saved = min(saved, within_s * (1 - 1 / COMPILE_SPEEDUP))
    cost, measured = compile_seconds(model, size, precision)
    how = "measured here" if measured else "estimated"
    kind = "training images" if training else "images"
    if saved > cost:
        return (
            True,
            f"saves ~{saved:.0f} s of the network's time over {images} {kind}, "
            f"compiling takes ~{cost:.0f} s ({how})",
        )
    return False, (
        f"{images} {kind} x {macs / 1e6:.0f} M multiply-adds: compiling (~{cost:.0f} s, {how}) would "
        f"save ~{saved:.1f} s"
    )


class InferenceModel(nn.Module):
    """A frozen inference model that takes the fp32 NCHW batch every caller has and returns
    fp32 logits, running inside in `dtype` and `memory_format`.

    For bf16/fp16 the weights themselves are cast once (they are frozen), instead of
    autocast casting them on every call: measured ~15% faster for ResNet-50 on AMX.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype, channels_last: bool, bn_folded: int = 0):
        super().__init__()
        self.model, self.dtype, self.bn_folded = model, dtype, bn_folded
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(dtype=self.dtype, memory_format=self.memory_format)
        return self.model(x).float()


def _lrn_in_fp32(model: nn.Module, dtype: torch.dtype) -> None:
    """Local response normalisation (AlexNet, GoogLeNet as drawn) computed in fp32 inside a
    bf16/fp16 model on the CPU: torch's LRN is a 3-d average pool, which has no bf16 kernel
    there ("avg_pool3d_out_frame" not implemented for 'BFloat16'). It has no weights; the cast
    in and out is all it costs."""
    for m in model.modules():
        if isinstance(m, nn.LocalResponseNorm):
            m.register_forward_pre_hook(lambda mod, args: (args[0].float(), *args[1:]))
            m.register_forward_hook(lambda mod, args, out: out.to(dtype))
    graph = getattr(model, "graph", None)  # a BN-folded (torch.fx traced) model calls the function
    if isinstance(model, torch.fx.GraphModule) and graph is not None:
        nodes = [n for n in graph.nodes if n.op == "call_function" and n.target is F.local_response_norm]
        for node in nodes:
            node.target = _local_response_norm_fp32
        if nodes:
            model.recompile()


def _local_response_norm_fp32(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    return F.local_response_norm(x.float(), *args, **kwargs).to(x.dtype)


def prepare_for_inference(
    model: nn.Module,
    precision: str = "fp32",
    channels_last: bool = False,
    compile: bool = False,
    device="cpu",
    fold_bn: bool = True,
) -> nn.Module:
    """eval() + BN folded + weights cast to the precision + channels_last + (optionally)
    torch.compile with frozen weights; returns an `InferenceModel` (fp32 NCHW in, fp32
    logits out). It is a copy: the weights of `model` are not changed. Call it under
    `torch.inference_mode()`. For int8 use `quantize_int8` instead.
    """
    model, folded = model.eval(), 0
    if fold_bn:
        model, folded = fold_batchnorm(model)
    else:
        model = copy.deepcopy(model)
    dtype = _DTYPES.get(precision, torch.float32)
    model = model.to(device=_device(device), dtype=dtype)
    if dtype != torch.float32 and _device(device).type == "cpu":
        _lrn_in_fp32(model, dtype)
    if channels_last:
        model = to_channels_last(model)
    for p in model.parameters():
        p.requires_grad_(False)
    model = InferenceModel(model, dtype, channels_last, folded)
    if compile:
        # Freezing lets inductor treat the (folded) weights as constants and pre-pack them in
        # oneDNN's blocked layout once, instead of reordering them on every call.
        model = cast(nn.Module, torch.compile(model, options={"freezing": True}))  # an OptimizedModule
    return model


class CompiledForOneShape(nn.Module):
    """A compiled inference model for the batch shape it sees first; other shapes (the last,
    partial batch of a run) go to the eager model, since compiling again for one batch costs
    far more (tens of seconds) than it saves."""

    def __init__(self, compiled: nn.Module, eager: nn.Module, key: str | None = None):
        super().__init__()
        self.compiled, self.eager = compiled, eager
        self.shape: torch.Size | None = None
        self.bn_folded = getattr(eager, "bn_folded", 0)
        self.key = key  # `compile_key`: the first call's time is recorded under it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shape is None:
            self.shape = x.shape
            t0 = time.perf_counter()
            out = self.compiled(x)
            if self.key:  # the first call is the compile (one batch's run is small beside it)
                record_compile_seconds(self.key, time.perf_counter() - t0)
            return out
        return self.compiled(x) if x.shape == self.shape else self.eager(x)


# Precisions `fast_inference` runs through `prepare_for_inference`: BN folding is exact up to
# fp32 rounding, and bf16 weights cast once are what autocast would cast on every call. fp16
# keeps the plain model under autocast (no fast CPU kernels; autocast keeps BN in fp32).
FAST_INFERENCE_PRECISIONS = ("fp32", "bf16")


def fast_inference(
    model: nn.Module,
    precision: str,
    channels_last: bool,
    device="cpu",
    compile: bool | None = None,
    num_batches: int | None = None,
    command: str = "convzoo",
    images: int | None = None,
    size: int | None = None,
) -> tuple[nn.Module, str, dict]:
    """The model `convzoo eval` / `predict` run: (model, autocast precision to run it under,
    {"bn_folded": n, "compiled": bool}).

    fp32/bf16: `prepare_for_inference` (BN folded, weights cast once, channels_last inside;
    fp32 NCHW in, fp32 logits out), so the autocast precision is "fp32" (none). `compile`
    None means "when it pays back" (`compile_decision` for `images` images of `size` x `size`;
    `num_batches` only says how many batches there are); a compiled run says so on stderr.
    Other precisions: the plain eval-mode model, unchanged, under autocast.
    """
    model = model.eval()
    if precision not in FAST_INFERENCE_PRECISIONS:
        return model, precision, {"bn_folded": 0, "compiled": False}
    why = "asked for (--compile)"
    if compile is None:
        compile, why = compile_decision(model, size, images, precision)
    eager = prepare_for_inference(model, precision, channels_last, compile=False, device=device)
    if compile:
        cost, measured = compile_seconds(model, size, precision) if size else (None, False)
        print(
            f"{command}: torch.compile (frozen weights) is on for this run of {num_batches or '?'} "
            f"batches ({why}): the first batch compiles"
            + (f" (~{cost:.0f} s)" if cost else "")
            + "; --no-compile skips it",
            file=sys.stderr,
        )
        compiled = cast(nn.Module, torch.compile(eager, options={"freezing": True}))  # an OptimizedModule
        key = compile_key(model, size, precision) if size else None
        return (
            CompiledForOneShape(compiled, eager, key),
            "fp32",
            {"bn_folded": eager.bn_folded, "compiled": True},
        )
    return eager, "fp32", {"bn_folded": eager.bn_folded, "compiled": False}


def prepare_for_training(
    model: nn.Module, channels_last: bool = False, compile: bool = False, device="cpu"
) -> nn.Module:
    """Device + memory format (+ torch.compile) for a training model; precision comes from
    `autocast_context` around forward and loss (bf16 needs no GradScaler; fp16 on CUDA does)."""
    model = model.to(_device(device))
    if channels_last:
        model = to_channels_last(model)
    if compile:
        model = cast(nn.Module, torch.compile(model))  # an OptimizedModule; the stub says Callable
    return model


def quantize_int8(
    model: nn.Module, calibration: Iterable[torch.Tensor], example: torch.Tensor | None = None
) -> nn.Module:
    """Static post-training int8 quantization for x86 CPUs (FX graph mode, torch's own API).

    `calibration` yields fp32 NCHW input batches (a few hundred images are enough for the
    histogram observers). Conv+BN(+ReLU) are fused before observing. Raises UserError when
    the model cannot be traced symbolically (FX needs a static graph).
    """
    torch.backends.quantized.engine = "x86"
    model = copy.deepcopy(model).eval()
    batches = iter(calibration)
    first = next(batches)
    example = first if example is None else example
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FX quantization is deprecated in favour of torchao
        try:
            prepared = prepare_fx(model, get_default_qconfig_mapping("x86"), (example,))
        except Exception as e:  # noqa: BLE001
            raise UserError(
                f"int8: the model cannot be traced by torch.fx ({type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''})"
            ) from None
        with torch.no_grad():
            prepared(first)
            for x in batches:
                prepared(x)
        return convert_fx(prepared)
