"""Inference backends: the same network, with the same weights, run by PyTorch, ONNX Runtime or
OpenVINO (`eval`, `predict`, `serve`, `bench`: `--backend`, `--precision`). The default, `auto`
(`choose_backend`), takes the fastest installed runtime in float precision where making its graph
pays back over the job (or the graph is cached), PyTorch where a feature or the device needs it.

Why: on a CPU the graph runtimes beat PyTorch's eager kernels, and their int8 more so
(ResNet-50, batch 32, 2 cores of an AVX2 EPYC: PyTorch 10.2 img/s, ONNX Runtime fp32 19.2,
ONNX Runtime int8 31.4; docs/performance.md has the measured table and the accuracy cost).

The graph is convzoo's own model, weights loaded, exported once to ONNX
(`interop.export.write_onnx`) at the weights' input size with a dynamic batch axis, compared
with the PyTorch model when it is made, and cached in `$CONVZOO_CACHE/graphs/` under a hash of
the model's code, configuration and weight tensors. int8 is ONNX Runtime's static quantization
(QDQ: per-channel int8 weights, uint8 activations with min/max ranges calibrated on images the
caller supplies, cached under their identity). The first convolution and the classifier stay
fp32: on CPUs without VNNI, AVX2's u8 x s8 pair sums saturate int16 on the image input, and
ONNX Runtime's remedy (`reduce_range`, 7-bit weights everywhere) costs more agreement than
keeping those two layers (3 % of ResNet-50's MACs) in fp32 (measured on a trained ResNet-20,
10,000 CIFAR-10 test images: top-1 agreement with fp32 98.61 % with reduce_range, 89.11 %
without it, 99.16 % without it and with the two layers in fp32; docs/performance.md). OpenVINO's
int8 is made by NNCF, OpenVINO's own post-training quantizer, where it is installed
(`convzoo[nncf]`; else it runs ONNX Runtime's QDQ graph as its own int8), every layer int8 (NNCF's
placement), except a first convolution cheap enough to keep in float: its int8 input rounds the
image itself, which cost trained CIFAR-10 networks 0.2-0.5 points of agreement, while where it
is a larger share of the work (ResNet-50's) it would cost 7-8 % of int8's speed (`Int8Settings`;
benchmarks/int8_variants.py measures the alternatives). Every int8 graph's
top-1 agreement with fp32 is measured when it is made, on images it was not calibrated on, and
said whenever it runs. OpenVINO caches its compiled blobs (`CACHE_DIR`) beside the graphs.

A backend model is an `nn.Module` taking the fp32 NCHW batch and returning fp32 logits, so the
callers' loops do not change. It runs on the CPU, with torch's thread count.
"""

from __future__ import annotations

import gc
import hashlib
import importlib.util
import inspect
import json
import math
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import version

import numpy as np
import torch
import torch.nn as nn

from ..data.datasets import BadImage, load_image
from ..data.images import expand_paths
from ..engine import accel
from ..engine.flops import count_macs
from ..errors import RunFailed, UserError
from ..hub import cache_dir
from ..interop.export import write_onnx
from ..outputs import atomic_path, atomic_write

BACKENDS = ("torch", "onnxruntime", "openvino")
BACKEND_CHOICES = ("auto", *BACKENDS)  # auto: `choose_backend`
PRECISIONS = {
    "torch": ("fp32", "bf16", "fp16"),
    "onnxruntime": ("fp32", "int8"),
    "openvino": ("fp32", "bf16", "int8"),
}
_PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}
_EXTRAS = {"onnxruntime": "convzoo[onnx]", "openvino": "convzoo[openvino]"}
CALIBRATION_IMAGES = 128  # min/max ranges settle within a hundred images; more costs minutes
_CALIBRATION_BATCH = 16
_CHECK_TOLERANCE = 1e-4  # fp32 graph vs PyTorch, relative to the largest logit (op order differs)


def resolve_backend(backend: str, precision: str | None, device) -> str:
    """The precision `backend` runs for the requested one ('auto': fp32, or bf16 on OpenVINO
    where bf16 is the default precision, `accel.precision_choice`); UserError for a combination
    that does not exist. For backend 'auto' the precision PyTorch would run (`choose_backend`
    picks the runtime later, once the model and the number of images are known)."""
    if backend not in BACKEND_CHOICES:
        raise UserError(f"unknown --backend {backend!r}; choose one of {', '.join(BACKEND_CHOICES)}")
    if backend == "auto":
        if precision == "int8" and not installed_runtimes():
            raise UserError(
                "--precision int8 runs on --backend onnxruntime or openvino, and neither is installed: "
                f"pip install '{_EXTRAS['openvino']}'"
            )
        return precision if precision == "int8" else accel.resolve_precision(precision, device)
    if backend == "torch":
        if precision == "int8":
            raise UserError(
                "--precision int8 runs on --backend onnxruntime or openvino "
                "(PyTorch's own int8 is measured by `convzoo bench` only)"
            )
        return accel.resolve_precision(precision, device)
    if torch.device(device).type != "cpu":
        raise UserError(
            f"--backend {backend} runs on the CPU: pass --device cpu, or --backend torch on {device}"
        )
    _require(backend)
    if precision in (None, "auto"):
        precision = "bf16" if backend == "openvino" and accel.default_precision(device) == "bf16" else "fp32"
    if precision not in PRECISIONS[backend]:
        raise UserError(
            f"--backend {backend} runs {' or '.join(PRECISIONS[backend])}, not --precision {precision}"
        )
    if precision == "int8" and not uses_nncf(backend):
        _require("onnxruntime", why="int8 graphs are made by ONNX Runtime's quantizer (OpenVINO's by NNCF)")
    return precision


