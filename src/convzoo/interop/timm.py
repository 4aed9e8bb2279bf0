"""timm weights -> convzoo: inception_v4 and inception_resnet_v2 (timm's ports of the
Google TF checkpoints), and any other architecture whose timm keys convzoo shares
(resnet*, inception_v3).

convzoo's inception_v4 and inception_resnet_v2 use timm's state-dict keys, so the key map
is the identity, checked key by key and shape by shape. timm's hub files are
`model.safetensors` or `pytorch_model.bin`; both load here.

Preprocessing: for the two Inception models it is written below (timm's pretrained cfg,
`timm.models.get_pretrained_cfg`, of `inception_v4.tf_in1k` / `inception_resnet_v2.tf_in1k`),
so converting needs no timm; for other models timm's cfg is read when timm is installed.
timm's resize is floor(input_size / crop_pct).
"""

from __future__ import annotations

import math

from ..errors import UserError
from ..weights import WeightSpec
from . import infer_num_classes, labels_for, map_by_name, target_shapes
from .torchvision import with_aux_heads

_INCEPTION = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "input_size": 299, "interpolation": "bicubic"}
# name -> (timm pretrained tag, crop_pct, preprocessing)
CFG = {
    "inception_v4": ("inception_v4.tf_in1k", 0.875, _INCEPTION),
    "inception_resnet_v2": ("inception_resnet_v2.tf_in1k", 0.8975, _INCEPTION),
}


def check_model(name: str) -> None:
    pass  # any registered model may share timm's keys; map_by_name says if it does not


def convert_state(src: dict, name: str):
    """Identity key map, every key and shape checked. timm builds inception_v3 without its
    auxiliary head, so its files lack it: it gets convzoo's initialisation (training only),
    as for torchvision's files."""
    n = infer_num_classes(src, name, 1000)
    return map_by_name(with_aux_heads(src, name, n), target_shapes(name, n), name)


def _cfg(name: str):
    if name in CFG:
        return CFG[name]
    try:
        import timm
    except ImportError:
        raise UserError(
            f"timm's preprocessing for {name} is not built in; install timm to convert it"
        ) from None
    c = timm.models.get_pretrained_cfg(name)
    if c is None:
        raise UserError(f"timm has no model {name!r}; for another implementation use --from remap")
    tag = f"{name}.{c.tag}" if getattr(c, "tag", None) else name
    return (
        tag,
        c.crop_pct,
        {
            "mean": tuple(c.mean),
            "std": tuple(c.std),
            "input_size": c.input_size[-1],
            "interpolation": c.interpolation,
        },
    )


def weight_spec(name: str, num_classes: int, src_file: str, log) -> WeightSpec:
    tag, crop_pct, pre = _cfg(name)
    size = pre["input_size"]
    return WeightSpec(
        model=name,
        num_classes=num_classes,
        labels=labels_for(num_classes),
        mean=pre["mean"],
        std=pre["std"],
        input_size=size,
        crop_size=size,
        resize_size=math.floor(size / crop_pct),
        interpolation=pre["interpolation"],
        extra={"timm_weights": tag, "crop_pct": crop_pct},
    )
