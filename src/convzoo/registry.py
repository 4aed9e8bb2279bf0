"""A small, strict model registry.

Each architecture file registers its entry points with `@register(...)`. Names are unique
(registering a name twice raises), aliases resolve to one canonical spelling, and an
unknown name fails with the closest known names. `list_models` filters with shell globs,
as timm does.

The registry is a leaf: names to builders, nothing else. It imports no weights, hub or
interop code; `factory.create_model` builds through it and loads weights on top.
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
    from . import models  # lazy: the registration cycle (a family imports register)  # noqa: F401


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


def build(name: str, num_classes: int | None = None, **overrides) -> nn.Module:
    """A registered model, freshly initialised, as an fp32 module on the CPU (or on the device
    of an enclosing `with torch.device(...)`: `meta` builds it without allocating).

    `num_classes` defaults to the model's own (`model_info(name).num_classes`); `overrides` are
    constructor options. Weights are loaded one layer up: `convzoo.create_model(weights=...)`
    (factory.py)."""
    info = model_info(name)
    model = info.fn(num_classes=num_classes or info.num_classes, **overrides)
    # ignore: torch's stub types nn.Module attributes as Tensor | Module; any value is allowed
    model.model_name = info.name  # type: ignore[assignment]
    return model
