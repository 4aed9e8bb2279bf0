"""Class activation maps (Zhou et al. 2016, "Learning Deep Features for Discriminative
Localization", arXiv:1512.04150, Sec. 2): for a network whose head is global average pooling
followed by one linear layer, the score of class c is sum_k w_ck * mean_xy f_k(x, y), so
M_c(x, y) = sum_k w_ck f_k(x, y) shows where the evidence for c lies. The map of the top-1 class
is upsampled (bilinear) to the input size and min-max scaled to [0, 1].

Works for any model with `forward_features` (last conv maps [B, C, h, w]) whose declared
classifier (`get_classifier`) is a Linear with C inputs; the GAP + linear form is
checked numerically against the model's own logits, so a network that is not of that form (VGG,
AlexNet: FC layers over a grid) is refused rather than given a wrong map. Deviation: NiN, whose
class maps are convolutions without a linear layer, is refused too.
"""

from __future__ import annotations

from typing import IO

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UserError


def _final_linear(model: nn.Module, channels: int) -> nn.Linear | None:
    """The classifier the model declares (`get_classifier`), if it is a Linear over `channels`."""
    declared = getattr(model, "get_classifier", None)  # ZooModel's contract, or a duck-typed model
    fc = declared() if callable(declared) else None
    return fc if isinstance(fc, nn.Linear) and fc.in_features == channels else None


@torch.no_grad()
def class_activation_map(model: nn.Module, x: torch.Tensor, classes: torch.Tensor | None = None):
    """(maps [B, H, W] in [0, 1], classes [B]) for the given classes (default: top-1)."""
    name = getattr(model, "model_name", type(model).__name__)
    logits = model(x).float()
    if hasattr(model, "_transform_input_hook"):  # converted torchvision weights (see weights.py)
        from ..layers import inception_transform_input

        x = inception_transform_input(x)
    feats = getattr(model, "forward_features")(x).float()  # noqa: B009 - duck-typed (ZooModel or not)
    fc = _final_linear(model, feats.shape[1]) if feats.dim() == 4 else None
    if fc is None or not torch.allclose(fc(feats.mean((2, 3))).float(), logits, rtol=1e-3, atol=1e-3):
        raise UserError(
            f"class activation maps need global average pooling then one linear layer; "
            f"{name} is not built that way"
        )
    classes = logits.argmax(1) if classes is None else classes
    cam = torch.einsum("bc,bchw->bhw", fc.weight.float()[classes], feats)
    cam = F.interpolate(cam[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    lo, hi = cam.amin((1, 2), keepdim=True), cam.amax((1, 2), keepdim=True)
    return (cam - lo) / (hi - lo).clamp_min(1e-12), classes


MIN_OVERLAY_SIZE = 224  # a 32x32 CIFAR overlay is unreadable: small images are scaled up to this


def save_overlay(
    image: torch.Tensor,
    cam: torch.Tensor,
    path: str | IO[bytes],
    alpha: float = 0.5,
    label: str | None = None,
    min_size: int = MIN_OVERLAY_SIZE,
) -> None:
    """PNG: the image ([3, H, W] in [0, 1]) blended with the map in the 'jet' colour map, scaled
    so that its short side is at least `min_size`, with `label` written on it; written to a path or
    a binary file object (`convzoo serve` sends it inline)."""
    from matplotlib import colormaps
    from PIL import Image

    h, w = image.shape[-2:]
    scale = max(1.0, min_size / min(h, w))
    size = (round(h * scale), round(w * scale))
    if size != (h, w):
        image = F.interpolate(image[None].float(), size=size, mode="bicubic", align_corners=False)[0]
    if tuple(cam.shape[-2:]) != size:
        cam = F.interpolate(cam[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0]
    heat = torch.from_numpy(colormaps["jet"](cam.cpu().clamp(0, 1).numpy())[..., :3]).permute(2, 0, 1).float()
    blend = (1 - alpha) * image.cpu().clamp(0, 1) + alpha * heat
    img = Image.fromarray((blend.permute(1, 2, 0).numpy() * 255).round().astype("uint8"))
    if label:
        _caption(img, label)
    img.save(path, format="PNG")


def _caption(img, text: str) -> None:
    """`text` on a dark strip at the top of the image (PIL's built-in font, sized to the image)."""
    from PIL import ImageDraw, ImageFont

    size = max(12, img.height // 16)
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        font = ImageFont.load_default()
    draw = ImageDraw.Draw(img)
    box = draw.textbbox((4, 2), text, font=font)
    draw.rectangle((0, 0, img.width, box[3] + 4), fill=(0, 0, 0))
    draw.text((4, 2), text, fill=(255, 255, 255), font=font)
