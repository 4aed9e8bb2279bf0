"""Weights from elsewhere: torchvision, timm, the official Places365 checkpoints, Caffe's model
zoo (`caffe`, .caffemodel files), any other implementation (remap by order), and export (ONNX,
torch.export).

One entry point, `convert(kind, src_path, model_name, **options) -> (state_dict, WeightSpec)`
(`options`: the kind's own, e.g. `mean=` for Caffe; a kind lists them in `OPTIONS`):

1. `load_checkpoint` (or the kind's own `load_source`, e.g. Caffe's protobuf reader) reads the
   source file safely: `.safetensors`, or `.pth/.pth.tar/.pt` through
   `torch.load(map_location="cpu", weights_only=True)` (no fallback: a pickle that holds
   anything but tensors, numbers, strings, lists and dicts is refused, never executed), and
   unwraps a `{"state_dict": ...}` wrapper and DataParallel `module.` path components.
2. The kind's converter - a pure function from state dict to state dict - maps every source
   key to a convzoo key or drops it explicitly, and every shape is asserted against the
   convzoo model (built on the meta device, so nothing is allocated).
3. The kind's `weight_spec` says how the weights expect to be fed (preprocessing, labels).

Every converter returns `(state_dict, mapping)`, where `mapping` is a list of
`(source key, convzoo key or None when dropped, shape)` for `--verbose`.
"""

from __future__ import annotations

import functools
import importlib
import os
import pickle
from collections.abc import Callable

import torch

from ..data.labels import load_labels
from ..errors import UserError
from ..registry import build, canonical_name
from ..untrusted import check_zip_sizes
from ..weights import WeightSpec

KINDS = ("torchvision", "timm", "places365", "caffe", "remap")

Mapping = list[tuple[str, "str | None", tuple[int, ...]]]
BN_COUNTER = "num_batches_tracked"  # a buffer older checkpoints and other implementations lack


# ---- reading a checkpoint ----------------------------------------------------------------
def load_checkpoint(path: str) -> dict[str, torch.Tensor]:
    """The state dict in `path`, unwrapped; UserError (one line) for anything else."""
    if not os.path.isfile(path):
        raise UserError(f"checkpoint not found: {path}")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            obj = load_file(path, device="cpu")
        except Exception as e:  # safetensors raises several types for garbage input
            raise UserError(f"{path} is not a readable safetensors file ({type(e).__name__})") from None
    else:
        check_zip_sizes(path)  # before torch.load allocates what the zip declares
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            # weights_only refuses any global it does not know, before calling it
            first = str(e).strip().splitlines()[-1] if str(e).strip() else ""
            raise UserError(
                f"{path} holds objects other than tensors, numbers and dicts; refused "
                f"(torch.load weights_only=True: {first[:160]})"
            ) from None
        except Exception as e:
            # Garbage bytes fail inside torch's unpickler in many ways (IndexError, TypeError,
            # UnicodeDecodeError, ... as well as RuntimeError and EOFError); all mean "not a
            # checkpoint". Nothing is retried without weights_only.
            raise UserError(
                f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}: "
                f"{str(e).strip().splitlines()[0][:160] if str(e).strip() else 'truncated?'})"
            ) from None
    return unwrap(obj, path)


def unwrap(obj, path: str = "checkpoint") -> dict[str, torch.Tensor]:
    """`{"state_dict": sd, ...}` -> sd; `module.` path components (DataParallel, also on a
    submodule as in Places365's `features.module.0.weight`) removed."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise UserError(f"{path} does not hold a state dict (found {type(obj).__name__})")
    out = {}
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise UserError(f"{path}: entry {k!r} is a {type(v).__name__}, not a tensor; not a state dict")
        key = ".".join(p for p in k.split(".") if p != "module")
        if key in out:
            raise UserError(f"{path}: key {k!r} collides with another after removing 'module.'")
        out[key] = v
    return out


# ---- the convzoo side ----------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def target_shapes(model_name: str, num_classes: int | None = None) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the convzoo model's state dict, in order (built on the meta device)."""
    with torch.device("meta"):
        model = build(model_name, num_classes=num_classes)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@functools.lru_cache(maxsize=64)
def class_dims(model_name: str) -> dict[str, int]:
    """Keys whose shape depends on the class count (classifier, aux heads) -> which dim.

    Found by building the model for two class counts and comparing, so it holds for any
    architecture without a per-model table."""
    a, b = target_shapes(model_name, 1000), target_shapes(model_name, 7)
    out = {}
    for k in a:
        diff = [d for d, (x, y) in enumerate(zip(a[k], b[k])) if x != y]
        if diff:
            out[k] = diff[0]
    return out


def as_float32(v: torch.Tensor) -> torch.Tensor:
    """create_model returns fp32 (docs/DESIGN.md: Precision); fp16/bf16 sources are widened."""
    return v.float() if v.is_floating_point() else v


