"""Class activation maps (Zhou et al. 2016, "Learning Deep Features for Discriminative
Localization", arXiv:1512.04150, Sec. 2): for a network whose head is global average pooling
followed by one linear layer, the score of class c is sum_k w_ck * mean_xy f_k(x, y), so
M_c(x, y) = sum_k w_ck f_k(x, y) shows where the evidence for c lies. The map of the top-1 class
is upsampled (bilinear) to the input size and min-max scaled to [0, 1]. `save_photo_overlay`
draws it over the original photo at the photo's own size, on the region the network saw, with a
map that is transparent where it is low.

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

from ..data.transforms import effective_sizes
from ..errors import UserError
from ..layers import inception_transform_input


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
MAX_OVERLAY_SIZE = 1024  # a 12 MP photo's overlay needs no more pixels than a screen shows


def crop_box(width: int, height: int, resize: int, crop: int, resize_mode: str = "shorter"):
    """(left, top, right, bottom) in a `width` x `height` photo of the centre crop the network
    sees after the eval preprocessing (shorter side or squash to `resize`, centre `crop`)."""
    if resize_mode == "squash":
        sx, sy = resize / width, resize / height
    else:
        sx = sy = resize / min(width, height)
    cw, ch = min(width, crop / sx), min(height, crop / sy)
    left, top = (width - cw) / 2, (height - ch) / 2
    return left, top, left + cw, top + ch


def photo_overlay(photo, cam: torch.Tensor, resize: int, crop: int, resize_mode: str = "shorter"):
    """(image [3, H, W] in [0, 1], map [H, W], weight [H, W], box) for drawing a map computed on
    the network's crop over the whole original `photo` (a PIL image) at its own size: the map is
    placed on the crop's region (`crop_box`); `weight` is 1 there and 0 outside."""
    import numpy as np

    rgb = torch.from_numpy(np.asarray(photo.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
    h, w = rgb.shape[-2:]
    left, top, right, bottom = crop_box(w, h, resize, crop, resize_mode)
    x0, y0, x1, y1 = (
        round(left),
        round(top),
        max(round(left) + 1, round(right)),
        max(round(top) + 1, round(bottom)),
    )
    region = F.interpolate(
        cam[None, None].float(), size=(y1 - y0, x1 - x0), mode="bilinear", align_corners=False
    )
    full, weight = torch.zeros(h, w), torch.zeros(h, w)
    full[y0:y1, x0:x1], weight[y0:y1, x0:x1] = region[0, 0], 1.0
    return rgb, full, weight, (x0, y0, x1, y1)


def save_overlay(
    image: torch.Tensor,
    cam: torch.Tensor,
    path: str | IO[bytes],
    alpha: float = 0.6,
    label: str | None = None,
    min_size: int = MIN_OVERLAY_SIZE,
    weight: torch.Tensor | None = None,
    box: tuple[int, int, int, int] | None = None,
) -> None:
    """PNG: the image ([3, H, W] in [0, 1]) under the map in the 'jet' colour map, written to a path
    or a binary file object (`convzoo serve` sends it inline). The map is transparent where it is
    low (opacity `alpha` x its value), so the photo stays visible and only the evidence is
    coloured. `weight` [H, W] limits the map to part of the image (`photo_overlay`: the crop the
    network saw); outside it the photo is dimmed and `box` is outlined. Scaled so that the short
    side is at least `min_size` and the long side at most MAX_OVERLAY_SIZE; `label` written on top."""
    from matplotlib import colormaps
    from PIL import Image, ImageDraw

    h, w = image.shape[-2:]
    scale = max(1.0, min_size / min(h, w))
    scale = min(scale, MAX_OVERLAY_SIZE / max(h, w)) if max(h, w) * scale > MAX_OVERLAY_SIZE else scale
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    weight = torch.ones(h, w) if weight is None else weight.float()

    def resized(t: torch.Tensor, mode: str) -> torch.Tensor:
        if tuple(t.shape[-2:]) == size:
            return t.float()
        return F.interpolate(t[None].float(), size=size, mode=mode, align_corners=False)[0]

    image = resized(image, "bicubic").cpu().clamp(0, 1)
    if tuple(cam.shape[-2:]) != (h, w):  # a map at the network's resolution: to the image's first
        cam = F.interpolate(cam[None, None].float(), size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    cam = resized(cam[None], "bilinear")[0].cpu().clamp(0, 1)
    weight = resized(weight[None], "bilinear")[0].cpu().clamp(0, 1)
    heat = torch.from_numpy(colormaps["jet"](cam.numpy())[..., :3]).permute(2, 0, 1).float()
    a = alpha * cam**1.5 * weight  # low evidence fades out faster than linearly
    dim = 0.55 + 0.45 * weight  # what the network did not see, darker
    blend = (1 - a) * image * dim + a * heat
    img = Image.fromarray((blend.permute(1, 2, 0).numpy() * 255).round().astype("uint8"))
    if box is not None and float(weight.min()) < 1:
        x0, y0, x1, y1 = (round(v * scale) for v in box)
        ImageDraw.Draw(img).rectangle(
            (x0, y0, x1 - 1, y1 - 1), outline=(255, 255, 255), width=max(1, img.height // 200)
        )
    if label:
        _caption(img, label)
    img.save(path, format="PNG")


def save_photo_overlay(
    photo, cam: torch.Tensor, spec, path: str | IO[bytes], label: str | None = None
) -> None:
    """The map of the network's crop drawn over the whole original `photo` (PIL) at its own size,
    using the WeightSpec's preprocessing geometry (`photo_overlay`, `save_overlay`)."""
    resize, crop = effective_sizes(spec)
    image, full, weight, box = photo_overlay(photo, cam, resize, crop, spec.resize_mode)
    save_overlay(image, full, path, label=label, weight=weight, box=box)


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
