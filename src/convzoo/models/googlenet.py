"""GoogLeNet (Inception-v1): the paper's network and torchvision's port of it.

Szegedy et al. 2014, "Going Deeper with Convolutions", arXiv:1409.4842.
`TABLE1` below transcribes Table 1 (Inception widths in its column order), the stem follows
Figure 3 (conv 7x7/2 -> max pool 3x3/2 -> LocalRespNorm -> conv 1x1 -> conv 3x3 ->
LocalRespNorm -> max pool 3x3/2), and the auxiliary classifiers follow Section 5: average pool
5x5/3 (4x4x512 after inception_4a, 4x4x528 after inception_4d), 1x1 conv with 128 filters +
ReLU, FC 1024 + ReLU, dropout 70%, linear classifier; used only in training (weighted by 0.3 in
the loss, which is the training recipe's business). Main head: average pool 7x7 -> dropout 40% ->
linear.

`googlenet_original`: the paper as written - no BatchNorm, true 5x5 convolutions, LRN, ReLU
after every convolution, two auxiliary heads, dropout 0.4. Modules are named as Table 1 / the
Caffe reference names them (conv1, pool1, norm1, conv2_reduce, conv2, norm2, pool2,
inception_3a ... inception_5b, pool3, pool4).

`googlenet`: torchvision's GoogLeNet, with its exact state_dict keys and shapes, so
`load_state_dict(torchvision.models.googlenet(aux_logits=True).state_dict())` works and the
eval-mode outputs are the same. It keeps torchvision's documented deviations from the paper:
BatchNorm (eps 0.001) after every convolution and no LRN, a 3x3 (not 5x5) convolution in the
"5x5" branch (a known bug of the port, kept for weight compatibility), ceil-mode max pools with
a 2x2/2 pool4, adaptive 4x4 pooling in the auxiliary heads, dropout 0.2, and the optional
`transform_input` (ImageNet mean/std input -> the [-1, 1] scaling of the ported weights).
In training mode torchvision returns (logits, aux2, aux1); convzoo returns
ModelOutput(logits, (aux1, aux2)), shallowest first, as everywhere in convzoo.

Deviations (googlenet_original):
- The LRN parameters are not in the paper; those of the Caffe reference model (bvlc_googlenet)
  are used: size 5, alpha 1e-4 in Caffe's alpha/n form (paper form alpha 2e-5), beta 0.75, k 1.
- Max pools use "same" padding (Figure 3's "(S)"): 3x3/2 pad 1, giving Table 1's sizes
  112 -> 56 -> 28 -> 14 -> 7 without ceil mode.
- `caffe_pooling=True` (set by weights converted from BVLC's Caffe release,
  `convzoo.interop.caffe`): the four stride-2 max pools are Caffe's 3x3/2 without padding,
  rounding the output size up (ceil mode). Same sizes as "same" padding (112 -> 56 -> 28 -> 14
  -> 7) but windows shifted by one pixel; the released weights were trained with them.
- The final 7x7 average pool is an adaptive (global) average pool: identical at 224x224.
- Auxiliary heads: the 5x5/3 average pool as in the paper at 224x224; at other input sizes an
  adaptive pool to 4x4 (`layers.AuxPool`) so small test inputs run.
- Initialisation is not given in the paper: Xavier-uniform weights and 0.2 biases, after the
  Caffe reference model.
- Table 1's printed params/ops columns do not all follow from its printed widths
  (inception_4c, inception_5a, conv1; see src/convzoo/data/reference/paper_numbers.json "googlenet_table1"):
  the widths are transcribed, so the model matches the derived columns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

import torch
import torch.nn as nn

from ..layers import LRN, AuxPool, ConvBNAct, ModelOutput, ZooModel, inception_transform_input
from ..registry import register

# Szegedy et al. 2014, Table 1 (at 224x224). The stem rows above inception_3a are built by
# each variant's `stem` (they differ in naming and normalisation):
#   convolution 7x7/2 -> 112x112x64;  max pool 3x3/2 -> 56x56x64;
#   convolution 3x3/1, #3x3 reduce 64, #3x3 192 -> 56x56x192;  max pool 3x3/2 -> 28x28x192
# fmt: off
TABLE1 = (
    # type / name     #1x1  #3x3 reduce  #3x3  #5x5 reduce  #5x5  pool proj     output size
    ("inception_3a",   64,      96,      128,      16,       32,      32),   # 28x28x256
    ("inception_3b",  128,     128,      192,      32,       96,      64),   # 28x28x480
    ("pool3",),                                                              # 14x14x480 max pool 3x3/2
    ("inception_4a",  192,      96,      208,      16,       48,      64),   # 14x14x512
    ("inception_4b",  160,     112,      224,      24,       64,      64),   # 14x14x512
    ("inception_4c",  128,     128,      256,      24,       64,      64),   # 14x14x512
    ("inception_4d",  112,     144,      288,      32,       64,      64),   # 14x14x528
    ("inception_4e",  256,     160,      320,      32,      128,     128),   # 14x14x832
    ("pool4",),                                                              # 7x7x832 max pool 3x3/2
    ("inception_5a",  256,     160,      320,      32,      128,     128),   # 7x7x832
    ("inception_5b",  384,     192,      384,      48,      128,     128),   # 7x7x1024
)
# fmt: on
STEM_CHANNELS = 192  # output of pool2
AUX_AFTER = ("inception_4a", "inception_4d")  # Section 5: where the two auxiliary heads sit
AUX_GRID, AUX_CONV, AUX_FC = 4, 128, 1024  # Section 5: 4x4 pooled grid, 1x1 conv 128, FC 1024


class Inception(nn.Module):
    """Figure 2(b): 1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 | 3x3 max pool -> 1x1, concatenated.

    `conv(c_in, c_out, kernel_size)` makes one convolution with its normalisation and ReLU;
    `k5` is the kernel of the "5x5" branch (3 in torchvision's port). Attribute names are
    torchvision's (branch1..branch4) so that one class serves both variants.
    """

    def __init__(
        self,
        in_channels: int,
        n1x1: int,
        n3x3red: int,
        n3x3: int,
        n5x5red: int,
        n5x5: int,
        pool_proj: int,
        *,
        conv: Callable[..., nn.Module],
        k5: int = 5,
    ):
        super().__init__()
        self.branch1 = conv(in_channels, n1x1, 1)
        self.branch2 = nn.Sequential(conv(in_channels, n3x3red, 1), conv(n3x3red, n3x3, 3))
        self.branch3 = nn.Sequential(conv(in_channels, n5x5red, 1), conv(n5x5red, n5x5, k5))
        # stride 1: ceil_mode changes nothing; torchvision sets it, so it is kept for both
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True), conv(in_channels, pool_proj, 1)
        )
        self.out_channels = n1x1 + n3x3 + n5x5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    """Section 5 auxiliary classifier: avg pool -> 1x1 conv 128 + ReLU -> FC 1024 + ReLU ->
    dropout 0.7 -> linear. Keys (conv, fc1, fc2) are torchvision's."""

    def __init__(
        self, in_channels: int, num_classes: int, *, conv: Callable[..., nn.Module], pool: nn.Module
    ):
        super().__init__()
        self.pool = pool
        self.conv = conv(in_channels, AUX_CONV, 1)
        self.fc1 = nn.Linear(AUX_CONV * AUX_GRID * AUX_GRID, AUX_FC)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(0.7)
        self.fc2 = nn.Linear(AUX_FC, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.conv(self.pool(x)), 1)
        return self.fc2(self.dropout(self.relu(self.fc1(x))))


@dataclass(frozen=True)
class Variant:
    """What differs between the paper's network and torchvision's port."""

    stem: Callable[[Callable[..., nn.Module]], list[tuple[str, str, nn.Module]]]
    conv: Callable[..., nn.Module]  # conv(c_in, c_out, kernel_size, stride=1) with norm + ReLU
    k5: int  # kernel of the "5x5" branch
    pools: dict[str, Callable[[], nn.Module]]  # Table 1 pool row -> its max pool
    name: Callable[[str], str]  # Table 1 row name -> module name
    aux_pool: Callable[[], nn.Module]
    dropout: float
    init: Callable[[nn.Module], None]


_SAME_POOL = partial(nn.MaxPool2d, 3, 2, padding=1)  # Figure 3's "(S)" 3x3/2 max pool


def _paper_stem(conv, pool=_SAME_POOL) -> list[tuple[str, str, nn.Module]]:
    lrn = partial(LRN, size=5, alpha=1e-4 / 5, beta=0.75, k=1.0)  # Caffe's bvlc_googlenet values
    # (paper row, module name, module)
    return [
        ("conv1", "conv1", conv(3, 64, 7, 2)),
        ("pool1", "pool1", pool()),
        ("norm1", "norm1", lrn()),
        ("conv2_reduce", "conv2_reduce", conv(64, 64, 1)),
        ("conv2", "conv2", conv(64, STEM_CHANNELS, 3)),
        ("norm2", "norm2", lrn()),
        ("pool2", "pool2", pool()),
    ]


def _torchvision_stem(conv) -> list[tuple[str, str, nn.Module]]:
    # (paper row, torchvision's module name, module): torchvision numbers the convs 1, 2, 3
    return [
        ("conv1", "conv1", conv(3, 64, 7, 2)),
        ("pool1", "maxpool1", nn.MaxPool2d(3, 2, ceil_mode=True)),
        ("conv2_reduce", "conv2", conv(64, 64, 1)),
        ("conv2", "conv3", conv(64, STEM_CHANNELS, 3)),
        ("pool2", "maxpool2", nn.MaxPool2d(3, 2, ceil_mode=True)),
    ]


def _paper_init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            assert m.bias is not None  # the paper's init: every conv and linear has a bias
            nn.init.constant_(m.bias, 0.2)


def _torchvision_init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


PAPER = Variant(
    stem=_paper_stem,
    conv=partial(ConvBNAct, bn=False),
    k5=5,
    pools={"pool3": partial(nn.MaxPool2d, 3, 2, padding=1), "pool4": partial(nn.MaxPool2d, 3, 2, padding=1)},
    name=lambda row: row,
    aux_pool=partial(AuxPool, 5, 3, AUX_GRID),
    dropout=0.4,
    init=_paper_init,
)

_CAFFE_POOL = partial(nn.MaxPool2d, 3, 2, padding=0, ceil_mode=True)  # bvlc_googlenet's pools
PAPER_CAFFE_POOLING = replace(
    PAPER, stem=partial(_paper_stem, pool=_CAFFE_POOL), pools={"pool3": _CAFFE_POOL, "pool4": _CAFFE_POOL}
)

TORCHVISION = Variant(
    stem=_torchvision_stem,
    conv=partial(ConvBNAct, bn_eps=1e-3),
    k5=3,
    pools={
        "pool3": partial(nn.MaxPool2d, 3, 2, ceil_mode=True),
        "pool4": partial(nn.MaxPool2d, 2, 2, ceil_mode=True),
    },
    name=lambda row: row.replace("inception_", "inception").replace("pool", "maxpool"),
    aux_pool=partial(nn.AdaptiveAvgPool2d, AUX_GRID),
    dropout=0.2,
    init=_torchvision_init,
)


class GoogLeNet(ZooModel):
    """Stem, the nine Inception modules of Table 1, global average pool, dropout, linear.

    In training mode (and with `aux_logits`) returns ModelOutput(logits, (aux1, aux2)).
    """

    def __init__(
        self,
        variant: Variant,
        num_classes: int = 1000,
        aux_logits: bool = True,
        transform_input: bool = False,
    ):
        super().__init__()
        self.transform_input = transform_input
        self._stages: dict[str, str] = {}  # paper row -> module name, forward order
        for row, name, module in variant.stem(variant.conv):
            self.add_module(name, module)
            self._stages[row] = name
        channels = STEM_CHANNELS
        for row, *widths in TABLE1:
            if widths:
                module = Inception(channels, *widths, conv=variant.conv, k5=variant.k5)
                channels = module.out_channels
            else:
                module = variant.pools[row]()
            self.add_module(variant.name(row), module)
            self._stages[row] = variant.name(row)
        self._trunk = list(self._stages.values())
        self._aux_after: dict[str, str] = {}
        if aux_logits:
            for i, row in enumerate(AUX_AFTER, 1):
                block = getattr(self, variant.name(row))
                self.add_module(
                    f"aux{i}",
                    InceptionAux(block.out_channels, num_classes, conv=variant.conv, pool=variant.aux_pool()),
                )
                self._aux_after[variant.name(row)] = f"aux{i}"
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(variant.dropout)
        self.fc = nn.Linear(channels, num_classes)
        self._stages.update({"avg_pool": "avgpool", "linear": "fc"})
        variant.init(self)

    def _features(self, x: torch.Tensor, with_aux: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if self.transform_input:
            x = inception_transform_input(x)
        aux = []
        for name in self._trunk:
            x = getattr(self, name)(x)
            if with_aux and name in self._aux_after:
                aux.append(getattr(self, self._aux_after[name])(x))
        return x, aux

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._features(x, with_aux=False)[0]

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))

    def forward(self, x: torch.Tensor):
        x, aux = self._features(x, with_aux=self.training)
        logits = self.forward_head(x)
        return ModelOutput(logits, tuple(aux)) if aux else logits

    def head_paths(self) -> list[str]:
        return ["fc", *(f"{aux}.fc2" for aux in self._aux_after.values())]

    def paper_stages(self) -> dict[str, str]:
        return dict(self._stages)


@register(
    "googlenet_original",
    paper="Szegedy et al. 2014, arXiv:1409.4842, Table 1",
    input_size=224,
    min_input_size=32,
)
def googlenet_original(num_classes: int = 1000, caffe_pooling: bool = False, **kw) -> GoogLeNet:
    return GoogLeNet(PAPER_CAFFE_POOLING if caffe_pooling else PAPER, num_classes, **kw)


@register(
    "googlenet",
    paper="Szegedy et al. 2014, arXiv:1409.4842 (torchvision's port)",
    input_size=224,
    aliases=("inception_v1",),
    min_input_size=32,
)
def googlenet(num_classes: int = 1000, **kw) -> GoogLeNet:
    return GoogLeNet(TORCHVISION, num_classes, **kw)
