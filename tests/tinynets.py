"""Test-only networks for the interop and export tests (never registered outside a test).

`TinyNet` is a convzoo-style model; `OtherTinyNet` is the same architecture written as
another code base would write it (different names, same layer order), for `--from remap`.
`register_tiny(monkeypatch)` puts TinyNet in the registry for one test only. Also small
helpers several test files share: `randomize_` (non-trivial BN statistics), `rel_error`,
`synthetic_folder` (a class-folder dataset of real PNGs).
"""

from collections import OrderedDict

import torch
import torch.nn as nn

from convzoo import registry
from convzoo.layers import ZooModel

TINY = "tiny_interop_net"


def _conv_bn(cin, cout, stride):  # what convzoo's ConvBNAct builds, keys conv/bn/relu
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(cin, cout, 3, stride, 1, bias=False), bn=nn.BatchNorm2d(cout), relu=nn.ReLU()
        )
    )


class TinyNet(ZooModel):
    def __init__(self, num_classes=1000, width=8):
        super().__init__()
        self.features = nn.Sequential(_conv_bn(3, width, 1), _conv_bn(width, 2 * width, 2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward_features(self, x):
        return self.features(x)

    def forward_head(self, x):
        return self.fc(torch.flatten(self.pool(x), 1))

    def reset_classifier(self, num_classes):
        self.fc = nn.Linear(self.fc.in_features, num_classes)


class OtherTinyNet(nn.Module):
    """TinyNet as another implementation names it."""

    def __init__(self, num_classes=1000, width=8):
        super().__init__()
        self.stem_conv = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.stem_norm = nn.BatchNorm2d(width)
        self.down_conv = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False)
        self.down_norm = nn.BatchNorm2d(2 * width)
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        x = torch.relu(self.stem_norm(self.stem_conv(x)))
        x = torch.relu(self.down_norm(self.down_conv(x)))
        return self.head(x.mean((2, 3)))


def register_tiny(monkeypatch, name=TINY):
    info = registry.ModelInfo(
        name,
        lambda num_classes=1000, **kw: TinyNet(num_classes, **kw),
        "test only",
        input_size=32,
        min_input_size=16,
    )
    registry._ensure_loaded()
    monkeypatch.setitem(registry._MODELS, name, info)
    from convzoo import interop

    interop.target_shapes.cache_clear()
    interop.class_dims.cache_clear()
    return name


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and non-trivial BatchNorm statistics (a fresh BN is the identity in eval,
    which would hide a swapped running_mean/running_var)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.num_batches_tracked.fill_(7)
    return model


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| over max |b|: one number for "same logits up to rounding"."""
    return ((a - b).abs().max() / b.abs().max()).item()


def synthetic_folder(root, per_class: int = 4, classes=("a", "b")):
    """`root`/{train,val}/<class>/<i>.png from the built-in synthetic images (the same images in
    both splits: tests here check plumbing, not generalisation)."""
    from convzoo.data.datasets import build_dataset

    src = build_dataset("synthetic", "val")
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                src[i][0].save(root / split / c / f"{i}.png")
    return root
