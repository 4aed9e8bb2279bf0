"""Inception-v4, Inception-ResNet-v1 and Inception-ResNet-v2.

Paper: Szegedy, Ioffe, Vanhoucke, Alemi, "Inception-v4, Inception-ResNet and the Impact of
Residual Connections on Learning", 2016, arXiv:1602.07261.

Transcribed: Fig. 9 (Inception-v4 layout) with Fig. 3 (stem), Figs. 4-6 (Inception-A/B/C),
Fig. 7 with Table 1 (Reduction-A, k/l/m/n), Fig. 8 (Reduction-B); Fig. 15 (Inception-ResNet
layout) with Fig. 14 (v1 stem), Figs. 10, 11, 13 (v1 Inception-ResNet-A/B/C), Fig. 12 (v1
Reduction-B); Figs. 16, 17, 19 (v2 Inception-ResNet-A/B/C) and Fig. 18 (v2 Reduction-B).
Head (Figs. 9 and 15): average pooling, dropout (keep 0.8), linear classifier; input 299x299.

Layers are written in the figures' notation: "3x3 96 /2 V" is a 3x3 convolution with 96
filters, stride 2, valid padding (the figures' "V"; everything else is same-padded), each
followed by BatchNorm and ReLU; "avg 3x3" / "max 3x3 /2 V" are pooling layers; kernels are
height x width. An Inception-ResNet block adds `scale * (1x1 linear conv of its concatenated
branches)` to its input and applies ReLU, as Figs. 10-13 and 16-19 draw it.

`inception_v4` and `inception_resnet_v2` use timm's module layout and state_dict keys (which
are those of Cadene's port of the TF-Slim checkpoints), so timm's weights load unchanged;
`inception_resnet_v1` has no public checkpoint and is named like v2. `paper_stages()` gives
the paper's block names.

Deviations (and why):
- Branch order inside every module (so also the channel order of each concatenation) follows
  the reference implementation (TF-Slim, timm), pooling branch last; the figures draw the
  pooling branch first. The function computed is the same; the checkpoints need this order.
- 1x7 / 7x1 order: the paper is not consistent (Fig. 3 draws 7x1 before 1x7, Fig. 5's long
  branch 1x7 first); we use the reference implementation's height x width kernels: stem and
  Inception-B short branch (1,7) then (7,1), Inception-B long branch (7,1) first, Inception-C
  long branch (3,1) then (1,3).
- Residual scales 0.17 (A), 0.10 (B), 0.20 (C) are the reference implementation's values;
  the paper (Sec. 3.3) only says "between 0.1 and 0.3".
- BatchNorm eps is 0.001 (TF-Slim / timm), not PyTorch's 1e-5, to reproduce their outputs.
- inception_resnet_v2 is the released (TF-Slim) network that timm's weights and the reference
  counts in paper_numbers.json describe, not Figs. 15-19 as printed (those are inconsistent:
  Reduction-A gives 1152 channels but Fig. 17 adds 1154; Reduction-B gives 2146, Fig. 19 adds
  2048): the stem is Inception-v3's (Fig. 14 up to 3x3 192 V) plus a max-pool and a 35x35
  Inception module (Mixed_5b, 320 channels) instead of Fig. 3; the residual widths are 320 /
  1088 / 2080 instead of 384 / 1154 / 2048; repeats are 10 / 20 / 10 instead of Fig. 15's
  5 / 10 / 5; the last Inception-ResNet-C has no ReLU and is followed by a 1x1 conv to 1536
  channels before pooling. Branch widths inside the blocks are the figures'.
- inception_resnet_v1 follows Figs. 10-15 exactly (5 / 10 / 5 blocks, ReLU after every block).
"""

from __future__ import annotations

import re
from functools import partial

import torch
import torch.nn as nn

from ..layers import ConvBNAct, ZooModel
from ..registry import register

PAPER = "Szegedy et al. 2016, arXiv:1602.07261"
BN_EPS = 1e-3  # TF-Slim's (and timm's) batch-norm epsilon; the checkpoints were trained with it
RESIDUAL_SCALE = {"a": 0.17, "b": 0.10, "c": 0.20}  # reference implementation (TF-Slim, timm)

_LAYER = re.compile(
    r"(?:(?P<pool>avg|max) )?(?P<h>\d+)x(?P<w>\d+)(?: (?P<out>\d+))?"
    r"(?: /(?P<stride>\d+))?(?P<valid> V)?"
)


