"""BN-Inception (Inception-v2): GoogLeNet with Batch Normalization.

Ioffe & Szegedy 2015, "Batch Normalization: Accelerating Deep Network Training by Reducing
Internal Covariate Shift", arXiv:1502.03167, Appendix, Figure 5 (transcribed in `FIGURE5`).
Changes from GoogLeNet that the figure shows: BatchNorm after every convolution (before its
ReLU; no LRN), the 5x5 convolutions replaced by two consecutive 3x3 convolutions ("double
#3x3"), three 28x28 modules instead of two, average or max pooling inside each module
("avg + 32", "max + pass through"), and no pooling layers between Inception modules: modules
3c and 4e reduce the grid themselves with stride-2 convolutions and a stride-2 max pool whose
output is passed through unprojected.

Deviations:
- No auxiliary heads: Figure 5 lists none, so `bn_inception` returns plain logits in training
  mode too (GoogLeNet's Section 5 heads could be added after 4a/4d if a recipe wants them).
- Figure 5 prints inception (3c)'s output as 28x28x576; with stride 2 it is 14x14x576 (the next
  row, 4a, takes 14x14 input), which is what this code produces.
- The stem's first convolution is a plain 7x7/2 convolution as the table reads (some
  reimplementations, e.g. TF-slim, make it depthwise separable).
- Pools and stride-2 convolutions use "same" padding (3x3/2 pad 1): 224 -> 112 -> 56 -> 28 ->
  14 -> 7 as in the table, without ceil mode. The final 7x7 average pool is a global average
  pool (identical at 224). BatchNorm eps is PyTorch's default 1e-5 (the paper gives none).
- No dropout before the classifier (Section 4.2.1 "Remove Dropout").
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import ConvBNAct, ZooModel
from ..registry import register

# Ioffe & Szegedy 2015, Figure 5 (at 224x224). Stem rows:
#   convolution 7x7/2 -> 112x112x64;  max pool 3x3/2 -> 56x56x64;
#   convolution 3x3/1, #3x3 reduce 64, #3x3 192 -> 56x56x192;  max pool 3x3/2 -> 28x28x192
# Pool+proj: ("avg" | "max", projection width, or None for "pass through").
# fmt: off
FIGURE5: tuple[tuple[str, int, int, int, int, int, int, tuple[str, int | None]], ...] = (
    # type           stride  #1x1  #3x3 reduce  #3x3  double #3x3 reduce  double #3x3  Pool+proj    output
    ("inception_3a",   1,     64,      64,        64,         64,             96,  ("avg", 32)),   # 28x28x256
    ("inception_3b",   1,     64,      64,        96,         64,             96,  ("avg", 64)),   # 28x28x320
    ("inception_3c",   2,      0,     128,       160,         64,             96,  ("max", None)), # 14x14x576
    ("inception_4a",   1,    224,      64,        96,         96,            128,  ("avg", 128)),  # 14x14x576
    ("inception_4b",   1,    192,      96,       128,         96,            128,  ("avg", 128)),  # 14x14x576
    ("inception_4c",   1,    160,     128,       160,        128,            160,  ("avg", 128)),  # 14x14x608
    ("inception_4d",   1,     96,     128,       192,        160,            192,  ("avg", 128)),  # 14x14x608
    ("inception_4e",   2,      0,     128,       192,        192,            256,  ("max", None)), # 7x7x1056
    ("inception_5a",   1,    352,     192,       320,        160,            224,  ("avg", 128)),  # 7x7x1024
    ("inception_5b",   1,    352,     192,       320,        192,            224,  ("max", 128)),  # 7x7x1024
)
# fmt: on
STEM_CHANNELS = 192


class InceptionBN(nn.Module):
    """Figure 5's module: [1x1] | 1x1 -> 3x3 | 1x1 -> 3x3 -> 3x3 | pool (-> 1x1 proj).

    With stride 2 (3c, 4e) there is no 1x1 branch, the last convolution of both 3x3 branches
    and the 3x3 max pool have stride 2, and the pooled input passes through unprojected.
    """

    def __init__(
        self,
        in_channels: int,
        stride: int,
        n1x1: int,
        n3x3red: int,
        n3x3: int,
        n3x3dblred: int,
        n3x3dbl: int,
        pool_proj: tuple[str, int | None],
    ):
        super().__init__()
        pool_kind, proj = pool_proj
        self.branch_1x1 = ConvBNAct(in_channels, n1x1, 1) if n1x1 else None
        self.branch_3x3 = nn.Sequential(
            ConvBNAct(in_channels, n3x3red, 1), ConvBNAct(n3x3red, n3x3, 3, stride)
        )
        self.branch_double_3x3 = nn.Sequential(
            ConvBNAct(in_channels, n3x3dblred, 1),
            ConvBNAct(n3x3dblred, n3x3dbl, 3),
            ConvBNAct(n3x3dbl, n3x3dbl, 3, stride),
        )
        pool = (nn.AvgPool2d if pool_kind == "avg" else nn.MaxPool2d)(3, stride, padding=1)
        self.branch_pool = nn.Sequential(pool, ConvBNAct(in_channels, proj, 1)) if proj else pool
        self.out_channels = n1x1 + n3x3 + n3x3dbl + (proj or in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.branch_3x3(x), self.branch_double_3x3(x), self.branch_pool(x)]
        if self.branch_1x1 is not None:
            branches.insert(0, self.branch_1x1(x))
        return torch.cat(branches, 1)


class BNInception(ZooModel):
    """Stem, the ten modules of Figure 5, global average pool, linear."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.conv1 = ConvBNAct(3, 64, 7, 2)
        self.pool1 = nn.MaxPool2d(3, 2, padding=1)
        self.conv2_reduce = ConvBNAct(64, 64, 1)
        self.conv2 = ConvBNAct(64, STEM_CHANNELS, 3)
        self.pool2 = nn.MaxPool2d(3, 2, padding=1)
        channels = STEM_CHANNELS
        for row in FIGURE5:
            block = InceptionBN(channels, *row[1:])
            self.add_module(row[0], block)
            channels = block.out_channels
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for name, module in self.named_children():
            if name in ("avg_pool", "fc"):
                break
            x = module(x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avg_pool(x), 1))


@register(
    "bn_inception",
    paper="Ioffe & Szegedy 2015, arXiv:1502.03167, Figure 5",
    input_size=224,
    aliases=("inception_v2",),
    min_input_size=32,
)
def bn_inception(num_classes: int = 1000, **kw) -> BNInception:
    return BNInception(num_classes, **kw)
