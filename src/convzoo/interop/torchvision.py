"""torchvision's published ImageNet weights -> convzoo.

The torchvision-compatible convzoo models use torchvision's state-dict keys (docs/DESIGN.md: Model
names), so the key map is the identity, checked key by key and shape by shape.

Preprocessing is read from torchvision's own weight enums (`get_model_weights`), so it
cannot drift from what torchvision published: the entry whose file name matches the source
(e.g. `resnet50-11ad3fa6.pth` is IMAGENET1K_V2, resize 232) or IMAGENET1K_V1 otherwise.

torchvision's pretrained googlenet and inception_v3 set `transform_input=True`: they take
ImageNet-normalised input and re-normalise it inside the model to the (x - 0.5) / 0.5 the
original Google weights were trained with. The WeightSpec records that in
`extra["transform_input"]`, and `create_model(weights=...)` applies it (weights.py), so the
converted model takes the same input and gives the same logits as torchvision's.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from ..errors import UserError
from ..registry import build
from ..weights import WeightSpec
from . import infer_num_classes, labels_for, map_by_name, target_shapes

# the architectures torchvision and convzoo share, with the same keys
SHARED = (
    "alexnet",
    *(f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")),
    "googlenet",
    "inception_v3",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
)
TRANSFORM_INPUT = ("googlenet", "inception_v3")  # pretrained weights expect it (see docstring)
# torchvision drops these auxiliary heads when it builds a pretrained model with the default
# aux_logits=False, so a state_dict saved from such a model lacks them (the published files have them)
AUX_HEADS = {"googlenet": ("aux1.", "aux2."), "inception_v3": ("AuxLogits.",)}


def check_model(name: str) -> None:
    if name not in SHARED:
        raise UserError(
            f"torchvision has no {name!r} with convzoo's keys (shared: {', '.join(SHARED)}); "
            f"for another implementation use --from remap"
        )


def convert_state(src: dict, name: str):
    """Identity key map, every key and shape checked. Auxiliary heads missing altogether
    (see AUX_HEADS) get convzoo's initialisation, seeded; they only run in training."""
    num_classes = infer_num_classes(src, name, 1000)
    target = target_shapes(name, num_classes)
    return map_by_name(with_aux_heads(src, name, num_classes), target, name)


def with_aux_heads(src: dict, name: str, num_classes: int) -> dict:
    """`src`, plus freshly initialised auxiliary heads when it has none at all (AUX_HEADS)."""
    aux = AUX_HEADS.get(name, ())
    if aux and not any(k.startswith(aux) for k in src):
        src = {**src, **_fresh(name, num_classes, aux)}
    return src


def _fresh(name: str, num_classes: int, prefixes: tuple[str, ...]) -> dict:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        state = build(name, num_classes=num_classes).state_dict()
    return {k: v for k, v in state.items() if k.startswith(prefixes)}


def weight_spec(name: str, num_classes: int, src_file: str, log) -> WeightSpec:
    from torchvision.models import get_model_weights

    entries = [w for w in get_model_weights(name) if "IMAGENET1K" in w.name]
    match = [w for w in entries if os.path.basename(w.url) == src_file]
    w = match[0] if match else next(w for w in entries if w.name == "IMAGENET1K_V1")
    if not match:
        log(
            f"note: {src_file} is not a published torchvision file name; using the preprocessing of "
            f"{name} {w.name} (others: {', '.join(e.name for e in entries if e is not w) or 'none'})"
        )
    t = w.transforms()
    # No published accuracy here: it is a property of torchvision's own file, not of whatever file
    # is being converted (a random or fine-tuned one would claim it too); the weights catalog
    # records published figures for the files it knows.
    extra: dict[str, Any] = {"torchvision_weights": f"{name}.{w.name}"}
    if name in TRANSFORM_INPUT:
        extra["transform_input"] = True
        extra["aux_heads"] = "as in the checkpoint if it has them, else freshly initialised (training only)"
    return WeightSpec(
        model=name,
        num_classes=num_classes,
        labels=labels_for(num_classes),
        mean=tuple(t.mean),
        std=tuple(t.std),
        input_size=t.crop_size[0],
        crop_size=t.crop_size[0],
        resize_size=t.resize_size[0],
        interpolation=t.interpolation.value,
        extra=extra,
    )
