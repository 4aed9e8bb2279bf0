"""Network in Network: mlpconv blocks and global average pooling instead of FC layers.

Lin, Chen & Yan 2013, "Network In Network", arXiv:1312.4400, Section 3 and Figure 2: each
mlpconv block is a convolution followed by a small MLP shared across positions (Caffe's
"cccp" layers = 1x1 convolutions), every layer with ReLU; the last mlpconv outputs one
feature map per class and a global average pool turns them into logits (no FC layer).

`nin`: the ImageNet NiN released by the authors in the Caffe model zoo, "NIN-Imagenet"
(gist d802a5849de39225bcc6 by mavenlin; readme: 59.36% top-1, center crop 224): four
mlpconv blocks conv1 96x11x11/4, conv2 256x5x5, conv3 384x3x3, conv4-1024 1024x3x3, each with
two cccp layers (the last one 1000 wide), max-pool 3/2 after the first three, dropout 0.5
after pool3, average pool 6x6 (global at 224).

`nin_cifar`: the CIFAR-10 model of the paper (Section 4.2), as in the released
definition "cifar10_nin" (gist e56253735ef32c3c296d; 89.6% accuracy, no augmentation):
mlpconv 192(5x5)-160-96, max-pool 3/2, dropout; 192(5x5)-192-192, average pool 3/2,
dropout; 192(3x3)-192-10, global average pool. Input 32x32.

Deviations:
- Caffe pools round the output size up; PyTorch's `ceil_mode=True` reproduces that (at 224
  ImageNet-NiN's pool0 gives 27x27 as in Caffe, not 26x26; CIFAR's pools give 16 and 8).
  So the released NIN-Imagenet weights (`convert --from caffe`, interop/caffe.py) need no
  constructor option: the network already computes what Caffe computes (tested against
  OpenCV's Caffe importer in tests/test_caffe.py).
- The final average pools (Caffe: 6x6/1 for ImageNet, 8x8/1 for CIFAR, i.e. global at the
  released input sizes) are AdaptiveAvgPool2d(1), so other input sizes still give logits.
- None in the architecture, but note: the released definition runs conv1 11x11/4 unpadded on a
  224 crop, so (224 - 11)/4 + 1 = 54.25 and Caffe (like PyTorch) drops the last 3 pixel
  columns; `convzoo summary nin` reports it. Kept as released (its weights assume it).
- He-normal initialisation instead of the definitions' hand-set Gaussians (std 0.01/0.05).
- `forward_features` returns the class maps of the last cccp layer (that is where the
  classifier lives in NiN); `forward_head` is the global average pool.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn

from ..layers import ZooModel
from ..registry import register

CLASSES = None  # the width of a network's last cccp layer: one map per class

# NIN-Imagenet (Caffe model zoo), one row per mlpconv block:
#   (block,   conv kernels, size, stride, pad, cccp widths,     pool after,     dropout after pool)
# fmt: off
NIN_IMAGENET = [
    ("mlpconv1",   96, 11, 4, 0, (96, 96),        ("max", 3, 2),  0.0),
    ("mlpconv2",  256,  5, 1, 2, (256, 256),      ("max", 3, 2),  0.0),
    ("mlpconv3",  384,  3, 1, 1, (384, 384),      ("max", 3, 2),  0.5),
    ("mlpconv4", 1024,  3, 1, 1, (1024, CLASSES), ("global",),    0.0),
]
# fmt: on
# cifar10_nin (Lin et al. 2013, Section 4.2), same columns.
# fmt: off
NIN_CIFAR10 = [
    ("mlpconv1", 192, 5, 1, 2, (160, 96),       ("max", 3, 2), 0.5),
    ("mlpconv2", 192, 5, 1, 2, (192, 192),      ("avg", 3, 2), 0.5),
    ("mlpconv3", 192, 3, 1, 1, (192, CLASSES),  ("global",),   0.0),
]
# fmt: on


class MLPConv(nn.Sequential):
    """conv -> ReLU -> (1x1 conv -> ReLU) per MLP layer (Figure 2: Caffe's cccp layers)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, pad: int, widths: list[int]):
        layers = [("conv", nn.Conv2d(in_ch, out_ch, kernel, stride, pad)), ("relu", nn.ReLU(inplace=True))]
        for i, w in enumerate(widths, 1):
            layers += [(f"cccp{i}", nn.Conv2d(out_ch, w, 1)), (f"relu{i}", nn.ReLU(inplace=True))]
            out_ch = w
        super().__init__(OrderedDict(layers))


class NiN(ZooModel):
    def __init__(self, spec, num_classes: int = 1000):
        super().__init__()
        layers: list[tuple[str, nn.Module]] = []
        in_ch = 3
        for i, (block, ch, k, s, p, widths, pool, drop) in enumerate(spec, 1):
            widths = [num_classes if w is CLASSES else w for w in widths]
            layers.append((block, MLPConv(in_ch, ch, k, s, p, widths)))
            if pool[0] == "max":
                layers.append((f"pool{i}", nn.MaxPool2d(pool[1], pool[2], ceil_mode=True)))
            elif pool[0] == "avg":
                layers.append((f"pool{i}", nn.AvgPool2d(pool[1], pool[2], ceil_mode=True)))
            if drop:
                layers.append((f"drop{i}", nn.Dropout(drop)))
            in_ch = widths[-1]
        self.features = nn.Sequential(OrderedDict(layers))
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self._last_block = spec[-1][0]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                assert m.bias is not None  # every conv here has a bias
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.global_pool(x), 1)

    def head_paths(self) -> list[str]:
        block = self.features.get_submodule(self._last_block)
        name, _ = list(block.named_children())[-2]  # the class-map cccp, before its ReLU
        return [f"features.{self._last_block}.{name}"]

    def paper_stages(self) -> dict[str, str]:
        rows = {n: f"features.{n}" for n, _ in self.features.named_children() if not n.startswith("drop")}
        rows["global_pool"] = "global_pool"
        return rows


@register(
    "nin",
    paper="Lin et al. 2013, arXiv:1312.4400; Caffe model zoo NIN-Imagenet",
    input_size=224,
    min_input_size=64,
)
def nin(num_classes: int = 1000, **kw) -> NiN:
    return NiN(NIN_IMAGENET, num_classes, **kw)


@register(
    "nin_cifar",
    paper="Lin et al. 2013, arXiv:1312.4400, Section 4.2 (cifar10_nin)",
    input_size=32,
    num_classes=10,
    min_input_size=32,
)
def nin_cifar(num_classes: int = 10, **kw) -> NiN:
    return NiN(NIN_CIFAR10, num_classes, **kw)
