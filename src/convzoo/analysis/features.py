"""`convzoo features`: the output of any named layer for every image of a split, globally
average-pooled over space ([N, C]; a layer with a flat output is kept as it is), saved as a
.npy file with the image list beside it (FILE.txt, one path a line, same order).

A layer is a paper row of `paper_stages()` (`conv4_x`, `inception_4e`, `fc7`) or a submodule
path (`features.conv5`, `layer3.1`).
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn as nn

from ..errors import UserError


def resolve_layer(model: nn.Module, layer: str) -> nn.Module:
    stages = model.paper_stages() if hasattr(model, "paper_stages") else {}
    path = stages.get(layer, layer)
    try:
        return model.get_submodule(path)
    except AttributeError:
        raise UserError(f"--layer {layer}: not a paper stage ({', '.join(stages)}) nor a submodule "
                        f"of {getattr(model, 'model_name', type(model).__name__)}") from None


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
            with (autocast_ctx() if autocast_ctx else contextlib.nullcontext()):
                model(x.to(device))
    finally:
        handle.remove()
    if not rows:
        raise UserError(f"--layer {layer} did not run (an auxiliary head?) or there were no images")
    return torch.cat(rows).numpy()


def features_to_file(model_name: str, weights: str, data_spec: str, layer: str, out: str,
                     split: str | None = None, batch_size: int = 64, workers: int = 2, device: str = "auto",
                     precision: str = "auto", limit: int | None = None) -> dict:
    from ..data.datasets import build_dataset, default_splits
    from ..data.transforms import eval_transform_from_spec
    from ..engine.evaluate import autocast, resolve_device
    from ..engine.finetune import eval_dataset
    from ..engine.loaders import make_loader, subset_indices
    from ..engine.report import Positions
    from ..registry import create_model

    if not out.endswith(".npy"):
        raise UserError(f"--out must be a .npy file, got {out!r}")
    from ..engine.loaders import check_limit
    from ..outputs import atomic_write, output_file
    output_file(out, "--out")
    check_limit(limit)
    dev = resolve_device(device)
    # The plain model under autocast, not eval's fast inference model: BN folding traces the
    # model into a flat graph, where a hook on an inner block (`layer3.1`) would never fire.
    model = create_model(model_name, weights=weights).to(dev).eval()
    resolve_layer(model, layer)
    spec = model.weight_spec
    split = split or default_splits(data_spec)[1]
    dataset = eval_dataset(data_spec, split, spec.extra) or build_dataset(data_spec, split, transform=None)
    positions = Positions(dataset, eval_transform_from_spec(spec, native_size=dataset.native_size),
                          subset_indices(len(dataset), limit, 0))
    order: list[int] = []

    def batches():
        for images, pos, _ in make_loader(positions, batch_size, workers, shuffle=False):
            if pos.numel():
                order.extend(pos.tolist())
                yield images

    feats = extract_features(model, layer, batches(), dev, lambda: autocast(dev, precision))
    names = os.path.splitext(out)[0] + ".txt"
    atomic_write(out, lambda f: np.save(f, feats))      # a full disk: one line, the old file kept
    atomic_write(names, lambda f: f.write("".join(positions.path(i) + "\n" for i in order).encode()))
    return {"model": model.model_name, "layer": layer, "images": len(order), "dim": int(feats.shape[1]),
            "out": out, "list": names, "skipped": len(positions) - len(order)}
