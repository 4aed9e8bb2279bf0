"""`convzoo features`: the output of any named layer for every image of a split, globally
average-pooled over space ([N, C]; a layer with a flat output is kept as it is), saved as a
.npy file with the image list beside it (FILE.txt, one path a line, same order).

A layer is a paper row of `paper_stages()` (`conv4_x`, `inception_4e`, `fc7`) or a submodule
path (`features.conv5`, `layer3.1`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from ..errors import UserError
from ..layers import ZooModel


def resolve_layer(model: nn.Module, layer: str) -> nn.Module:
    stages = model.paper_stages() if isinstance(model, ZooModel) else {}
    path = stages.get(layer, layer)
    try:
        return model.get_submodule(path)
    except AttributeError:
        raise UserError(
            f"--layer {layer}: not a paper stage ({', '.join(stages)}) nor a submodule "
            f"of {getattr(model, 'model_name', type(model).__name__)}"
        ) from None


@torch.no_grad()
def extract_features(model: nn.Module, layer: str, batches, device="cpu", autocast_ctx=None) -> np.ndarray:
    """Pooled outputs of `layer` for every image tensor batch in `batches`: float32 [N, C]."""
    import contextlib

    module, rows = resolve_layer(model, layer), []

    def hook(_m, _i, out):
        out = out[0] if isinstance(out, (tuple, list)) else out
        rows.append((out.float().mean((2, 3)) if out.dim() == 4 else out.float().flatten(1)).cpu())

    handle = module.register_forward_hook(hook)
    model.eval()
    try:
        for x in batches:
            with autocast_ctx() if autocast_ctx else contextlib.nullcontext():
                model(x.to(device))
    finally:
        handle.remove()
    if not rows:
        raise UserError(f"--layer {layer} did not run (an auxiliary head?) or there were no images")
    return torch.cat(rows).numpy()