def _require(backend: str, why: str | None = None) -> None:
    for package in (_PACKAGES[backend], "onnx", "onnxscript"):
        if importlib.util.find_spec(package) is None:
            reason = why or f"--backend {backend}"
            raise UserError(f"{reason} needs the {package} package: pip install '{_EXTRAS[backend]}'")


# ---- calibration images --------------------------------------------------------------------
@dataclass(frozen=True)
class Calibration:
    """Images to calibrate int8 activation ranges: `key` identifies them (the cache key),
    `batches()` yields their fp32 NCHW batches, preprocessed as the model's input."""

    key: str
    count: int
    source: str  # for the notice: where the images come from
    batches: Callable[[], Iterator[torch.Tensor]]
    # other images of the same source, never calibrated on: where int8's top-1 agreement with
    # fp32 is measured when its graph is made (None: on the calibration images themselves)
    held_out: Callable[[], Iterator[torch.Tensor]] | None = None


def calibration_from_items(items, count: int, source: str, key: str, held_out=None) -> Calibration:
    """`items` a sequence whose elements are preprocessed [3, S, S] tensors (or (tensor, label)
    pairs, or None for an unreadable image, skipped); the first `count` are used. `held_out`:
    another such sequence, for the agreement check (`Calibration.held_out`)."""
    if count < 1:
        raise UserError(f"int8 calibration needs images; {source} has none")
    return Calibration(
        key,
        count,
        source,
        lambda: _batches(items, count),
        (lambda: _batches(held_out, len(held_out))) if held_out is not None and len(held_out) else None,
    )


def _batches(items, count: int) -> Iterator[torch.Tensor]:
    """The first `count` of `items` (unreadable ones, None, skipped) in batches of _CALIBRATION_BATCH."""
    chunk: list[torch.Tensor] = []
    for i in range(count):
        item = items[i]
        if item is None:
            continue
        chunk.append(item[0] if isinstance(item, tuple) else item)
        if len(chunk) == _CALIBRATION_BATCH:
            yield torch.stack(chunk)
            chunk = []
    if chunk:
        yield torch.stack(chunk)


def check_calibration_path(path: str) -> list[str]:
    """--calibration PATH -> its image files (a folder's, recursively); checked before any work."""
    if not os.path.exists(path):
        raise UserError(f"--calibration: no such file or folder: {path}")
    files = [f for f in expand_paths([path]) if os.path.isfile(f)]
    if not files:
        raise UserError(f"--calibration: no images in {path}")
    return files


