"""A small, strict model registry.

Each architecture file registers its entry points with `@register(...)`. Names are unique
(registering a name twice raises), aliases resolve to one canonical spelling, and an
unknown name fails with the closest known names. `list_models` filters with shell globs,
as timm does.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field

import torch.nn as nn

from .errors import UserError


@dataclass(frozen=True)
class ModelInfo:
    name: str
    fn: Callable[..., nn.Module]
    paper: str  # short citation, e.g. "He et al. 2015, arXiv:1512.03385, Table 1"
    input_size: int  # the paper's input resolution (square)
    num_classes: int = 1000
    aliases: tuple[str, ...] = field(default=())
    min_input_size: int = 32  # smallest square input the network runs on (tests use it)


_MODELS: dict[str, ModelInfo] = {}
_ALIASES: dict[str, str] = {}


def register(
    name: str | None = None,
    *,
    paper: str,
    input_size: int,
    num_classes: int = 1000,
    aliases: tuple[str, ...] = (),
    min_input_size: int = 32,
):
    """Decorator registering a model entry point `fn(num_classes=..., **overrides) -> nn.Module`."""

    def deco(fn):
        canonical = name or fn.__name__
        for n in (canonical, *aliases):
            if n in _MODELS or n in _ALIASES:
                raise ValueError(f"model name {n!r} is registered twice")
        _MODELS[canonical] = ModelInfo(
            canonical, fn, paper, input_size, num_classes, tuple(aliases), min_input_size
        )
        for a in aliases:
            _ALIASES[a] = canonical
        return fn

    return deco


def _ensure_loaded() -> None:
    from . import models  # noqa: F401  (importing the package registers every family)


def canonical_name(name: str) -> str:
    _ensure_loaded()
    if name in _MODELS:
        return name
    if name in _ALIASES:
        return _ALIASES[name]
    close = difflib.get_close_matches(name, list(_MODELS) + list(_ALIASES), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `convzoo list`"
    raise UserError(f"unknown model {name!r}{hint}")


def model_info(name: str) -> ModelInfo:
    return _MODELS[canonical_name(name)]


def list_models(pattern: str = "*") -> list[str]:
    """Canonical names matching a shell glob (`resnext*`, `*_cifar`), sorted."""
    _ensure_loaded()
    return sorted(n for n in _MODELS if fnmatch.fnmatchcase(n, pattern))


def create_model(
    name: str, num_classes: int | None = None, weights: str | None = None, **overrides
) -> nn.Module:
    """Build a registered model as an fp32 module on the CPU.

    `weights` is a convzoo safetensors file or a catalog name (`resnet50.tv2_in1k`, see
    `convzoo weights`: fetched and converted on first use); its WeightSpec supplies the class count when
    `num_classes` is not given and the constructor options the weights were made for
    (`model_kwargs`); a mismatch in architecture, class count or option is a UserError.
    """
    info = model_info(name)
    spec = None
    if weights is not None:
        from .hub import resolve_weights
        from .weights import read_spec

        weights = resolve_weights(weights)
        spec = read_spec(weights)
        if spec.model and canonical_name(spec.model) != info.name:
            raise UserError(f"weights {weights} are for {spec.model}, not {info.name}")
        if num_classes is None:
            num_classes = spec.num_classes
        elif num_classes != spec.num_classes:
            raise UserError(
                f"weights {weights} are for {spec.model} with {spec.num_classes} classes, "
                f"not {info.name} with {num_classes}"
            )
    if spec is not None:
        for key, value in spec.model_kwargs.items():
            if key in overrides and overrides[key] != value:
                raise UserError(
                    f"weights {weights} need {info.name}({key}={value!r}), not {key}={overrides[key]!r}"
                )
        overrides = {**spec.model_kwargs, **overrides}
    if weights is not None:  # the file's options, checked on the meta device before any allocation
        from .weights import check_fits

        kwargs = {"num_classes": num_classes or info.num_classes, **overrides}
        check_fits(lambda: info.fn(**kwargs), weights, info.name, spec)  # type: ignore[arg-type]
    model = info.fn(num_classes=num_classes or info.num_classes, **overrides)
    # ignore: torch's stub types nn.Module attributes as Tensor | Module; any value is allowed
    model.model_name = info.name  # type: ignore[assignment]
    if weights is not None:
        from .weights import load_weights

        load_weights(model, weights, spec=spec)
    return model
