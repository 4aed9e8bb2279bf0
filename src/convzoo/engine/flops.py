"""What a network costs to run: its multiply-adds per image and PyTorch's rate on this CPU.

Below both `accel` (whether torch.compile repays its compile time) and `runtime` (whether a
graph runtime repays its export): each weighs the network's time estimated from these.
"""

from __future__ import annotations

import torch
import torch.nn as nn

# PyTorch's achieved rate on a convolution network per thread, an upper estimate (so the network's
# time, and what a graph saves of it, is not overestimated): ResNet-50 reached 287 GFLOP/s in bf16
# on 2 threads of an AVX512-BF16 EPYC, 84 GFLOP/s in fp32 on 2 threads of an AVX2 EPYC.
TORCH_FLOPS_PER_THREAD = {"bf16": 150e9, "fp32": 60e9}


def count_macs(model: nn.Module, size: int) -> int:
    """Multiply-accumulates of one image through `model`'s convolutions and linear layers (one
    forward pass of a single image, counted by hooks; the model is not changed)."""
    macs = 0

    def hook(mod: nn.Module, inputs, out) -> None:
        nonlocal macs
        if isinstance(out, torch.Tensor):
            if isinstance(mod, nn.Conv2d):
                k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
                macs += out.numel() * k
            else:
                macs += out.numel() * int(mod.in_features)  # type: ignore[arg-type]

    handles = [
        m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    training = model.training
    try:
        model.eval()  # auxiliary heads off, as at inference
        with torch.no_grad():
            p = next(model.parameters(), None)
            model(torch.zeros(1, 3, size, size, device=None if p is None else p.device))
    finally:
        model.train(training)
        for h in handles:
            h.remove()
    return macs