def map_by_name(
    src: dict[str, torch.Tensor],
    target: dict[str, tuple[int, ...]],
    model_name: str,
    rename: Callable[[str], str] = lambda k: k,
    drop: Callable[[str], bool] = lambda k: False,
) -> tuple[dict[str, torch.Tensor], Mapping]:
    """Map source keys onto convzoo keys by (renamed) name; every source key is used or
    dropped by `drop`, every shape must agree; a BN counter the source lacks is zero."""
    out: dict[str, torch.Tensor] = {}
    mapping: Mapping = []
    unknown: list[str] = []
    bad: list[str] = []
    for k, v in src.items():
        if drop(k):
            mapping.append((k, None, tuple(v.shape)))
            continue
        t = rename(k)
        if t not in target:
            unknown.append(k)
        elif tuple(v.shape) != target[t]:
            bad.append(f"{k}: source shape {tuple(v.shape)}, {model_name} expects {target[t]}")
        else:
            out[t] = as_float32(v)
            mapping.append((k, t, tuple(v.shape)))
    missing = [t for t in target if t not in out and not t.endswith(BN_COUNTER)]
    if bad:
        raise UserError(f"checkpoint does not fit {model_name}: {bad[0]} ({len(bad)} shape mismatches)")
    if unknown or missing:
        raise UserError(
            f"checkpoint does not fit {model_name}: {len(unknown)} unknown source keys "
            f"(e.g. {unknown[:2]}), {len(missing)} missing (e.g. {missing[:2]}); "
            f"for another implementation try --from remap"
        )
    for t in target:
        if t not in out:  # BN counters the source lacks (only used when momentum=None)
            out[t] = torch.zeros((), dtype=torch.long)
    return {t: out[t] for t in target}, mapping


def infer_num_classes(src: dict[str, torch.Tensor], model_name: str, default: int) -> int:
    """The class count a by-name checkpoint was trained for, read off its classifier."""
    found = {src[k].shape[d] for k, d in class_dims(model_name).items() if k in src and src[k].dim() > d}
    if len(found) > 1:
        raise UserError(f"checkpoint's classifier layers disagree on the class count: {sorted(found)}")
    return found.pop() if found else default


# ---- labels ------------------------------------------------------------------------------
def imagenet_labels() -> list[str]:
    """The 1,000 ILSVRC-2012 class names, index order (sorted WordNet ids)."""
    return load_labels("imagenet1k")


def labels_for(num_classes: int, dataset: str = "imagenet1k") -> list[str] | None:
    """Class names when the class count is the dataset's, else None (a fine-tuned head)."""
    if dataset == "imagenet1k" and num_classes == 1000:
        return imagenet_labels()
    return None


# ---- the entry point -----------------------------------------------------------------------
def convert(
    kind: str,
    src_path: str,
    model_name: str,
    log: Callable[[str], None] | None = None,
    model_kwargs: dict | None = None,
    preprocessing: dict | None = None,
    **options,
) -> tuple[dict[str, torch.Tensor], WeightSpec]:
    """Read `src_path` (a `kind` checkpoint) and return convzoo weights for `model_name` and
    their WeightSpec. `log`, when given, receives the key mapping (one line per key) and notes.

    `model_kwargs`: constructor options the weights need (e.g. `{"shortcut_pad": "split"}`
    for CIFAR ResNets whose option-A zero channels sit on both sides), added to those the kind
    finds itself (Caffe's pooling); they are checked against the model (it must build with them
    and hold the converted tensors) and recorded in the WeightSpec, so `create_model(weights=...)`
    builds the model they were made for.
    `preprocessing`: WeightSpec fields the publisher declares (a catalog entry); they replace the
    kind's own defaults, which then need not be looked up (timm's config needs timm installed).
    `options` are the kind's own (its `OPTIONS`, e.g. Caffe's `mean`); None values are ignored."""
    if kind not in KINDS:
        raise UserError(f"unknown --from {kind!r}; choose one of {', '.join(KINDS)}")
    name = canonical_name(model_name)
    module = importlib.import_module(f"{__name__}.{kind}")
    options = {k: v for k, v in options.items() if v is not None}
    foreign = sorted(set(options) - set(getattr(module, "OPTIONS", ())))
    if foreign:
        raise UserError(f"--{foreign[0]} does not apply to --from {kind}")
    module.check_model(name)
    # a kind with its own file format reads it itself, knowing the model (to bound the file size)
    src = module.load_source(src_path, name) if hasattr(module, "load_source") else load_checkpoint(src_path)
    if src_path.endswith(".safetensors") and hasattr(module, "recover_order"):
        src = module.recover_order(src, name, os.path.basename(src_path))  # safetensors sorts keys
    state, mapping = module.convert_state(src, name)
    num_classes = next((state[k].shape[d] for k, d in class_dims(name).items() if k in state), 1000)
    try:
        spec = module.weight_spec(
            name, num_classes, os.path.basename(src_path), log or (lambda s: None), **options
        )
    except UserError:
        if not preprocessing:
            raise
        spec = WeightSpec(model=name, num_classes=num_classes, labels=labels_for(num_classes))
    for key, value in (preprocessing or {}).items():
        setattr(spec, key, tuple(value) if isinstance(value, list) else value)
    spec.source, spec.converted_from = kind, os.path.basename(src_path)
    found = module.model_kwargs(name, state) if hasattr(module, "model_kwargs") else {}
    if model_kwargs:
        check_model_kwargs(name, num_classes, {**found, **model_kwargs}, state)
    spec.model_kwargs = {**found, **(model_kwargs or {})}
    if log:
        width = max((len(s) for s, _, _ in mapping), default=0)
        for s, t, shape in mapping:
            log(f"  {s:<{width}} -> {t or '(dropped)'}  {list(shape)}")
    return state, spec


def check_model_kwargs(name: str, num_classes: int, model_kwargs: dict, state: dict) -> None:
    """The model builds with `model_kwargs` and holds exactly the converted keys and shapes."""
    try:
        with torch.device("meta"):
            own = build(name, num_classes=num_classes, **model_kwargs).state_dict()
    except (TypeError, ValueError) as e:
        raise UserError(f"model options {model_kwargs} do not fit {name}: {str(e).splitlines()[0]}") from None
    bad = [
        k
        for k in own.keys() | state.keys()
        if k not in own or k not in state or tuple(own[k].shape) != tuple(state[k].shape)
    ]
    if bad:
        raise UserError(
            f"with options {model_kwargs}, {name} does not hold the converted weights "
            f"({len(bad)} keys differ, e.g. {min(bad)})"
        )
