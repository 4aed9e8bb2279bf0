"""The official Places365 PyTorch checkpoints -> convzoo (Zhou et al., "Places: A 10 million
Image Database for Scene Recognition", TPAMI 2017; github.com/CSAILVision/places365).

`resnet18_places365.pth.tar`, `resnet50_places365.pth.tar`, `alexnet_places365.pth.tar` are
dicts `{"epoch", "arch", "state_dict", "best_prec1"}` saved from torchvision's models trained
under DataParallel: keys are `module.conv1.weight` for the ResNets and
`features.module.0.weight` for AlexNet (only its `features` were wrapped). The loader removes
both forms of `module.`; what is left are torchvision's keys for 365 classes, so the key map
is the identity, checked key by key and shape by shape.

Preprocessing: the official training script validates with resize 256, center crop 224,
ImageNet mean/std (the demo script squashes to 224x224 instead; we keep the protocol the
published accuracy was measured with). The WeightSpec carries the 365 scene names and their
indoor (1) / outdoor (2) flags from IO_places365.txt in `extra["indoor_outdoor"]`.
"""

from __future__ import annotations

from ..data.labels import load_labels, places365_indoor_outdoor
from ..errors import UserError
from ..weights import WeightSpec
from . import infer_num_classes, map_by_name, target_shapes
from .torchvision import SHARED

OFFICIAL = ("resnet18", "resnet50", "alexnet")  # the official checkpoints convzoo has models for
NUM_CLASSES = 365


def check_model(name: str) -> None:
    if name not in SHARED:  # any torchvision architecture trained on Places365 maps the same way
        raise UserError(
            f"Places365 checkpoints exist for {', '.join(OFFICIAL)} (torchvision models); "
            f"{name!r} is not one; for another implementation use --from remap"
        )


def convert_state(src: dict, name: str):
    """Identity key map (after the loader removed `module.`), every key and shape checked."""
    n = infer_num_classes(src, name, NUM_CLASSES)
    if n != NUM_CLASSES:
        raise UserError(f"a Places365 checkpoint has {NUM_CLASSES} classes; this one has {n}")
    return map_by_name(src, target_shapes(name, n), name)


def weight_spec(name: str, num_classes: int, src_file: str, log) -> WeightSpec:
    labels, io_flags = load_labels("places365"), places365_indoor_outdoor()
    return WeightSpec(
        model=name,
        num_classes=num_classes,
        labels=labels,
        input_size=224,
        crop_size=224,
        resize_size=256,
        interpolation="bilinear",
        extra={
            "dataset": "places365",
            "indoor_outdoor": io_flags,
            "indoor_outdoor_codes": {"1": "indoor", "2": "outdoor"},
        },
    )
