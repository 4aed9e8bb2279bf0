"""A small VGG for CIFAR-10 in little time: airbench's network, narrower.

VGG's design (Simonyan & Zisserman 2014, arXiv:1409.1556, Section 2.1): stacks of 3x3
convolutions, 2x2 max-pooling between stacks, the width doubling after each pool. This
network arranges it as Jordan's airbench does (Jordan 2024, "94% on CIFAR-10 in 3.29 Seconds
on a Single GPU", arXiv:2404.00498, Section 3.1; the `airbench94` network): a 2x2
convolution fixed to the whitening transform of the training images' 2x2 patches, then three
groups of two 3x3 convolutions with the pool after the first one, BatchNorm (Ioffe & Szegedy
2015) and GELU, a global max-pool and a linear classifier whose logits are scaled by 1/9.

`vgg8_cifar` (8 weight layers, VGG's way of counting), at 32x32 input:

    row      layer                                                    output
    whiten   conv 2x2, 24, no padding (fixed: init_from_data) + GELU  24 x 31 x 31
    group1   conv 3x3, 48; max-pool 2; BN; GELU; conv 3x3, 48; BN; GELU  48 x 15 x 15
    group2   conv 3x3, 96; max-pool 2; BN; GELU; conv 3x3, 96; BN; GELU  96 x 7 x 7
    group3   conv 3x3, 192; max-pool 2; BN; GELU; conv 3x3, 192; BN; GELU  192 x 3 x 3
    pool     global max-pool                                          192
    fc       linear 192 -> 10, no bias, x 1/9                         10

Deviations (from airbench94):
- Widths 48, 96, 192 instead of 64, 256, 256: a third of the compute (39 M multiply-adds per
  image against 118 M). On two CPU cores airbench94 trains at about 130 images/s, 1.6 epochs
  in 10 minutes; this one at about 540 at 32 px, 7-10 epochs with progressive resizing. Of the
  widths tried in 10-minute runs (docs/cifar-fast.md), 32/64/128 saw 13-15 epochs and
  48/128/256 7, and both ended lower.
- The whitening convolution has no bias (airbench trains one for its first 3 of ~10 epochs):
  training it makes every step compute the input gradient of group1's first convolution, the
  largest layer. Without it a CPU step is 11 % faster, and a 10-minute run was as accurate
  (docs/cifar-fast.md).
- Training-side choices of airbench that are not part of the network - Muon for the filters
  (airbench94_muon), the 64x lr for BatchNorm biases, label smoothing 0.2, alternating flips,
  reflect-padded translations, the six-view test - are settings of the `airbench` recipe, not of
  this file.
- The 2x2 pools drop the last row and column of the odd-sized maps (31 -> 15 -> 7 -> 3), as
  airbench's do; `convzoo summary vgg8_cifar` warns about each.
- Kept from airbench and not VGG: BatchNorm with its scale fixed at 1 (only the shift trains),
  eps 1e-12 and a fast running average (momentum 0.4 in PyTorch's convention, airbench's 0.6);
  GELU instead of ReLU; identity ("dirac") initialisation of the first `in_channels` filters of
  every 3x3 convolution, the others PyTorch's default.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import ZooModel
from ..registry import register

WHITEN_WIDTH, WHITEN_KERNEL = 24, 2  # both signs of the 12 eigen-directions of a 2x2x3 patch
LOGIT_SCALE = 1 / 9
WHITEN_EPS = 5e-4  # added to the patch covariance's eigenvalues: the smallest are ~1e-4
WHITEN_IMAGES = 5000  # images whose patches estimate the covariance


class ShiftOnlyBatchNorm(nn.BatchNorm2d):
    """BatchNorm whose scale stays 1: only the shift trains (airbench)."""

    def __init__(self, channels: int):
        super().__init__(channels, eps=1e-12, momentum=0.4)
        self.weight.requires_grad_(False)


def _conv3x3(cin: int, cout: int) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[: min(cin, cout)])  # the block starts near the identity
    return conv


class ConvGroup(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = _conv3x3(cin, cout)
        self.pool = nn.MaxPool2d(2)
        self.bn1 = ShiftOnlyBatchNorm(cout)
        self.conv2 = _conv3x3(cout, cout)
        self.bn2 = ShiftOnlyBatchNorm(cout)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.pool(self.conv1(x))))
        return self.act(self.bn2(self.conv2(x)))


class VGGCifar(ZooModel):
    def __init__(self, widths: tuple[int, int, int] = (48, 96, 192), num_classes: int = 10):
        super().__init__()
        # no bias: a trained one would cost every step the input gradient of group1.conv1
        self.whiten = nn.Conv2d(3, WHITEN_WIDTH, WHITEN_KERNEL, bias=False)
        self.whiten.weight.requires_grad_(False)  # set from the data (init_from_data), then fixed
        self.act = nn.GELU()
        self.group1 = ConvGroup(WHITEN_WIDTH, widths[0])
        self.group2 = ConvGroup(widths[0], widths[1])
        self.group3 = ConvGroup(widths[1], widths[2])
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(widths[2], num_classes, bias=False)

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor) -> None:
        """Set the whitening convolution from normalised training images [N, 3, H, W]: its
        filters are the eigenvectors of the 2x2-patch covariance divided by the square root of
        their eigenvalue, each with both signs (so the GELU after it keeps both halves). The
        training engine calls this on a fresh run (`train`'s model data initialisation)."""
        k = WHITEN_KERNEL
        patches = images.float().unfold(2, k, 1).unfold(3, k, 1)  # [N, 3, H', W', k, k]
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, 3 * k * k).double()
        eigenvalues, eigenvectors = torch.linalg.eigh(patches.T @ patches / len(patches))
        filters = (eigenvectors.T / torch.sqrt(eigenvalues + WHITEN_EPS)[:, None]).float()
        filters = filters.view(3 * k * k, 3, k, k)
        self.whiten.weight.copy_(torch.cat([filters, -filters]))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.whiten(x))
        return self.group3(self.group2(self.group1(x)))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(x), 1)) * LOGIT_SCALE


_PAPER = "Jordan 2024, arXiv:2404.00498, Sec. 3.1 (airbench94), widths 48/96/192"


@register(paper=_PAPER, input_size=32, num_classes=10, min_input_size=16)
def vgg8_cifar(num_classes: int = 10, **kw) -> VGGCifar:
    return VGGCifar((48, 96, 192), num_classes=num_classes, **kw)
