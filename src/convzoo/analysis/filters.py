"""First-layer filters as an image grid (cf. Krizhevsky et al. 2012, Figure 3): each filter of
the first convolution with 3 input channels, min-max scaled on its own, shown as an RGB patch
(upsampled with nearest neighbours so small kernels stay visible)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..errors import UserError


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and m.in_channels // m.groups == 3:
            return name, m
    raise UserError("the model has no convolution over the 3 image channels")


def save_filter_grid(model: nn.Module, path: str, patch: int = 48) -> tuple[str, int]:
    """Write the grid PNG; returns (layer name, number of filters)."""
    from PIL import Image

    name, conv = first_conv(model)
    w = conv.weight.detach().float().cpu()  # [out, 3, k, k]
    lo, hi = w.amin((1, 2, 3), keepdim=True), w.amax((1, 2, 3), keepdim=True)
    w = (w - lo) / (hi - lo).clamp_min(1e-12)
    scale = max(1, patch // max(w.shape[-2:]))
    w = w.repeat_interleave(scale, 2).repeat_interleave(scale, 3)
    n, (h, wd) = w.shape[0], w.shape[-2:]
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = torch.ones(3, rows * (h + 2), cols * (wd + 2))
    for i in range(n):
        r, c = divmod(i, cols)
        grid[:, r * (h + 2) + 1 : r * (h + 2) + 1 + h, c * (wd + 2) + 1 : c * (wd + 2) + 1 + wd] = w[i]
    Image.fromarray((grid.permute(1, 2, 0).numpy() * 255).round().astype("uint8")).save(path, format="PNG")
    return name, n
