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
    fc = model.get_classifier() if hasattr(model, "get_classifier") else None
    return fc if isinstance(fc, nn.Linear) and fc.in_features == channels else None


@torch.no_grad()
def class_activation_map(model: nn.Module, x: torch.Tensor, classes: torch.Tensor | None = None):
    """(maps [B, H, W] in [0, 1], classes [B]) for the given classes (default: top-1)."""
    name = getattr(model, "model_name", type(model).__name__)
    logits = model(x).float()
    if hasattr(model, "_transform_input_hook"):   # converted torchvision weights (see weights.py)
        from ..layers import inception_transform_input
        x = inception_transform_input(x)
    feats = model.forward_features(x).float()
    fc = _final_linear(model, feats.shape[1]) if feats.dim() == 4 else None
    if fc is None or not torch.allclose(fc(feats.mean((2, 3))).float(), logits, rtol=1e-3, atol=1e-3):
        raise UserError(f"class activation maps need global average pooling then one linear layer; "
                        f"{name} is not built that way")
    classes = logits.argmax(1) if classes is None else classes
    cam = torch.einsum("bc,bchw->bhw", fc.weight.float()[classes], feats)
    cam = F.interpolate(cam[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    lo, hi = cam.amin((1, 2), keepdim=True), cam.amax((1, 2), keepdim=True)
    return (cam - lo) / (hi - lo).clamp_min(1e-12), classes


def save_overlay(image: torch.Tensor, cam: torch.Tensor, path: str | IO[bytes], alpha: float = 0.5) -> None:
    """PNG: the image ([3, H, W] in [0, 1]) blended with the map in the 'jet' colour map, written to
    a path or a binary file object (`convzoo serve` sends it inline)."""
    from matplotlib import colormaps
    from PIL import Image

    heat = torch.from_numpy(colormaps["jet"](cam.cpu().numpy())[..., :3]).permute(2, 0, 1).float()
    blend = (1 - alpha) * image.cpu().clamp(0, 1) + alpha * heat
    Image.fromarray((blend.permute(1, 2, 0).numpy() * 255).round().astype("uint8")).save(path, format="PNG")
