"""`create_model`: a registered model, with weights when asked for.

The one place that ties the models (registry), the weights files (weights.py) and the catalog
(hub, which converts through interop on first use) together, as timm's factory does above its
registry. Below it nothing loads weights by name: the registry only builds, interop only maps
state dicts, so the import graph has no circle.
"""

from __future__ import annotations

import torch.nn as nn

from .errors import UserError
from .hub import resolve_weights
from .registry import build, canonical_name, model_info
from .weights import WeightSpec, check_fits, load_weights, read_spec


def create_model(
    name: str, num_classes: int | None = None, weights: str | None = None, **overrides
) -> nn.Module:
    """Build a registered model as an fp32 module on the CPU.

    `weights` is a convzoo safetensors file or a catalog name (`resnet50.tv2_in1k`, see
    `convzoo weights`: fetched and converted on first use); its WeightSpec supplies the class count when
    `num_classes` is not given and the constructor options the weights were made for
    (`model_kwargs`); a mismatch in architecture, class count or option is a UserError.
    Without `weights` this is `registry.build`.
    """
    if weights is None:
        return build(name, num_classes, **overrides)
    info = model_info(name)
    weights, spec = weights_spec(info.name, weights)
    if num_classes is None:
        num_classes = spec.num_classes
    elif num_classes != spec.num_classes:
        raise UserError(
            f"weights {weights} are for {spec.model} with {spec.num_classes} classes, "
            f"not {info.name} with {num_classes}"
        )
    for key, value in spec.model_kwargs.items():
        if key in overrides and overrides[key] != value:
            raise UserError(
                f"weights {weights} need {info.name}({key}={value!r}), not {key}={overrides[key]!r}"
            )
    overrides = {**spec.model_kwargs, **overrides}
    # the file's options, checked on the meta device before any allocation
    kwargs = {"num_classes": num_classes or info.num_classes, **overrides}
    check_fits(lambda: info.fn(**kwargs), weights, info.name, spec)
    model = build(info.name, num_classes, **overrides)
    load_weights(model, weights, spec=spec)
    return model


def weights_spec(name: str, weights: str) -> tuple[str, WeightSpec]:
    """(the file, its WeightSpec) of `weights` (a file or a catalog name, fetched on first use)
    for the registered model `name`, from the file's header (no tensor is read); UserError when
    the weights were made for another architecture."""
    info = model_info(name)
    path = resolve_weights(weights)
    spec = read_spec(path)
    if spec.model and canonical_name(spec.model) != info.name:
        raise UserError(f"weights {path} are for {spec.model}, not {info.name}")
    return path, spec
