"""VGG: configurations A-E of Simonyan & Zisserman, in the paper's own notation.

Simonyan & Zisserman 2014, "Very Deep Convolutional Networks for Large-Scale Image
Recognition", arXiv:1409.1556, Table 1 (ConvNet configurations, one column each) and
Section 2.1: 3x3 (and, in C, 1x1) convolutions with stride 1 and "same" padding, each
followed by ReLU; 2x2/2 max-pooling; FC-4096, FC-4096, FC-1000; dropout 0.5 after fc6 and
fc7 (Section 3.1); A-LRN's LRN uses AlexNet's parameters (Section 2.1).

`vgg_a` ... `vgg_e`, `vgg_a_lrn` are Table 1's columns. `vgg11/13/16/19` (= A, B, D, E) and
their `_bn` variants (BatchNorm after every conv, which the paper predates) are built from
the same columns with torchvision's module keys (`features.N`, `classifier.N`), so
torchvision's weights load 1:1. The paper columns share that layout (A and `vgg11` are the
same network).

Deviations:
- An AdaptiveAvgPool2d(7) sits between pool5 and fc6 (as in torchvision). At 224x224 pool5
  is already 7x7 and it is the identity; it only lets small test inputs reach the classifier.
  The paper's dense (fully-convolutional) evaluation is not part of the module.
- `caffe_pooling=True` (set by weights converted from the VGG team's Caffe release,
  `convzoo.interop.caffe`): the 2x2/2 max-pools round their output size up as Caffe does. At 224
  (even sizes all the way down) this changes nothing; at odd sizes it keeps Caffe's last row.
- Initialisation is torchvision's (He normal for convs, N(0, 0.01) for FC layers), not the
  paper's N(0, 0.01) everywhere with deeper nets initialised from A (Section 3.1), which
  needs a trained A; the paper notes random init also works (Glorot, footnote in 3.1).
"""

from __future__ import annotations

import re
from typing import TypedDict

import torch
import torch.nn as nn

from ..layers import LRN, ZooModel
from ..registry import register

# Simonyan & Zisserman 2014, Table 1. Every "conv<k>-<n>" is followed by a ReLU (not shown
# in the table either); the table's "FC-4096, FC-4096, FC-1000, soft-max" rows are `VGG.classifier`.
# Table 1's columns as the paper prints them (a row per block of the table)
# fmt: off
CONFIGS: dict[str, list[str]] = {
    "A": ["conv3-64", "maxpool",
          "conv3-128", "maxpool",
          "conv3-256", "conv3-256", "maxpool",
          "conv3-512", "conv3-512", "maxpool",
          "conv3-512", "conv3-512", "maxpool"],
    "A-LRN": ["conv3-64", "LRN", "maxpool",
              "conv3-128", "maxpool",
              "conv3-256", "conv3-256", "maxpool",
              "conv3-512", "conv3-512", "maxpool",
              "conv3-512", "conv3-512", "maxpool"],
    "B": ["conv3-64", "conv3-64", "maxpool",
          "conv3-128", "conv3-128", "maxpool",
          "conv3-256", "conv3-256", "maxpool",
          "conv3-512", "conv3-512", "maxpool",
          "conv3-512", "conv3-512", "maxpool"],
    "C": ["conv3-64", "conv3-64", "maxpool",
          "conv3-128", "conv3-128", "maxpool",
          "conv3-256", "conv3-256", "conv1-256", "maxpool",
          "conv3-512", "conv3-512", "conv1-512", "maxpool",
          "conv3-512", "conv3-512", "conv1-512", "maxpool"],
    "D": ["conv3-64", "conv3-64", "maxpool",
          "conv3-128", "conv3-128", "maxpool",
          "conv3-256", "conv3-256", "conv3-256", "maxpool",
          "conv3-512", "conv3-512", "conv3-512", "maxpool",
          "conv3-512", "conv3-512", "conv3-512", "maxpool"],
    "E": ["conv3-64", "conv3-64", "maxpool",
          "conv3-128", "conv3-128", "maxpool",
          "conv3-256", "conv3-256", "conv3-256", "conv3-256", "maxpool",
          "conv3-512", "conv3-512", "conv3-512", "conv3-512", "maxpool",
          "conv3-512", "conv3-512", "conv3-512", "conv3-512", "maxpool"],
}
# fmt: on
FC_WIDTH = 4096
POOL5_SIZE = 7  # pool5 output at 224x224

_CONV = re.compile(r"conv(\d+)-(\d+)")


def parse_layer(token: str) -> tuple[str, int, int]:
    """One Table 1 entry -> (kind, kernel, width): "conv3-64" -> ("conv", 3, 64);
    "maxpool" -> ("maxpool", 2, 0) (2x2/2, Section 2.1); "LRN" -> ("LRN", 5, 0)."""
    m = _CONV.fullmatch(token)
    if m:
        return "conv", int(m.group(1)), int(m.group(2))
    if token == "maxpool":
        return "maxpool", 2, 0
    if token == "LRN":
        return "LRN", 5, 0
    raise ValueError(f"not a VGG Table 1 layer: {token!r} (expected conv<k>-<n>, maxpool or LRN)")