def layer(spec: str, in_channels: int) -> tuple[nn.Module, int]:
    """One layer from the figures' notation -> (module, output channels)."""
    m = _LAYER.fullmatch(spec)
    if m is None:
        raise ValueError(f"bad layer spec {spec!r}")
    k = (int(m["h"]), int(m["w"]))
    stride = int(m["stride"] or 1)
    padding = 0 if m["valid"] else (k[0] // 2, k[1] // 2)
    if m["pool"] == "max":
        return nn.MaxPool2d(k, stride, padding), in_channels
    if m["pool"] == "avg":  # TF's 'SAME' average pooling ignores the padded zeros
        return nn.AvgPool2d(k, stride, padding, count_include_pad=False), in_channels
    out = int(m["out"])
    return ConvBNAct(in_channels, out, k, stride, padding, bn_eps=BN_EPS), out


def build(block, in_channels: int) -> tuple[nn.Module, int]:
    """A spec row's block: a layer string, or a callable `block(in_channels)` -> module."""
    if isinstance(block, str):
        return layer(block, in_channels)
    module = block(in_channels)
    return module, module.out_channels


class InceptionModule(nn.Module):
    """Parallel branches joined by "Filter concat"; a branch is a tuple of layer specs.

    Submodules are `branch0`, `branch1`, ... (a single layer is stored bare, several as a
    Sequential), the reference implementation's key layout.
    """

    def __init__(self, in_channels: int, *branches: tuple[str, ...]):
        super().__init__()
        self.num_branches = len(branches)
        self.out_channels = 0
        for i, branch in enumerate(branches):
            layers, c = [], in_channels
            for spec in branch:
                m, c = layer(spec, c)
                layers.append(m)
            self.add_module(f"branch{i}", layers[0] if len(layers) == 1 else nn.Sequential(*layers))
            self.out_channels += c

    def concat(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([getattr(self, f"branch{i}")(x) for i in range(self.num_branches)], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.concat(x)


class InceptionResNetBlock(InceptionModule):
    """Figs. 10-13, 16-19: ReLU(x + scale * conv1x1_linear(concat(branches)))."""

    def __init__(self, in_channels: int, *branches: tuple[str, ...], scale: float, relu: bool = True):
        super().__init__(in_channels, *branches)
        # "1x1 Conv (N Linear)": no BN, no activation; restores the input width for the sum
        self.conv2d = nn.Conv2d(self.out_channels, in_channels, 1)
        self.out_channels = in_channels
        self.scale = scale
        self.act = nn.ReLU() if relu else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x + self.scale * self.conv2d(self.concat(x))
        return self.act(out) if self.act is not None else out


class StemSplit(nn.Module):
    """Fig. 3's stride-2 splits: "3x3 MaxPool (stride 2 V)" beside "3x3 Conv (N stride 2 V)"."""

    def __init__(self, in_channels: int, out_channels: int, pool_first: bool):
        super().__init__()
        self.maxpool, _ = layer("max 3x3 /2 V", in_channels)
        self.conv, _ = layer(f"3x3 {out_channels} /2 V", in_channels)
        self.pool_first = pool_first  # concatenation order of the checkpoints (Mixed_3a / Mixed_5a)
        self.out_channels = in_channels + out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.maxpool(x), self.conv(x)
        return torch.cat((a, b) if self.pool_first else (b, a), 1)


class InceptionC(nn.Module):
    """Fig. 6: two branches split into parallel 1x3 and 3x1 convolutions.

    Stored flat (`branch1_1a`, ...), as the checkpoints are.
    """

    # added with add_module in __init__; declared so that forward type-checks
    branch0: nn.Module
    branch1_0: nn.Module
    branch1_1a: nn.Module
    branch1_1b: nn.Module
    branch2_0: nn.Module
    branch2_1: nn.Module
    branch2_2: nn.Module
    branch2_3a: nn.Module
    branch2_3b: nn.Module

    def __init__(self, in_channels: int = 1536):
        super().__init__()
        specs = {
            "branch0": ("1x1 256", in_channels),
            "branch1_0": ("1x1 384", in_channels),
            "branch1_1a": ("1x3 256", 384),
            "branch1_1b": ("3x1 256", 384),
            "branch2_0": ("1x1 384", in_channels),
            "branch2_1": ("3x1 448", 384),
            "branch2_2": ("1x3 512", 448),
            "branch2_3a": ("1x3 256", 512),
            "branch2_3b": ("3x1 256", 512),
        }
        for name, (spec, cin) in specs.items():
            self.add_module(name, layer(spec, cin)[0])
        self.branch3 = nn.Sequential(layer("avg 3x3", in_channels)[0], layer("1x1 256", in_channels)[0])
        self.out_channels = 6 * 256

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1_0(x)
        b2 = self.branch2_2(self.branch2_1(self.branch2_0(x)))
        return torch.cat(
            (
                self.branch0(x),
                self.branch1_1a(b1),
                self.branch1_1b(b1),
                self.branch2_3a(b2),
                self.branch2_3b(b2),
                self.branch3(x),
            ),
            1,
        )


# --- the figures' blocks (widths as printed; branch order: see Deviations) -----------------


def mixed_4a(c):  # Fig. 3, the 73x73 -> 71x71 split
    return InceptionModule(c, ("1x1 64", "3x3 96 V"), ("1x1 64", "1x7 64", "7x1 64", "3x3 96 V"))


def inception_a(c):  # Fig. 4
    return InceptionModule(
        c, ("1x1 96",), ("1x1 64", "3x3 96"), ("1x1 64", "3x3 96", "3x3 96"), ("avg 3x3", "1x1 96")
    )


def inception_b(c):  # Fig. 5
    return InceptionModule(
        c,
        ("1x1 384",),
        ("1x1 192", "1x7 224", "7x1 256"),
        ("1x1 192", "7x1 192", "1x7 224", "7x1 224", "1x7 256"),
        ("avg 3x3", "1x1 128"),
    )


def reduction_a(c, k, l, m, n):  # noqa: E741 - Fig. 7; the paper's k, l, m, n from Table 1
    return InceptionModule(
        c, (f"3x3 {n} /2 V",), (f"1x1 {k}", f"3x3 {l}", f"3x3 {m} /2 V"), ("max 3x3 /2 V",)
    )


def reduction_b(c):  # Fig. 8
    return InceptionModule(
        c, ("1x1 192", "3x3 192 /2 V"), ("1x1 256", "1x7 256", "7x1 320", "3x3 320 /2 V"), ("max 3x3 /2 V",)
    )


def inception_resnet_a_v1(c, scale):  # Fig. 10
    return InceptionResNetBlock(
        c, ("1x1 32",), ("1x1 32", "3x3 32"), ("1x1 32", "3x3 32", "3x3 32"), scale=scale
    )


def inception_resnet_b_v1(c, scale):  # Fig. 11
    return InceptionResNetBlock(c, ("1x1 128",), ("1x1 128", "1x7 128", "7x1 128"), scale=scale)


def reduction_b_resnet_v1(c):  # Fig. 12
    return InceptionModule(
        c,
        ("1x1 256", "3x3 384 /2 V"),
        ("1x1 256", "3x3 256 /2 V"),
        ("1x1 256", "3x3 256", "3x3 256 /2 V"),
        ("max 3x3 /2 V",),
    )


def inception_resnet_c_v1(c, scale):  # Fig. 13
    return InceptionResNetBlock(c, ("1x1 192",), ("1x1 192", "1x3 192", "3x1 192"), scale=scale)


def mixed_5b(c):  # TF-Slim's 35x35 Inception module ending the released v2 stem (not in the paper)
    return InceptionModule(
        c, ("1x1 96",), ("1x1 48", "5x5 64"), ("1x1 64", "3x3 96", "3x3 96"), ("avg 3x3", "1x1 64")
    )


def inception_resnet_a_v2(c, scale):  # Fig. 16
    return InceptionResNetBlock(
        c, ("1x1 32",), ("1x1 32", "3x3 32"), ("1x1 32", "3x3 48", "3x3 64"), scale=scale
    )


def inception_resnet_b_v2(c, scale):  # Fig. 17
    return InceptionResNetBlock(c, ("1x1 192",), ("1x1 128", "1x7 160", "7x1 192"), scale=scale)


def reduction_b_resnet_v2(c):  # Fig. 18
    return InceptionModule(
        c,
        ("1x1 256", "3x3 384 /2 V"),
        ("1x1 256", "3x3 288 /2 V"),
        ("1x1 256", "3x3 288", "3x3 320 /2 V"),
        ("max 3x3 /2 V",),
    )


def inception_resnet_c_v2(c, scale, relu=True):  # Fig. 19
    return InceptionResNetBlock(c, ("1x1 192",), ("1x1 192", "1x3 224", "3x1 256"), scale=scale, relu=relu)


# --- layouts --------------------------------------------------------------------------------

# Fig. 9 (stem: Fig. 3), rows of (paper block, block, repeats); 299x299x3 -> 8x8x1536
# fmt: off
INCEPTION_V4 = (
    ("stem", "3x3 32 /2 V", 1),                               # 149x149x32
    ("stem", "3x3 32 V", 1),                                  # 147x147x32
    ("stem", "3x3 64", 1),                                    # 147x147x64
    ("stem", partial(StemSplit, out_channels=96, pool_first=True), 1),    # 73x73x160
    ("stem", mixed_4a, 1),                                    # 71x71x192
    ("stem", partial(StemSplit, out_channels=192, pool_first=False), 1),  # 35x35x384
    ("inception_a", inception_a, 4),                          # 35x35x384
    ("reduction_a", partial(reduction_a, k=192, l=224, m=256, n=384), 1),  # 17x17x1024
    ("inception_b", inception_b, 7),                          # 17x17x1024
    ("reduction_b", reduction_b, 1),                          # 8x8x1536
    ("inception_c", InceptionC, 3),                           # 8x8x1536
)
# fmt: on

# Fig. 15 with Figs. 10-14, rows of (paper block, module key, block, repeats); -> 8x8x1792
# fmt: off
INCEPTION_RESNET_V1 = (
    ("stem", "conv2d_1a", "3x3 32 /2 V", 1),                  # Fig. 14: 149x149x32
    ("stem", "conv2d_2a", "3x3 32 V", 1),                     # 147x147x32
    ("stem", "conv2d_2b", "3x3 64", 1),                       # 147x147x64
    ("stem", "maxpool_3a", "max 3x3 /2 V", 1),                # 73x73x64
    ("stem", "conv2d_3b", "1x1 80", 1),                       # 73x73x80
    ("stem", "conv2d_4a", "3x3 192 V", 1),                    # 71x71x192
    ("stem", "conv2d_4b", "3x3 256 /2 V", 1),                 # 35x35x256
    ("inception_resnet_a", "repeat", partial(inception_resnet_a_v1, scale=RESIDUAL_SCALE["a"]), 5),
    ("reduction_a", "mixed_6a", partial(reduction_a, k=192, l=192, m=256, n=384), 1),  # 17x17x896
    ("inception_resnet_b", "repeat_1", partial(inception_resnet_b_v1, scale=RESIDUAL_SCALE["b"]), 10),
    ("reduction_b", "mixed_7a", reduction_b_resnet_v1, 1),    # 8x8x1792
    ("inception_resnet_c", "repeat_2", partial(inception_resnet_c_v1, scale=RESIDUAL_SCALE["c"]), 5),
)
# fmt: on

# The released Inception-ResNet-v2 (TF-Slim / timm; see Deviations), same row format; -> 8x8x1536
# fmt: off
INCEPTION_RESNET_V2 = (
    ("stem", "conv2d_1a", "3x3 32 /2 V", 1),                  # 149x149x32
    ("stem", "conv2d_2a", "3x3 32 V", 1),                     # 147x147x32
    ("stem", "conv2d_2b", "3x3 64", 1),                       # 147x147x64
    ("stem", "maxpool_3a", "max 3x3 /2 V", 1),                # 73x73x64
    ("stem", "conv2d_3b", "1x1 80", 1),                       # 73x73x80
    ("stem", "conv2d_4a", "3x3 192 V", 1),                    # 71x71x192
    ("stem", "maxpool_5a", "max 3x3 /2 V", 1),                # 35x35x192
    ("stem", "mixed_5b", mixed_5b, 1),                        # 35x35x320
    ("inception_resnet_a", "repeat", partial(inception_resnet_a_v2, scale=RESIDUAL_SCALE["a"]), 10),
    ("reduction_a", "mixed_6a", partial(reduction_a, k=256, l=256, m=384, n=384), 1),  # 17x17x1088
    ("inception_resnet_b", "repeat_1", partial(inception_resnet_b_v2, scale=RESIDUAL_SCALE["b"]), 20),
    ("reduction_b", "mixed_7a", reduction_b_resnet_v2, 1),    # 8x8x2080
    ("inception_resnet_c", "repeat_2", partial(inception_resnet_c_v2, scale=RESIDUAL_SCALE["c"]), 9),
    ("inception_resnet_c", "block8", partial(inception_resnet_c_v2, scale=1.0, relu=False), 1),
    ("conv_7b", "conv2d_7b", "1x1 1536", 1),                  # 8x8x1536
)
# fmt: on


def _stage_names(names: list[str]) -> list[str]:
    """Paper block names, numbered `name.1`, `name.2`, ... where one name covers several modules."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(f"{n}.{seen[n]}" if names.count(n) > 1 else n)
    return out


class _PooledHead(ZooModel):
    """Figs. 9 and 15: average pooling, dropout (keep 0.8), linear classifier."""

    classifier_key = "fc"
    _stage_names: list[str]  # set by each subclass
    _stage_paths: list[str]

    def _init_head(self, num_features: int, num_classes: int, drop_rate: float) -> None:
        self.num_features = num_features
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.head_drop = nn.Dropout(drop_rate)
        setattr(self, self.classifier_key, nn.Linear(num_features, num_classes))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head_drop(torch.flatten(self.global_pool(x), 1))
        return getattr(self, self.classifier_key)(x)

    def head_paths(self) -> list[str]:
        return [self.classifier_key]

    def paper_stages(self) -> dict[str, str]:
        return {**dict(zip(self._stage_names, self._stage_paths)), "classifier": self.classifier_key}


class InceptionV4(_PooledHead):
    """Inception-v4 from a layout of (paper block, block, repeats) rows, kept in `features`."""

    classifier_key = "last_linear"  # timm's key

    def __init__(self, layout=INCEPTION_V4, num_classes: int = 1000, drop_rate: float = 0.2):
        super().__init__()
        modules, names, c = [], [], 3
        for paper_name, block, repeats in layout:
            for _ in range(repeats):
                m, c = build(block, c)
                modules.append(m)
                names.append(paper_name)
        self.features = nn.Sequential(*modules)
        self._stage_names = _stage_names(names)
        self._stage_paths = [f"features.{i}" for i in range(len(modules))]
        self._init_head(c, num_classes, drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class InceptionResNet(_PooledHead):
    """Inception-ResNet from a layout of (paper block, module key, block, repeats) rows."""

    classifier_key = "classif"  # timm's key

    def __init__(self, layout, num_classes: int = 1000, drop_rate: float = 0.2):
        super().__init__()
        names, self._stage_paths, c = [], [], 3
        for paper_name, key, block, repeats in layout:
            blocks = []
            for _ in range(repeats):
                m, c = build(block, c)
                blocks.append(m)
            self.add_module(key, blocks[0] if repeats == 1 else nn.Sequential(*blocks))
            names.append(paper_name)
            self._stage_paths.append(key)
        self._stage_names = _stage_names(names)
        self._init_head(c, num_classes, drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for key in self._stage_paths:
            x = getattr(self, key)(x)
        return x


# 75x75 is the smallest input every layout runs on: the valid-padded stride-2 layers take
# 75 -> 37 -> 35 -> 17 -> 15/7 -> 3 -> 1 (at 299: 149 -> 147 -> 73 -> 71 -> 35 -> 17 -> 8).
@register("inception_v4", paper=f"{PAPER}, Figs. 3-9", input_size=299, min_input_size=75)
def inception_v4(num_classes: int = 1000, **overrides) -> InceptionV4:
    return InceptionV4(INCEPTION_V4, num_classes=num_classes, **overrides)


@register("inception_resnet_v1", paper=f"{PAPER}, Figs. 7, 10-15", input_size=299, min_input_size=75)
def inception_resnet_v1(num_classes: int = 1000, **overrides) -> InceptionResNet:
    return InceptionResNet(INCEPTION_RESNET_V1, num_classes=num_classes, **overrides)


@register(
    "inception_resnet_v2",
    paper=f"{PAPER}, Figs. 7, 15-19 (released TF-Slim network)",
    input_size=299,
    min_input_size=75,
)
def inception_resnet_v2(num_classes: int = 1000, **overrides) -> InceptionResNet:
    return InceptionResNet(INCEPTION_RESNET_V2, num_classes=num_classes, **overrides)