def calibration_from_files(paths: list[str], transform, source: str) -> Calibration:
    """A seeded random CALIBRATION_IMAGES of `paths`, decoded and preprocessed by `transform`.
    Random, not the first ones: the first 128 of a class-folder tree are all one class."""
    files = sorted(p for p in paths if os.path.isfile(p))
    drawn = random.Random(0).sample(files, min(2 * CALIBRATION_IMAGES, len(files)))
    # the first CALIBRATION_IMAGES calibrate; the rest, up to as many, check the agreement
    chosen = sorted(drawn[:CALIBRATION_IMAGES])
    others = sorted(drawn[CALIBRATION_IMAGES:])
    h = hashlib.sha256()
    for p in chosen:
        st = os.stat(p)
        h.update(f"{os.path.realpath(p)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())

    class _Images:
        def __init__(self, files: list[str]):
            self.files = files

        def __len__(self) -> int:
            return len(self.files)

        def __getitem__(self, i: int):
            try:
                return transform(load_image(self.files[i]))
            except (BadImage, OSError):
                return None

    return calibration_from_items(_Images(chosen), len(chosen), source, h.hexdigest(), _Images(others))


# ---- the cached graphs ---------------------------------------------------------------------
def graphs_dir() -> str:
    return os.path.join(cache_dir(), "graphs")


def model_key(model: nn.Module, size: int) -> str:
    """A hash of what the graph computes: the model's code, configuration and every weight."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{torch.__version__}\0{size}\0{model!r}\0".encode())
    source = inspect.getsourcefile(type(model))
    if source:
        with open(source, "rb") as f:
            h.update(f.read())
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def graph_path(model: nn.Module, name: str, size: int) -> str:
    """Where the fp32 ONNX graph of `model` at `size` is cached (whether or not it is there)."""
    return os.path.join(graphs_dir(), f"{name}-{size}px-{model_key(model, size)}.onnx")


def onnx_graph(
    model: nn.Module, name: str, size: int, log: Callable[[str], None], path: str | None = None
) -> tuple[str, bool]:
    """(path of the fp32 ONNX graph of `model` at `size`, whether it was made now); `path`: its
    `graph_path`, where the caller has it already (hashing the weights takes a moment)."""
    path = path or graph_path(model, name, size)
    if os.path.isfile(path):
        return path, False
    os.makedirs(os.path.dirname(path), exist_ok=True)
    log(f"exporting {name} to ONNX at {size}x{size} (once; cached in {os.path.dirname(path)})")
    with atomic_path(path) as tmp, torch.no_grad():
        write_onnx(model, size, tmp)
    return path, True


@dataclass(frozen=True)
class Int8Settings:
    """How int8 graphs are made; the defaults are what the commands use (measured choices, see
    the module's docstring; benchmarks/int8_variants.py compares the alternatives)."""

    # ONNX Runtime's quantizer
    keep_ends_fp32: bool = True  # the first convolution and the classifier stay fp32
    reduce_range: bool = False  # 7-bit weights (ONNX Runtime's remedy for non-VNNI saturation)
    calibrate_method: str = "MinMax"  # MinMax | Entropy | Percentile (ONNX Runtime's names)
    # NNCF: its own placement (every layer int8), except that the first convolution stays in float
    # where it is under this share of the network's multiply-adds. Its int8 input rounds the image
    # itself: on three trained CIFAR-10 VGGs (whose first layer, a fixed whitening filter bank,
    # amplifies that rounding) the float first layer raised top-1 agreement with fp32 from
    # 98.65-98.88 % to 99.06-99.11 %; it costs about 3-5x its share of the MACs in int8 speed
    # (ResNet-50's, 2.9 % of its MACs: 7-8 %; so there it stays int8). 0: never; 1: always.
    nncf_first_layer_float_below: float = 0.01
    preset: str = "PERFORMANCE"  # NNCF's: PERFORMANCE (symmetric activations) | MIXED (asymmetric)
    fast_bias_correction: bool = True  # NNCF's fast bias correction (False: its full one)
    # NNCF's 7-bit first layer against u8 x s8 saturation: None = only where the CPU has no VNNI
    overflow_fix: str | None = None  # FIRST_LAYER | DISABLE | ENABLE (NNCF's names)

    def nncf_options(self) -> dict:
        """What NNCF's process is told (JSON), and part of its graphs' cache key."""
        return {
            "first_layer_float_below": self.nncf_first_layer_float_below,
            "preset": self.preset,
            "fast_bias_correction": self.fast_bias_correction,
            "overflow_fix": self.overflow_fix or ("DISABLE" if accel.cpu_has_vnni() else "FIRST_LAYER"),
        }


def _int8_path(fp32_path: str, calibration: Calibration, maker: str, tag: str, ext: str) -> str:
    """Where the int8 graph of `fp32_path` is cached: keyed by the graph, the calibration images
    and the quantizer with its settings and version (`maker`), so a change in any makes a new one."""
    key = hashlib.sha256(
        f"{os.path.basename(fp32_path)}\0{calibration.key}\0{calibration.count}\0{maker}".encode()
    ).hexdigest()[:32]
    return fp32_path[: -len(".onnx")] + f"-int8-{tag}{key}{ext}"


def int8_graph(
    fp32_path: str,
    calibration: Calibration,
    log: Callable[[str], None],
    settings: Int8Settings = Int8Settings(),
) -> str:
    """The QDQ int8 graph of `fp32_path`, calibrated on `calibration` (cached)."""
    import onnxruntime  # lazy: onnxruntime is an optional extra (convzoo[onnx])
    from onnxruntime.quantization import (  # lazy: the same extra
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process  # lazy: the same extra

    fp32_layers = first_and_last_layers(fp32_path) if settings.keep_ends_fp32 else []
    path = _int8_path(fp32_path, calibration, f"{settings}\0{onnxruntime.__version__}", "", ".onnx")
    if os.path.isfile(path):
        return path
    log(f"calibrating int8 on {calibration.count} images of {calibration.source}, once (cached)")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = calibration.batches()

        def get_next(self):
            x = next(self.batches, None)
            return None if x is None else {"input": x.float().numpy()}

    pre = path + f".pre{os.getpid()}.onnx"
    try:
        quant_pre_process(fp32_path, pre, skip_symbolic_shape=True)
        with atomic_path(path) as tmp:
            quantize_static(
                pre,
                tmp,
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                reduce_range=settings.reduce_range,
                calibrate_method=CalibrationMethod[settings.calibrate_method],
                nodes_to_exclude=fp32_layers,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            )
    finally:
        for leftover in (pre, pre + ".data"):
            if os.path.exists(leftover):
                os.remove(leftover)
    return path


def first_and_last_layers(path: str) -> list[str]:
    """The names of the graph's first convolution and last Gemm/MatMul/Conv (ONNX lists nodes in
    topological order): the layers int8 keeps in fp32."""
    import onnx  # lazy: onnx comes with the optional runtime extras

    graph = onnx.load(path, load_external_data=False).graph
    layers = [n.name for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    return sorted({layers[0], layers[-1]}) if layers else []


# ---- the running model ---------------------------------------------------------------------
class RuntimeModel(nn.Module):
    """fp32 NCHW batch in, fp32 logits out, computed by an ONNX Runtime session or an OpenVINO
    compiled model on `graph`."""

    def __init__(self, infer: Callable[[np.ndarray], np.ndarray], backend: str, precision: str, graph: str):
        super().__init__()
        self.infer, self.backend, self.precision, self.graph = infer, backend, precision, graph
        self.agreement: dict | None = None  # int8: top-1 agreement with fp32 (`_int8_cached`)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.infer(x.detach().to("cpu", torch.float32).contiguous().numpy())
        return torch.from_numpy(np.array(out, dtype=np.float32, copy=True))

    def extra_repr(self) -> str:
        return f"backend={self.backend}, precision={self.precision}, graph={os.path.basename(self.graph)}"


def session(backend: str, graph: str, threads: int, precision: str) -> Callable[[np.ndarray], np.ndarray]:
    """A function running `graph` on a float32 NCHW array with `backend` (onnxruntime/openvino)."""
    return _onnxruntime(graph, threads) if backend == "onnxruntime" else _openvino(graph, threads, precision)


def _onnxruntime(graph: str, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime as ort  # lazy: onnxruntime is an optional extra (convzoo[onnx])

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.log_severity_level = 3  # its warnings (e.g. unused initializers) are not the user's
    session = ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"input": x})[0]


def _openvino(graph: str, threads: int, precision: str) -> Callable[[np.ndarray], np.ndarray]:
    import openvino as ov  # lazy: openvino is an optional extra (convzoo[openvino])

    core = ov.Core()
    config = {
        # one stream over all threads, one batch at a time: two single-thread streams each given
        # half the batch measured no faster on 2 cores (ResNet-50, batch 32, bf16)
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": threads,
        # int8 graphs run their dequantized parts in fp32; bf16 only where asked
        "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
        "CACHE_DIR": os.path.join(graphs_dir(), "openvino"),
    }
    compiled = core.compile_model(graph, "CPU", config)
    request = compiled.create_infer_request()
    output = compiled.output(0)
    # not share_inputs: the request would keep pointing at the caller's batch after the call
    return lambda x: request.infer({0: x})[output]


def runtime_model(
    model: nn.Module,
    name: str,
    backend: str,
    precision: str,
    size: int,
    calibration: Calibration | Callable[[], Calibration] | None = None,
    command: str = "convzoo",
) -> RuntimeModel:
    """`model` (eval mode, weights loaded, on the CPU) run by `backend` in `precision` (from
    `resolve_backend`) at `size` x `size`. `calibration`: the int8 images (or a function making
    them, called for int8 only; the images are read only when the int8 graph is not cached)."""

    def log(message: str) -> None:
        print(f"{command}: {message}", file=sys.stderr)

    model = model.eval().cpu()
    fp32_path, made = onnx_graph(model, name, size, log)
    threads = torch.get_num_threads()
    if made:
        _check_graph(model, fp32_path, size, backend, threads)
    graph, agreement = fp32_path, None
    if precision == "int8":
        if calibration is None:
            raise UserError("--precision int8 needs calibration images: pass --calibration DIR")
        graph, agreement = _int8_cached(fp32_path, calibration, log, backend, threads)
        log(
            f"int8 ({agreement['quantizer']}): top-1 agreement with fp32 {agreement['percent']:.2f} % on "
            f"{agreement['images']} {agreement['where']} (measured when the int8 graph was made)"
        )
    rm = RuntimeModel(session(backend, graph, threads, precision), backend, precision, graph)
    rm.agreement = agreement
    return rm


def uses_nncf(backend: str) -> bool:
    """OpenVINO's int8 is made by NNCF, OpenVINO's own quantizer, where it is installed."""
    return backend == "openvino" and importlib.util.find_spec("nncf") is not None


def _int8_cached(fp32_path: str, calibration, log, backend: str, threads: int) -> tuple[str, dict]:
    """(the int8 graph for `backend`, its agreement with fp32), made and measured once."""
    if not isinstance(calibration, Calibration):
        calibration = calibration()
    if uses_nncf(backend):
        graph = nncf_int8_graph(fp32_path, calibration, log)
    else:
        graph = int8_graph(fp32_path, calibration, log)
    sidecar = graph + ".agreement.json"
    try:
        with open(sidecar) as f:
            return graph, json.load(f)
    except (OSError, ValueError):
        pass
    held_out = calibration.held_out is not None
    batches = (calibration.held_out or calibration.batches)()
    fp32, int8 = session(backend, fp32_path, threads, "fp32"), session(backend, graph, threads, "int8")
    same = total = 0
    for x in batches:
        a = np.asarray(fp32(x.float().numpy())).argmax(1)
        b = np.asarray(int8(x.float().numpy())).argmax(1)
        same, total = same + int((a == b).sum()), total + len(a)
    # freed here, in this order, not whenever the collector gets to them: left to it, the two
    # sessions were seen to crash a later run in the same process (segmentation fault)
    del int8, fp32
    gc.collect()
    agreement = {
        "percent": 100.0 * same / max(total, 1),
        "images": total,
        "where": (
            f"held-out images of {calibration.source} (not calibrated on)"
            if held_out
            else f"the calibration images of {calibration.source}"
        ),
        "quantizer": "NNCF" if uses_nncf(backend) else "ONNX Runtime",
    }
    text = json.dumps(agreement, indent=1) + "\n"
    atomic_write(sidecar, lambda f: f.write(text.encode()))
    return graph, agreement


# `ignored`: OpenVINO's names of the layers left in float (`nncf_float_first_layer`)
_NNCF_SCRIPT = """
import json, logging, sys
import numpy as np, nncf, openvino as ov
from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
nncf.set_log_level(logging.ERROR)
onnx_path, data, out, options, ignored = sys.argv[1:6]
options, ignored = json.loads(options), json.loads(ignored)
model = ov.Core().read_model(onnx_path)
x = np.load(data)
items = [x[i : i + 1] for i in range(len(x))]
q = nncf.quantize(
    model,
    nncf.Dataset(items),
    subset_size=len(items),
    preset=nncf.QuantizationPreset[options["preset"]],
    fast_bias_correction=options["fast_bias_correction"],
    ignored_scope=nncf.IgnoredScope(names=ignored),
    advanced_parameters=AdvancedQuantizationParameters(overflow_fix=OverflowFix[options["overflow_fix"]]),
)
ov.save_model(q, out, compress_to_fp16=False)
"""


def layer_macs(model) -> list[tuple[str, int]]:
    """(name, multiply-adds per image) of each convolution and weighted matmul of an OpenVINO model,
    in its order of operations (OpenVINO's names: the ONNX node names do not always survive its
    conversion, a Gemm becomes a MatMul). A matmul of two activations has no weights and is left out."""
    out = []
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind not in ("Convolution", "GroupConvolution", "MatMul"):
            continue
        weights, result = op.input(1).get_partial_shape(), op.get_output_partial_shape(0)
        if kind == "MatMul" and op.input_value(1).get_node().get_type_name() not in ("Constant", "Convert"):
            continue
        per_output = math.prod(d.get_length() for d in weights)  # [Cout, Cin/g, k...] or [in, out]
        positions = result[2:] if kind != "MatMul" else result[1:-1]  # spatial, or none
        out.append((op.get_friendly_name(), per_output * math.prod(d.get_length() for d in positions)))
    return out


def nncf_float_first_layer(fp32_path: str, below: float) -> tuple[list[str], str]:
    """(the layers NNCF leaves in float: the first convolution where its share of the network's
    multiply-adds is under `below`, else none; why, for the notice)."""
    import openvino as ov  # lazy: openvino is an optional extra (convzoo[openvino])

    layers = layer_macs(ov.Core().read_model(fp32_path))
    if not layers:
        return [], "every layer int8"
    share = layers[0][1] / max(1, sum(m for _, m in layers))
    if share < below:
        return [layers[0][0]], f"the first convolution in float ({100 * share:.1f} % of the multiply-adds)"
    return [], f"every layer int8 (the first convolution is {100 * share:.1f} % of the multiply-adds)"


def nncf_int8_graph(
    fp32_path: str,
    calibration: Calibration,
    log: Callable[[str], None],
    settings: Int8Settings = Int8Settings(),
) -> str:
    """OpenVINO's int8 model of `fp32_path` (IR .xml + .bin, cached beside it): NNCF post-training
    quantization (per-channel symmetric int8 weights, int8 activations, its bias correction) with
    `settings` (by default NNCF's own, except that a CPU with VNNI gets 8-bit weights in the first
    layer too, and a first convolution under 1 % of the multiply-adds stays in float), calibrated
    on `calibration`, one image per calibration sample."""
    import openvino as ov  # lazy: openvino is an optional extra (convzoo[openvino])

    options = json.dumps(settings.nncf_options(), sort_keys=True)
    maker = f"nncf{version('nncf')}\0{ov.get_version()}\0{options}"
    path = _int8_path(fp32_path, calibration, maker, "nncf-", ".xml")
    if os.path.isfile(path):
        return path
    ignored, placement = nncf_float_first_layer(fp32_path, settings.nncf_first_layer_float_below)
    log(
        f"quantizing to int8 with NNCF on {calibration.count} images of {calibration.source}, "
        f"{placement}, once (cached)"
    )
    items = np.concatenate([b.float().numpy() for b in calibration.batches()])
    tmp = f"{path[: -len('.xml')]}.tmp{os.getpid()}"
    try:
        np.save(tmp + ".npy", items)
        # in a process of its own: nncf loaded beside torch and ONNX Runtime in one process was
        # seen to crash a later ONNX Runtime int8 run (segmentation fault); its progress bars go
        # nowhere near a --json stdout there either
        done = subprocess.run(
            [sys.executable, "-c", _NNCF_SCRIPT, fp32_path, tmp + ".npy", tmp + ".xml"]
            + [options, json.dumps(ignored)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise RunFailed(f"NNCF could not quantize {os.path.basename(fp32_path)}: {last}")
        os.replace(tmp + ".bin", path[: -len(".xml")] + ".bin")
        os.replace(tmp + ".xml", path)  # last: the .xml's presence says the pair is complete
    finally:
        for leftover in (tmp + ".xml", tmp + ".bin", tmp + ".npy"):
            if os.path.exists(leftover):
                os.remove(leftover)
    return path


def _check_graph(model: nn.Module, path: str, size: int, backend: str, threads: int) -> None:
    """A fresh graph must compute what PyTorch computes (fp32); else it is removed and the run
    stops, naming the difference (an exporter bug is not the user's to debug)."""
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(x).float()
    infer = session(backend, path, threads, "fp32")
    got = torch.from_numpy(np.asarray(infer(x.numpy()), dtype=np.float32))
    scale = float(ref.abs().max())
    diff = float((got - ref).abs().max()) if got.shape == ref.shape else float("inf")
    if diff > _CHECK_TOLERANCE * max(1.0, scale):
        os.remove(path)
        raise RunFailed(
            f"the ONNX graph of this model disagrees with PyTorch under {backend}: max |diff| {diff:.3g} "
            f"at logits up to {scale:.3g}; use --backend torch"
        )


# ---- backend auto ---------------------------------------------------------------------------
# What a graph runtime gains over PyTorch's own fast path (BN folded, weights cast once,
# channels_last), as a factor on the network's time: measured 1.40x for OpenVINO bf16 over
# PyTorch bf16 (ResNet-50, batch 32, 2 threads of an AVX512-BF16 EPYC) and 1.88x for ONNX Runtime
# fp32 over PyTorch fp32 (AVX2 EPYC); the estimate stays below both (docs/performance.md).
GRAPH_SPEEDUP = 1.25
# Exporting, checking and compiling a graph the first time: measured 10 s for ResNet-20 (0.27 M
# weights) and 15 s for ResNet-50 (25.6 M) on 2 busy cores; the dynamo exporter's start-up is most
# of the first, the weights' size the rest.
EXPORT_SECONDS_BASE, EXPORT_SECONDS_PER_PARAM = 8.0, 0.3e-6
# A job whose length is not known (a server, a benchmark) is weighed as this many images.
OPEN_ENDED_IMAGES = 10_000


# Which of two installed runtimes runs fp32 faster depends on the CPU and the network: ONNX
# Runtime ran ResNet-50 at 1.22x OpenVINO on an AVX2 EPYC, OpenVINO ran GoogLeNet (LRN) at 1.7-2x
# ONNX Runtime, and on an AVX-512 Xeon the two were within 5 % on ResNet-50 (docs/performance.md).
# So they are timed on the graph itself, once per graph and machine: SPEED_ROUNDS alternated calls
# of SPEED_BATCH images each, the fastest call of each; the cost, sessions included, is counted
# as SPEED_SECONDS where auto weighs what a graph runtime saves.
SPEED_BATCH, SPEED_ROUNDS, SPEED_SECONDS = 8, 3, 4.0


def _speed_key(backends: list[str], threads: int) -> str:
    """This machine and the runtimes' versions: a measurement made elsewhere is made again."""
    versions = [f"{b}{version(_PACKAGES[b])}" for b in sorted(backends)]
    machine = f"{sorted(accel.cpu_flags())!r}-{threads}-{versions}-{SPEED_ROUNDS}x{SPEED_BATCH}"
    return hashlib.sha256(machine.encode()).hexdigest()[:16]


def known_speeds(path: str, backends: list[str]) -> dict[str, float] | None:
    """The fp32 seconds per call of each of `backends` on the graph at `path` measured on this
    machine (`runtime_speeds`), or None where they were not."""
    try:
        with open(path + ".speed.json") as f:
            known = json.load(f)[_speed_key(backends, torch.get_num_threads())]
        return {b: float(known[b]) for b in backends}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def runtime_speeds(
    model: nn.Module, name: str, size: int, backends: list[str], log: Callable[[str], None]
) -> dict[str, float]:
    """Each of `backends` timed in fp32 on the graph of `model` (made now where it is not cached:
    exported and checked), the fastest of SPEED_ROUNDS alternated calls; kept beside the graph,
    where `known_speeds` reads it (the caller asks it first)."""
    path, made = onnx_graph(model, name, size, log)
    threads = torch.get_num_threads()
    if made:
        _check_graph(model, path, size, backends[0], threads)
    log(f"timing {' and '.join(backends)} on the graph in fp32 (once; cached beside it)")
    x = np.random.default_rng(0).standard_normal((SPEED_BATCH, 3, size, size), dtype=np.float32)
    runs = {b: session(b, path, threads, "fp32") for b in backends}
    best = {b: math.inf for b in backends}
    for run in runs.values():
        run(x)  # the first call allocates and, for OpenVINO, compiles: not timed
    for _ in range(SPEED_ROUNDS):
        for b, run in runs.items():
            t0 = time.perf_counter()
            run(x)
            best[b] = min(best[b], time.perf_counter() - t0)
    runs.clear()
    gc.collect()  # the sessions freed now, not beside the next ones (see `_int8_cached`)
    accel.remember(path + ".speed.json", _speed_key(backends, threads), best)
    return best


@dataclass(frozen=True)
class Choice:
    """What `--backend auto` runs: the runtime, its precision, and why (said once on stderr)."""

    backend: str
    precision: str
    reason: str


def installed_runtimes() -> list[str]:
    """The graph runtimes that can run here, OpenVINO first (the faster where they were not timed:
    it runs bf16, and LRN, fast; `runtime_speeds` decides fp32 by measurement)."""

    def has(*packages: str) -> bool:
        return all(importlib.util.find_spec(p) is not None for p in packages)

    return [b for b in ("openvino", "onnxruntime") if has(_PACKAGES[b], "onnx", "onnxscript")]


def choose_backend(
    model: nn.Module,
    name: str,
    size: int,
    precision: str,
    device,
    images: int | None,
    needs_torch: str | None = None,
    precision_by_default: bool = False,
    log: Callable[[str], None] = lambda message: print(f"convzoo: {message}", file=sys.stderr),
) -> Choice:
    """`--backend auto`: the fastest runtime installed for this job, in float precision.

    `precision_by_default`: `precision` came from `--precision auto`, not the user; then a graph
    runtime runs fp32 where the CPU's bf16 units, measured (`accel.bf16_measured_fast`), are
    slower than fp32 (PyTorch keeps the precision training used, so eval still reproduces it).

    `precision` is what PyTorch would run (fp32, bf16 where the CPU has bf16 units, or what was
    asked: fp16, int8). PyTorch runs it on GPUs, for fp16, where a feature needs the PyTorch
    model (`needs_torch` names it: CAMs, dense evaluation, --compile, ...) and where no graph
    runtime is installed. Otherwise the graph runtime is chosen where its graph is cached, or
    where what it saves over `images` images (the network's estimated time, from its MACs, less
    a `GRAPH_SPEEDUP`-th) repays making the graph the first time (`EXPORT_SECONDS_*`); a
    dozen photos through a small network never wait for an export. Where two runtimes run the
    precision (fp32), the faster on this graph here is taken (`runtime_speeds`: the graph is made
    now, and `log` says so). int8 is never chosen here:
    only asked for (`--precision int8`), and then it runs on the fastest installed runtime."""
    dev = torch.device(device)
    runtimes = installed_runtimes()
    if precision == "int8":
        if not runtimes:
            raise UserError(f"--precision int8 needs a graph runtime: pip install '{_EXTRAS['openvino']}'")
        return Choice(
            runtimes[0],
            "int8",
            f"--precision int8 runs on a graph runtime; {runtimes[0]} is the fastest installed",
        )
    if dev.type != "cpu":
        return Choice(
            "torch", precision, f"PyTorch runs on {dev.type}; the graph runtimes here run on the CPU"
        )
    if needs_torch:
        return Choice("torch", precision, f"{needs_torch} needs the PyTorch model")
    if precision == "fp16":
        return Choice("torch", precision, "fp16 runs on PyTorch only")
    native, measured = accel.cpu_has_fast_bf16(), ""
    if native and precision == "bf16" and precision_by_default:
        native, measured = accel.bf16_measured_fast()
        measured = f"; {measured}"
    torch_precision = precision
    if precision == "bf16" and not native and precision_by_default:
        precision = "fp32"  # for the graph runtimes: PyTorch, if it runs, keeps its precision
    # ONNX Runtime's fp32 beats PyTorch's fp32, not PyTorch's native bf16
    candidates = [b for b in runtimes if precision == "fp32" or (b == "openvino" and native)]
    if not candidates:
        why = (
            "no graph runtime is installed (pip install 'convzoo[openvino]' adds OpenVINO)"
            if not runtimes
            else f"{' and '.join(runtimes)} run(s) no faster than PyTorch in {precision} here"
        )
        return Choice("torch", torch_precision, why)
    if precision == "fp32":  # the precision's own reason: here (measured), or `precision_note`
        where = "in fp32" + (f" ({measured[2:]})" if measured else "")
    else:
        where = f"on this CPU ({'bf16 units' if native else 'no fast bf16 units'}{measured})"
    path = graph_path(model, name, size)
    speeds = known_speeds(path, candidates) if len(candidates) > 1 else None
    cached = os.path.isfile(path)
    macs = count_macs(model, size)
    n = images if images is not None else OPEN_ENDED_IMAGES
    gain = accel.network_seconds(macs, n, torch_precision) * (1 - 1 / GRAPH_SPEEDUP)
    export = (
        0.0
        if cached
        else (EXPORT_SECONDS_BASE + EXPORT_SECONDS_PER_PARAM * sum(p.numel() for p in model.parameters()))
    )
    cost = export + (SPEED_SECONDS if len(candidates) > 1 and speeds is None else 0.0)
    job = f"{n} images" + (" (an open-ended job counts as that many)" if images is None else "")
    if cached and gain < cost:  # the graph is there; timing the runtimes on it would not repay
        return Choice(candidates[0], precision, f"the fastest installed runtime {where}; its graph is cached")
    if not cached and gain < cost:
        return Choice(
            "torch",
            torch_precision,
            f"{job} x {macs / 1e6:.0f} M multiply-adds: {candidates[0]} would save ~{gain:.1f} s, less "
            f"than making its graph takes (~{cost:.0f} s, once); --backend {candidates[0]} makes it anyway",
        )
    making = f"making its graph (~{cost:.0f} s, once, cached) repays itself over {job} (~{gain:.0f} s saved)"
    if len(candidates) == 1:
        why = f"the fastest installed runtime {where}; " + ("its graph is cached" if cached else making)
        return Choice(candidates[0], precision, why)
    how = "measured once, cached" if speeds is not None else "measured now, once, cached"
    speeds = speeds or runtime_speeds(model, name, size, candidates, log)
    fastest, other = sorted(candidates, key=speeds.__getitem__)
    why = (
        f"the faster installed runtime {where} on this graph here: {speeds[other] / speeds[fastest]:.2f}x "
        f"{other} ({how})" + ("" if cached else f"; {making}")
    )
    return Choice(fastest, precision, why)


def precision_note(precision: str, device) -> str:
    """Why `precision` is what `--precision auto` runs (`accel.precision_choice`), said beside the
    backend; empty where the backend runs another precision than the default (its reason says why)."""
    default, why = accel.precision_choice(device)
    return f"precision {precision} by default: {why}" if precision == default else ""


def fast_model(
    model: nn.Module,
    name: str,
    backend: str,
    precision: str,
    channels_last: bool,
    device,
    size: int,
    compile: bool | None = None,
    num_batches: int | None = None,
    calibration: Calibration | Callable[[], Calibration] | None = None,
    command: str = "convzoo",
    images: int | None = None,
    needs_torch: str | None = None,
    precision_by_default: bool = False,
) -> tuple[nn.Module, str, dict]:
    """The model `eval`, `predict` and `serve` classify with: (model, autocast precision to run it
    under, facts for the result: backend and precision run, ...). torch: `accel.fast_inference`;
    else `runtime_model`; auto: `choose_backend` for `images` images (None: open-ended),
    said once on stderr. `needs_torch`: the feature that needs the PyTorch model, if any."""
    if backend == "auto":
        if compile:
            needs_torch = needs_torch or "--compile (torch.compile)"
        choice = choose_backend(
            model,
            name,
            size,
            precision,
            device,
            images,
            needs_torch,
            precision_by_default,
            lambda message: print(f"{command}: {message}", file=sys.stderr),
        )
        note = precision_note(choice.precision, device) if precision_by_default else ""
        print(
            f"{command}: backend {choice.backend} {choice.precision} (auto: {choice.reason})"
            + (f"; {note}" if note else ""),
            file=sys.stderr,
        )
        backend, precision = choice.backend, choice.precision
    elif precision_by_default and (note := precision_note(precision, device)):
        print(f"{command}: {note}", file=sys.stderr)
    if backend == "torch":
        fast, run_precision, info = accel.fast_inference(
            model, precision, channels_last, device, compile, num_batches, command, images=images, size=size
        )
        return fast, run_precision, {"backend": "torch", "precision": precision, **info}
    if compile:
        raise UserError(f"--compile is torch.compile: it applies to --backend torch, not {backend}")
    rm = runtime_model(model, name, backend, precision, size, calibration, command)
    info = {"backend": backend, "precision": precision, "bn_folded": 0, "compiled": False, "graph": rm.graph}
    if rm.agreement is not None:
        info["int8_agreement"] = rm.agreement
    return rm, "fp32", info