def make_features(
    column: list[str], batch_norm: bool = False, caffe_pooling: bool = False
) -> tuple[nn.Sequential, dict[str, str]]:
    """The conv part of one Table 1 column, numbered like torchvision (`features.N`), and a map
    from the paper-style row names (conv1_1, ..., norm1, pool1, ..., pool5) to those paths."""
    layers: list[nn.Module] = []
    rows: dict[str, str] = {}
    in_ch, block, conv_in_block = 3, 1, 0
    for token in column:
        kind, k, width = parse_layer(token)
        if kind == "conv":
            conv_in_block += 1
            rows[f"conv{block}_{conv_in_block}"] = f"features.{len(layers)}"
            layers.append(nn.Conv2d(in_ch, width, k, stride=1, padding=k // 2))
            if batch_norm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.ReLU(inplace=True))
            in_ch = width
        elif kind == "LRN":
            rows[f"norm{block}"] = f"features.{len(layers)}"
            layers.append(LRN(size=k, alpha=1e-4, beta=0.75, k=2.0))  # AlexNet's parameters
        else:
            rows[f"pool{block}"] = f"features.{len(layers)}"
            layers.append(nn.MaxPool2d(kernel_size=k, stride=2, ceil_mode=caffe_pooling))
            block, conv_in_block = block + 1, 0
    return nn.Sequential(*layers), rows


class VGG(ZooModel):
    def __init__(
        self,
        column: list[str],
        num_classes: int = 1000,
        batch_norm: bool = False,
        dropout: float = 0.5,
        caffe_pooling: bool = False,
    ):
        super().__init__()
        self.features, rows = make_features(column, batch_norm, caffe_pooling)
        self.avgpool = nn.AdaptiveAvgPool2d(POOL5_SIZE)
        width = parse_layer([t for t in column if t.startswith("conv")][-1])[2]
        self.classifier = nn.Sequential(
            nn.Linear(width * POOL5_SIZE * POOL5_SIZE, FC_WIDTH),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(FC_WIDTH, FC_WIDTH),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(FC_WIDTH, num_classes),
        )
        self._stages = {**rows, "fc6": "classifier.0", "fc7": "classifier.3", "fc8": "classifier.6"}
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                assert m.bias is not None  # every conv here has a bias
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(x), 1))

    def head_paths(self) -> list[str]:
        return [f"classifier.{list(self.classifier.named_children())[-1][0]}"]  # the last FC-1000

    def paper_stages(self) -> dict[str, str]:
        return dict(self._stages)


_PAPER = "Simonyan & Zisserman 2014, arXiv:1409.1556, Table 1"


class _Sizes(TypedDict):  # register()'s size options, shared by every VGG entry point
    input_size: int
    min_input_size: int


_VGG: _Sizes = {"input_size": 224, "min_input_size": 32}


@register("vgg_a", paper=f"{_PAPER} (A)", **_VGG)
def vgg_a(num_classes: int = 1000, **kw) -> VGG:
    return VGG(CONFIGS["A"], num_classes, **kw)


@register("vgg_a_lrn", paper=f"{_PAPER} (A-LRN)", **_VGG)
def vgg_a_lrn(num_classes: int = 1000, **kw) -> VGG:
    return VGG(CONFIGS["A-LRN"], num_classes, **kw)


@register("vgg_b", paper=f"{_PAPER} (B)", **_VGG)
def vgg_b(num_classes: int = 1000, **kw) -> VGG:
    return VGG(CONFIGS["B"], num_classes, **kw)


@register("vgg_c", paper=f"{_PAPER} (C)", **_VGG)
def vgg_c(num_classes: int = 1000, **kw) -> VGG:
    return VGG(CONFIGS["C"], num_classes, **kw)


@register("vgg_d", paper=f"{_PAPER} (D)", **_VGG)
def vgg_d(num_classes: int = 1000, **kw) -> VGG:
    return VGG(CONFIGS["D"], num_classes, **kw)


@register("vgg_e", paper=f"{_PAPER} (E)", **_VGG)
def vgg_e(num_classes: int = 1000, **kw) -> VGG:
    return VGG(CONFIGS["E"], num_classes, **kw)


# torchvision's names: vgg11 = A, vgg13 = B, vgg16 = D, vgg19 = E; `_bn` adds BatchNorm.
_TV = "torchvision layout"


@register("vgg11", paper=f"{_PAPER} (A, {_TV})", **_VGG)
def vgg11(num_classes: int = 1000, **kw) -> VGG:
    return VGG(CONFIGS["A"], num_classes, **kw)


@register("vgg13", paper=f"{_PAPER} (B, {_TV})", **_VGG)
def vgg13(num_classes: int = 1000, **kw) -> VGG:
    return VGG(CONFIGS["B"], num_classes, **kw)


@register("vgg16", paper=f"{_PAPER} (D, {_TV})", **_VGG)
def vgg16(num_classes: int = 1000, **kw) -> VGG:
    return VGG(CONFIGS["D"], num_classes, **kw)


@register("vgg19", paper=f"{_PAPER} (E, {_TV})", **_VGG)
def vgg19(num_classes: int = 1000, **kw) -> VGG:
    return VGG(CONFIGS["E"], num_classes, **kw)


@register("vgg11_bn", paper=f"{_PAPER} (A + BatchNorm, {_TV})", **_VGG)
def vgg11_bn(num_classes: int = 1000, **kw) -> VGG:
    return VGG(CONFIGS["A"], num_classes, batch_norm=True, **kw)


@register("vgg13_bn", paper=f"{_PAPER} (B + BatchNorm, {_TV})", **_VGG)
def vgg13_bn(num_classes: int = 1000, **kw) -> VGG:
    return VGG(CONFIGS["B"], num_classes, batch_norm=True, **kw)


@register("vgg16_bn", paper=f"{_PAPER} (D + BatchNorm, {_TV})", **_VGG)
def vgg16_bn(num_classes: int = 1000, **kw) -> VGG:
    return VGG(CONFIGS["D"], num_classes, batch_norm=True, **kw)


@register("vgg19_bn", paper=f"{_PAPER} (E + BatchNorm, {_TV})", **_VGG)
def vgg19_bn(num_classes: int = 1000, **kw) -> VGG:
    return VGG(CONFIGS["E"], num_classes, batch_norm=True, **kw)
