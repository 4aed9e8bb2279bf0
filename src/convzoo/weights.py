"""WeightSpec and safetensors I/O.

A convzoo weights file is a safetensors file whose header metadata holds, under the key
`convzoo`, a JSON WeightSpec: what the weights are for (model, classes, labels) and how
to feed them (mean/std, input size, crop, interpolation, and for weights from Caffe its channel
order BGR, pixel scale 0-255 and "squash" resizing). Anything that writes weights
writes it; anything that reads weights reads it, so eval and predict cannot disagree.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn as nn

from .errors import UserError
from .layers import inception_transform_input
from .outputs import atomic_path
from .untrusted import MAX_NESTING, check_nesting

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
METADATA_KEY = "convzoo"
CHANNEL_ORDERS = ("RGB", "BGR")
# "shorter": shorter side to resize_size, aspect kept (torchvision); "squash": resize_size x
# resize_size, aspect ignored (Caffe's python classifier)
RESIZE_MODES = ("shorter", "squash")


@dataclass
class WeightSpec:
    model: str
    num_classes: int
    labels: list[str] | None = None  # class names, index order
    mean: tuple[float, ...] = IMAGENET_MEAN  # 3 numbers, or 1 for all channels (validate)
    std: tuple[float, ...] = IMAGENET_STD
    input_size: int = 224  # size the network sees
    crop_size: int | None = None  # center crop (None: = input_size)
    resize_size: int | None = None  # shorter side before cropping (None: input/0.875)
    interpolation: str = "bilinear"
    source: str = "convzoo"  # convzoo | torchvision | timm | places365 | caffe | remap
    converted_from: str | None = None  # original file name or URL
    params: int | None = None
    macs: int | None = None
    metrics: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # e.g. places365 indoor/outdoor flags
    # Constructor options the weights need (e.g. Caffe's ceil-mode pooling, a CIFAR option-A
    # shortcut convention): create_model(weights=...) builds the model with them.
    model_kwargs: dict = field(default_factory=dict)
    # How pixels become the network's input: x = (reorder(image in [0, 1] * pixel_scale) - mean) / std,
    # with mean/std listed in `channel_order` (Caffe: BGR, 255, mean pixel 104/117/123, std 1).
    channel_order: str = "RGB"
    pixel_scale: float = 1.0
    resize_mode: str = "shorter"

    def __post_init__(self):
        # a ValueError: read_spec turns it into a one-line UserError for a malformed file
        if self.channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, got {self.channel_order!r}")
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}")
        if (
            isinstance(self.pixel_scale, bool)
            or not isinstance(self.pixel_scale, (int, float))
            or not 0 < self.pixel_scale <= 65535
        ):
            raise ValueError(f"pixel_scale must be a number in (0, 65535], got {self.pixel_scale!r}")
        self.pixel_scale = float(self.pixel_scale)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WeightSpec:
        """The spec in a weights file: every field checked (`validate`); UserError otherwise.
        Unknown keys are ignored (a file from a newer convzoo)."""
        try:
            raw = json.loads(text)
        except RecursionError:  # the parser's own recursion: thousands of nested lists
            raise UserError(f"WeightSpec: nested more than {MAX_NESTING} levels deep; refused") from None
        except (TypeError, ValueError) as e:
            raise UserError(f"WeightSpec is not JSON ({e})") from None
        check_nesting(raw, "WeightSpec")
        if not isinstance(raw, dict):
            raise UserError(f"WeightSpec must be a JSON object, got {type(raw).__name__}")
        missing = [k for k in ("model", "num_classes") if k not in raw]
        if missing:
            raise UserError(f"WeightSpec lacks {', '.join(missing)}")
        known = {f.name for f in fields(cls)}
        try:
            spec = cls(**{k: v for k, v in raw.items() if k in known})
        except (TypeError, ValueError) as e:  # __post_init__'s checks of the preprocessing fields
            raise UserError(f"WeightSpec: {e}") from None
        spec.validate()
        spec.mean, spec.std = tuple(spec.mean), tuple(spec.std)
        return spec

    def validate(self) -> WeightSpec:
        """UserError naming the first field out of its type or range (sizes bounded: an absurd
        input size would make eval or predict allocate without limit)."""
        for name, check, want in _SPEC_RULES:
            value = getattr(self, name)
            if not check(value):
                raise UserError(f"WeightSpec {name} must be {want}, got {_short(value)}")
        if self.labels is not None and len(self.labels) != self.num_classes:
            raise UserError(f"WeightSpec has {len(self.labels)} labels for {self.num_classes} classes")
        if len(self.mean) != len(self.std):
            raise UserError(f"WeightSpec mean and std differ in length ({len(self.mean)} vs {len(self.std)})")
        crop = self.crop_size or self.input_size
        if self.resize_size is not None and self.resize_size < crop:  # the eval crop would not fit
            raise UserError(f"WeightSpec resize_size {self.resize_size} is smaller than its crop {crop}")
        return self


MAX_SIZE = 4096  # pixels: no classic CNN is fed more; larger is a damaged or hostile spec
MAX_CLASSES = 1_000_000


def _int_in(lo: int, hi: int):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _optional(check):
    return lambda v: v is None or check(v)


def _numbers(positive: bool):
    def check(v) -> bool:
        return (
            isinstance(v, (list, tuple))
            and len(v) in (1, 3)
            and all(
                isinstance(x, (int, float))
                and not isinstance(x, bool)
                and math.isfinite(x)
                and (x > 0 if positive else abs(x) <= 1e6)
                for x in v
            )
        )

    return check


def _str_keys(v) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) for k in v)


_SPEC_RULES = (
    ("model", lambda v: isinstance(v, str) and 0 < len(v) <= 200, "a model name"),
    ("num_classes", _int_in(1, MAX_CLASSES), f"an integer in 1..{MAX_CLASSES}"),
    (
        "labels",
        _optional(lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)),
        "null or a list of strings",
    ),
    ("mean", _numbers(False), "1 or 3 finite numbers"),
    ("std", _numbers(True), "1 or 3 finite numbers > 0"),
    ("input_size", _int_in(1, MAX_SIZE), f"an integer in 1..{MAX_SIZE}"),
    ("crop_size", _optional(_int_in(1, MAX_SIZE)), f"null or an integer in 1..{MAX_SIZE}"),
    ("resize_size", _optional(_int_in(1, 2 * MAX_SIZE)), f"null or an integer in 1..{2 * MAX_SIZE}"),
    (
        "interpolation",
        lambda v: v in ("nearest", "nearest-exact", "bilinear", "bicubic", "box", "hamming", "lanczos"),
        "an interpolation name (bilinear, bicubic, ...)",
    ),
    ("source", lambda v: isinstance(v, str), "a string"),
    ("converted_from", _optional(lambda v: isinstance(v, str)), "null or a string"),
    ("params", _optional(_int_in(0, 10**13)), "null or a count"),
    ("macs", _optional(_int_in(0, 10**16)), "null or a count"),
    ("metrics", _str_keys, "an object"),
    ("extra", _str_keys, "an object"),
    ("model_kwargs", _str_keys, "an object"),
)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_file(path: str) -> str:
    """`path`, if it is a file. (Catalog names are resolved above this layer: create_model.)"""
    if not os.path.isfile(path):
        raise UserError(f"weights file not found: {path}")
    return path


def save_weights(path: str, model_or_state: nn.Module | dict, spec: WeightSpec) -> None:
    """Write weights and their spec atomically (temporary file, fsync, rename)."""
    from safetensors.torch import save_file

    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    # safetensors refuses shared storage and non-contiguous views: store plain copies
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    text = spec.to_json()
    try:  # the reader's rules on write: a file convzoo writes is one convzoo reads
        WeightSpec.from_json(text)
    except UserError as e:
        raise UserError(f"{path} not written: {e}") from None
    with atomic_path(path) as tmp:
        save_file(state, tmp, metadata={METADATA_KEY: text})


def read_spec(path: str) -> WeightSpec:
    """The WeightSpec of a convzoo weights file; UserError if it is not one."""
    from safetensors import safe_open

    path = _check_file(path)
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises several types for garbage input
        raise UserError(
            f"{path} is not a readable safetensors file ({type(e).__name__}: {e})".splitlines()[0]
        ) from None
    if METADATA_KEY not in meta:
        raise UserError(f"{path} has no convzoo WeightSpec; convert it first with `convzoo convert`")
    try:
        return WeightSpec.from_json(meta[METADATA_KEY])
    except (ValueError, TypeError) as e:
        raise UserError(f"{path}: malformed WeightSpec ({e})") from None


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = _check_file(path)
    try:
        return load_file(path, device="cpu")
    except Exception as e:
        raise UserError(f"{path} is not a readable safetensors file ({type(e).__name__})") from None


_INITS = ("normal_", "kaiming_normal_", "xavier_normal_", "trunc_normal_", "orthogonal_", "sparse_")
_META_LOCK = threading.Lock()


@contextlib.contextmanager
def _on_meta():
    """Build modules on the meta device (shapes only, no memory). The initializers that draw from
    a normal distribution are skipped for meta tensors (they hold no values; torch's meta
    `normal_` imports torch._dynamo, seconds the first time); real tensors are initialized as
    ever, also in other threads."""
    import torch.nn.init as init

    def skip(f):
        def init_unless_meta(*a, **k):
            t = a[0] if a else k.get("tensor")
            return t if getattr(t, "is_meta", False) else f(*a, **k)

        return init_unless_meta

    with _META_LOCK:
        saved = {n: getattr(init, n) for n in _INITS}
        for n, f in saved.items():
            setattr(init, n, skip(f))
        try:
            with torch.device("meta"):
                yield
        finally:
            for n, f in saved.items():
                setattr(init, n, f)


def check_fits(build, path: str, name: str, spec: WeightSpec) -> None:
    """Before a model is allocated for the weights file `path`: build it with `build()` on the
    meta device and compare its tensors with the file's (names and shapes, from the safetensors
    header). A WeightSpec asking for a model larger than its file (`model_kwargs` base_width
    512, 300,000 classes: gigabytes) or options the model does not take is one line, not an
    allocation or a traceback."""
    from safetensors import safe_open

    try:
        with _on_meta():
            model = build()
    except UserError:
        raise
    except Exception as e:  # the options come from the file: any failure to build is its fault
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UserError(
            f"weights {path}: {name} cannot be built with the file's options "
            f"(num_classes {spec.num_classes}, model_kwargs {_short(spec.model_kwargs)}): {why}"
        ) from None
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    try:
        with safe_open(path, framework="pt") as f:
            stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:
        raise UserError(f"{path} is not a readable safetensors file ({type(e).__name__})") from None
    problem = _fit_problem(own, stored, path, spec, name)
    if problem:
        raise UserError(problem)


def _fit_problem(own: dict, stored: dict, path: str, spec: WeightSpec, name: str) -> str | None:
    """Why tensors of these shapes (`stored`, name -> shape) do not load into a model with `own`."""
    missing = sorted(set(own) - set(stored))
    unexpected = sorted(set(stored) - set(own))
    if missing or unexpected:
        return (
            f"weights {path} ({spec.model}) do not fit {name}: "
            f"{len(missing)} missing keys (e.g. {missing[:1]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:1]})"
        )
    for k, shape in stored.items():
        if tuple(own[k]) != tuple(shape):
            return (
                f"weights {path} ({spec.model}, {spec.num_classes} classes) do not fit "
                f"{name}: {k} has shape {tuple(shape)}, model expects {tuple(own[k])}"
            )
    return None


def load_weights(model: nn.Module, path: str, spec: WeightSpec | None = None) -> WeightSpec:
    """Load a convzoo weights file (or catalog name) into `model`, strictly; returns its WeightSpec."""
    spec = spec or read_spec(path)
    state = read_state_dict(path)
    own = model.state_dict()
    name = getattr(model, "model_name", type(model).__name__)
    problem = _fit_problem(
        {k: v.shape for k, v in own.items()}, {k: v.shape for k, v in state.items()}, path, spec, name
    )
    if problem:
        raise UserError(problem)
    for k, v in state.items():
        check_values(k, v, own[k], path)
    model.load_state_dict(state, strict=True)
    # ignores: torch's stub types nn.Module attributes as Tensor | Module; any value is allowed
    model.weight_spec = spec  # type: ignore[assignment]
    if spec.extra.get("transform_input"):  # torchvision's pretrained googlenet/inception_v3
        if hasattr(model, "transform_input"):  # the model implements it itself
            model.transform_input = True  # type: ignore[assignment]
        elif not hasattr(model, "_transform_input_hook"):
            hook = model.register_forward_pre_hook(_transform_input)
            model._transform_input_hook = hook  # type: ignore[assignment]
    return spec


def check_values(key: str, value: torch.Tensor, target: torch.Tensor, path: str) -> None:
    """A float parameter takes only finite floats: int8 bytes would be cast to meaningless
    weights, NaN/Inf would make every prediction NaN (UserError, one line)."""
    if not target.is_floating_point():
        return
    if not value.is_floating_point():
        raise UserError(
            f"weights {path}: {key} is {str(value.dtype)[6:]}, the model needs floating-point "
            f"weights (quantized or damaged file?)"
        )
    if not bool(torch.isfinite(value).all()):
        raise UserError(f"weights {path}: {key} holds NaN or Inf values (damaged file?)")


def spec_of(model: nn.Module) -> WeightSpec:
    """The WeightSpec `load_weights` attached to `model` (create_model(weights=...) does)."""
    spec = getattr(model, "weight_spec", None)
    if not isinstance(spec, WeightSpec):
        raise UserError(f"{getattr(model, 'model_name', type(model).__name__)} has no weights loaded")
    return spec


def _transform_input(module: nn.Module, args: tuple) -> tuple:
    """Forward pre-hook: torchvision's `transform_input` for its pretrained googlenet/inception_v3
    (the weights were trained on (x - 0.5) / 0.5 input), on models without the option."""
    return (inception_transform_input(args[0]), *args[1:])
