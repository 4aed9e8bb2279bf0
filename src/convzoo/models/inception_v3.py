"""Inception-v3, in torchvision's layout (so its ImageNet weights load 1:1).

Szegedy et al. 2015, "Rethinking the Inception Architecture for Computer Vision",
arXiv:1512.00567, Table 1 (the network outline) with the modules of Figures 5, 6 and 7, the
grid-size reductions of Figure 10, and the auxiliary classifier of Figure 8 (one head, on
the last 17x17 grid). Module names and widths are those of the released model as
torchvision ports it (Conv2d_1a_3x3 ... Mixed_7c, AuxLogits, fc); `paper_stages()` maps
Table 1's rows onto them. Input 299x299.

Deviations (all shared with torchvision and the released TensorFlow model; kept for weight
compatibility):
- Stem: Table 1 lists conv 3x3/1, conv 3x3/2, conv 3x3/1 after the first pool; the released
  model has conv 1x1 (80), conv 3x3 (192), max pool 3x3/2 (same 35x35x192 output).
- Figure 5's module uses two 3x3 convolutions in place of 5x5; the released "Mixed_5x" modules
  keep a 5x5 branch next to a double-3x3 branch (torchvision's InceptionA).
- Table 1 says 5 x Figure 6 modules at 17x17 and 2 x Figure 7 at 8x8; the released model has a
  grid reduction (Mixed_6a, Mixed_7a; Figure 10) followed by 4 and 2 modules respectively.
- BatchNorm eps 0.001 (TensorFlow's), no bias in convolutions; dropout 0.5 before fc.
- `transform_input` (default False) re-maps ImageNet mean/std input to the [-1, 1] scaling of the
  ported weights; the torchvision converter sets it.
- The auxiliary head's 5x5/3 average pool is used wherever it gives the 5x5 grid (17x17 input,
  i.e. 299x299 images); on smaller inputs an adaptive pool to 5x5 (`layers.AuxPool`) lets the
  head run, so training works at the 75x75 minimum input.
- In training mode convzoo returns ModelOutput(logits, (aux,)) (torchvision: (logits, aux)).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import AuxPool, ConvBNAct, ModelOutput, ZooModel, inception_transform_input
from ..registry import register

Conv = partial(ConvBNAct, bn_eps=1e-3)  # torchvision's BasicConv2d: conv (no bias), bn, relu


class InceptionA(nn.Module):
    """35x35 module (Figure 5): 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | avg pool -> 1x1."""

    def __init__(self, in_channels: int, pool_features: int):
        super().__init__()
        self.branch1x1 = Conv(in_channels, 64, 1)
        self.branch5x5_1 = Conv(in_channels, 48, 1)
        self.branch5x5_2 = Conv(48, 64, 5)
        self.branch3x3dbl_1 = Conv(in_channels, 64, 1)
        self.branch3x3dbl_2 = Conv(64, 96, 3)
        self.branch3x3dbl_3 = Conv(96, 96, 3)
        self.branch_pool = Conv(in_channels, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch5x5_2(self.branch5x5_1(x)),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                self.branch_pool(F.avg_pool2d(x, 3, 1, 1)),
            ],
            1,
        )


class InceptionB(nn.Module):
    """35x35 -> 17x17 grid reduction (Figure 10): 3x3/2 | 1x1 -> 3x3 -> 3x3/2 | max pool 3x3/2."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = Conv(in_channels, 384, 3, 2, padding=0)
        self.branch3x3dbl_1 = Conv(in_channels, 64, 1)
        self.branch3x3dbl_2 = Conv(64, 96, 3)
        self.branch3x3dbl_3 = Conv(96, 96, 3, 2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch3x3(x),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                F.max_pool2d(x, 3, 2),
            ],
            1,
        )


class InceptionC(nn.Module):
    """17x17 module (Figure 6, n = 7): 1x1 | 1x1 -> 1x7 -> 7x1 | 1x1 -> (7x1 -> 1x7) x 2 | avg pool -> 1x1."""

    def __init__(self, in_channels: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = Conv(in_channels, 192, 1)
        self.branch7x7_1 = Conv(in_channels, c7, 1)
        self.branch7x7_2 = Conv(c7, c7, (1, 7))
        self.branch7x7_3 = Conv(c7, 192, (7, 1))
        self.branch7x7dbl_1 = Conv(in_channels, c7, 1)
        self.branch7x7dbl_2 = Conv(c7, c7, (7, 1))
        self.branch7x7dbl_3 = Conv(c7, c7, (1, 7))
        self.branch7x7dbl_4 = Conv(c7, c7, (7, 1))
        self.branch7x7dbl_5 = Conv(c7, 192, (1, 7))
        self.branch_pool = Conv(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d7 = x
        for i in range(1, 6):
            d7 = getattr(self, f"branch7x7dbl_{i}")(d7)
        return torch.cat([self.branch1x1(x), b7, d7, self.branch_pool(F.avg_pool2d(x, 3, 1, 1))], 1)


class InceptionD(nn.Module):
    """17x17 -> 8x8 grid reduction (Figure 10): 1x1 -> 3x3/2 | 1x1 -> 1x7 -> 7x1 -> 3x3/2 | max pool 3x3/2."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1 = Conv(in_channels, 192, 1)
        self.branch3x3_2 = Conv(192, 320, 3, 2, padding=0)
        self.branch7x7x3_1 = Conv(in_channels, 192, 1)
        self.branch7x7x3_2 = Conv(192, 192, (1, 7))
        self.branch7x7x3_3 = Conv(192, 192, (7, 1))
        self.branch7x7x3_4 = Conv(192, 192, 3, 2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = x
        for i in range(1, 5):
            b7 = getattr(self, f"branch7x7x3_{i}")(b7)
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, 2)], 1)


class InceptionE(nn.Module):
    """8x8 module (Figure 7): 1x1 | 1x1 -> [1x3, 3x1] | 1x1 -> 3x3 -> [1x3, 3x1] | avg pool -> 1x1."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch1x1 = Conv(in_channels, 320, 1)
        self.branch3x3_1 = Conv(in_channels, 384, 1)
        self.branch3x3_2a = Conv(384, 384, (1, 3))
        self.branch3x3_2b = Conv(384, 384, (3, 1))
        self.branch3x3dbl_1 = Conv(in_channels, 448, 1)
        self.branch3x3dbl_2 = Conv(448, 384, 3)
        self.branch3x3dbl_3a = Conv(384, 384, (1, 3))
        self.branch3x3dbl_3b = Conv(384, 384, (3, 1))
        self.branch_pool = Conv(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        d3 = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch3x3_2a(b3),
                self.branch3x3_2b(b3),
                self.branch3x3dbl_3a(d3),
                self.branch3x3dbl_3b(d3),
                self.branch_pool(F.avg_pool2d(x, 3, 1, 1)),
            ],
            1,
        )


class InceptionAux(nn.Module):
    """Figure 8 auxiliary classifier on the 17x17x768 grid: avg pool 5x5/3 -> 1x1 conv 128 ->
    5x5 conv 768 -> linear; BatchNorm in its convolutions, as in the released model."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.pool = AuxPool(5, 3, 5)
        self.conv0 = Conv(in_channels, 128, 1)
        self.conv1 = Conv(128, 768, 5, padding=0)
        # torchvision's init std for these layers (ignores: torch's stub types module attributes
        # as Tensor | Module; any value is allowed)
        self.conv1.stddev = 0.01  # type: ignore[assignment]
        self.fc = nn.Linear(768, num_classes)
        self.fc.stddev = 0.001  # type: ignore[assignment]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.conv0(self.pool(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# Table 1 of the paper as the released model builds it, in forward order:
#   (module name, block, arguments)                          Table 1 row           output at 299
LAYOUT: tuple[tuple[str, Callable[..., nn.Module], dict[str, Any]], ...] = (
    (
        "Conv2d_1a_3x3",
        Conv,
        dict(in_channels=3, out_channels=32, kernel_size=3, stride=2, padding=0),
    ),  # conv 3x3/2      149x149x32
    (
        "Conv2d_2a_3x3",
        Conv,
        dict(in_channels=32, out_channels=32, kernel_size=3, padding=0),
    ),  # conv 3x3/1      147x147x32
    (
        "Conv2d_2b_3x3",
        Conv,
        dict(in_channels=32, out_channels=64, kernel_size=3),
    ),  # conv padded     147x147x64
    ("maxpool1", nn.MaxPool2d, dict(kernel_size=3, stride=2)),  # pool 3x3/2      73x73x64
    ("Conv2d_3b_1x1", Conv, dict(in_channels=64, out_channels=80, kernel_size=1)),  # (conv 3x3/1)    73x73x80
    (
        "Conv2d_4a_3x3",
        Conv,
        dict(in_channels=80, out_channels=192, kernel_size=3, padding=0),
    ),  # (conv 3x3/2)    71x71x192
    ("maxpool2", nn.MaxPool2d, dict(kernel_size=3, stride=2)),  # (conv 3x3/1)    35x35x192
    ("Mixed_5b", InceptionA, dict(in_channels=192, pool_features=32)),  # 3 x Figure 5    35x35x256
    ("Mixed_5c", InceptionA, dict(in_channels=256, pool_features=64)),  #                 35x35x288
    ("Mixed_5d", InceptionA, dict(in_channels=288, pool_features=64)),  #                 35x35x288
    ("Mixed_6a", InceptionB, dict(in_channels=288)),  # Figure 10       17x17x768
    ("Mixed_6b", InceptionC, dict(in_channels=768, channels_7x7=128)),  # Figure 6        17x17x768
    ("Mixed_6c", InceptionC, dict(in_channels=768, channels_7x7=160)),
    ("Mixed_6d", InceptionC, dict(in_channels=768, channels_7x7=160)),
    ("Mixed_6e", InceptionC, dict(in_channels=768, channels_7x7=192)),  #                 17x17x768
    ("Mixed_7a", InceptionD, dict(in_channels=768)),  # Figure 10       8x8x1280
    ("Mixed_7b", InceptionE, dict(in_channels=1280)),  # 2 x Figure 7    8x8x2048
    ("Mixed_7c", InceptionE, dict(in_channels=2048)),  #                 8x8x2048
)
AUX_AFTER = "Mixed_6e"
# Table 1 row -> module, for `convzoo summary` and --freeze
PAPER_STAGES = {
    "conv_3x3_s2": "Conv2d_1a_3x3",
    "conv_3x3": "Conv2d_2a_3x3",
    "conv_padded_3x3": "Conv2d_2b_3x3",
    "pool_3x3_s2": "maxpool1",
    "conv_1x1": "Conv2d_3b_1x1",
    "conv_3x3_2": "Conv2d_4a_3x3",
    "pool_3x3_s2_2": "maxpool2",
    "inception_fig5_1": "Mixed_5b",
    "inception_fig5_2": "Mixed_5c",
    "inception_fig5_3": "Mixed_5d",
    "reduction_fig10_1": "Mixed_6a",
    "inception_fig6_1": "Mixed_6b",
    "inception_fig6_2": "Mixed_6c",
    "inception_fig6_3": "Mixed_6d",
    "inception_fig6_4": "Mixed_6e",
    "reduction_fig10_2": "Mixed_7a",
    "inception_fig7_1": "Mixed_7b",
    "inception_fig7_2": "Mixed_7c",
    "pool_8x8": "avgpool",
    "linear": "fc",
}


class InceptionV3(ZooModel):
    def __init__(
        self,
        num_classes: int = 1000,
        aux_logits: bool = True,
        transform_input: bool = False,
        dropout: float = 0.5,
    ):
        super().__init__()
        self.transform_input = transform_input
        for name, block, kwargs in LAYOUT:
            self.add_module(name, block(**kwargs))
            if name == AUX_AFTER:  # registered here so the state_dict order is torchvision's too
                self.AuxLogits = InceptionAux(768, num_classes) if aux_logits else None
        self._trunk = [name for name, _, _ in LAYOUT]
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(2048, num_classes)
        for m in self.modules():  # torchvision's init
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, mean=0.0, std=float(getattr(m, "stddev", 0.1)), a=-2, b=2)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _features(self, x: torch.Tensor, with_aux: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if self.transform_input:
            x = inception_transform_input(x)
        aux = []
        for name in self._trunk:
            x = getattr(self, name)(x)
            if with_aux and name == AUX_AFTER and self.AuxLogits is not None:
                aux.append(self.AuxLogits(x))
        return x, aux

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._features(x, with_aux=False)[0]

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.dropout(self.avgpool(x)), 1))

    def forward(self, x: torch.Tensor):
        x, aux = self._features(x, with_aux=self.training)
        logits = self.forward_head(x)
        return ModelOutput(logits, tuple(aux)) if aux else logits

    def head_paths(self) -> list[str]:
        return ["fc"] + (["AuxLogits.fc"] if self.AuxLogits is not None else [])

    def paper_stages(self) -> dict[str, str]:
        return dict(PAPER_STAGES)


@register(
    "inception_v3", paper="Szegedy et al. 2015, arXiv:1512.00567, Table 1", input_size=299, min_input_size=75
)
def inception_v3(num_classes: int = 1000, **kw) -> InceptionV3:
    return InceptionV3(num_classes, **kw)
