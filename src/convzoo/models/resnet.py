"""ResNet, pre-activation ResNet, CIFAR ResNets and ResNeXt.

Papers and what this file transcribes:

- He, Zhang, Ren, Sun 2015, "Deep Residual Learning for Image Recognition", arXiv:1512.03385.
  Table 1 (ImageNet nets, 18..152 layers: stages conv2_x..conv5_x, unit kind and repeats),
  Fig. 5 (basic and bottleneck units), Sec. 3.3 option B (projection shortcuts when the
  shape changes), Sec. 4.2 (CIFAR-10 nets with 6n+2 layers, n = 3, 5, 7, 9, 18, 200:
  16/32/64 filters at 32x32/16x16/8x8, option A shortcuts).
- He, Zhang, Ren, Sun 2016, "Identity Mappings in Deep Residual Networks", arXiv:1603.05027.
  Fig. 4(e) / Sec. 4.1 full pre-activation units (BN -> ReLU -> conv), ResNet-200 (repeats
  3, 24, 36, 3), and the CIFAR bottleneck nets ResNet-164 and ResNet-1001 (9n+2 layers,
  n = 18 and 111; bottleneck widths 16/32/64, outputs 64/128/256; 1.7M / 10.2M in Table 4).
- Xie, Girshick, Dollar, Tu, He 2016, "Aggregated Residual Transformations for Deep Neural
  Networks" (ResNeXt), arXiv:1611.05431. Table 1 (ResNeXt-50 32x4d) and Table 2 (C x d at
  preserved complexity): the template is the ResNet bottleneck whose 3x3 is a grouped
  convolution with C groups of d channels, so the 3x3 width in conv2_x is C*d (1x64d = ResNet:
  64, 2x40d: 80, 4x24d: 96, 8x14d: 112, 32x4d: 128) and it doubles per stage; the unit's
  output (256, 512, 1024, 2048) is that of ResNet. Fig. 3(c) form (grouped conv).

The ResNet family is one table (`TABLE1`) plus the stage rows (`IMAGENET_STAGES`,
`CIFAR_STAGES`); every registered name is one line calling `_resnet(...)`.

Layer names are torchvision's (conv1, bn1, layer1..layer4 of BasicBlock / Bottleneck with
conv1/bn1/conv2/bn2/conv3/bn3/downsample.0/.1, fc), so for resnet18..152 and
resnext50_32x4d / resnext101_32x8d / resnext101_64x4d `load_state_dict(tv.state_dict())`
works unchanged. `paper_stages()` maps the paper's rows (conv1, conv2_x..conv5_x, pool, fc)
to those paths.

Hand-derived receptive fields at 224 (r' = r + (k-1)*j_in, j' = j_in*s; a 1x1 adds nothing;
the shortcut's reach is smaller, so the residual path sets r; tested in tests/test_resnet.py):
  stem: conv1 7x7/2 -> r 7, j 2; max-pool 3x3/2 -> r 7 + 2*2 = 11, j 4.
  resnet18 (two 3x3 per unit, 2 units per stage; the first 3x3 of conv3_x..conv5_x has
    stride 2 and still adds 2*j_in):
    conv2_x 11 + 4*2*4 = 43 (j 4); conv3_x 43 + 2*4 + 3*2*8 = 99 (j 8);
    conv4_x 99 + 2*8 + 3*2*16 = 211 (j 16); conv5_x 211 + 2*16 + 3*2*32 = 435 (j 32).
  resnet50 v1.5 (one 3x3 per unit, stride 2 in the 3x3 of a stage's first unit):
    conv2_x 11 + 3*2*4 = 35 (j 4); conv3_x 35 + 2*4 + 3*2*8 = 91 (j 8);
    conv4_x 91 + 2*8 + 5*2*16 = 267 (j 16); conv5_x 267 + 2*16 + 2*2*32 = 427 (j 32).
  resnet50_paper (stride 2 in the first 1x1, so every 3x3 of a stage runs at the new jump):
    conv3_x 35 + 4*2*8 = 99; conv4_x 99 + 6*2*16 = 291; conv5_x 291 + 3*2*32 = 483 (j 32).

Deviations and choices (all documented here, none silent):

1. `resnet18..152` are "ResNet v1.5" (torchvision, fb.resnet.torch): in a bottleneck unit that
   halves the resolution the stride sits in the 3x3 conv, not in the first 1x1 as in the
   paper. Same parameters; more MACs (ResNet-50: 4.09 G vs. the paper's 3.8 G), since the
   3x3 runs at the higher resolution. The paper's placement is `resnet50_paper`,
   `resnet101_paper`, `resnet152_paper` (which reproduce Table 1's 3.8 / 7.6 / 11.3 GFLOPs).
   For basic units (18/34) both placements are the same network.
2. Shortcuts of the ImageNet nets are option B (projection 1x1 conv + BN only where the shape
   changes), as the paper's Table 1 nets and torchvision. CIFAR nets use option A (Sec. 4.2):
   stride-2 subsampling and zero-padded extra channels, no parameters; the zero channels are
   appended after the existing ones (the paper does not say where; any placement is the
   same function class). `shortcut_pad="split"` puts half of them before the existing ones,
   as akamaster/pytorch_resnet_cifar10 and ports of it do, so their weights score as published.
3. Pre-activation nets (`preact_*`) follow Identity Mappings Sec. 4.1 / the authors' code
   (KaimingHe/resnet-1k-layers, fb.resnet.torch preresnet): the first unit after conv1 uses
   the stem's BN-ReLU ("activation right after conv1 and before splitting into two paths"),
   so the stem is conv1-bn1-relu(-maxpool) and that unit has no BN of its own; a unit that
   changes shape applies its BN-ReLU before the split, so its projection shortcut (a plain
   1x1 conv, no BN) sees the activated input; the net ends with BN-ReLU (`bn_final`) before
   pooling. ImageNet pre-act bottlenecks stride in the 3x3 (fb.resnet.torch, used for the
   paper's ResNet-200); CIFAR ones stride in the first 1x1 as in resnet-1k-layers.
4. CIFAR stages are named conv2_x..conv4_x in `paper_stages()` (the paper names them only by
   output map size 32x32 / 16x16 / 8x8).
5. Init: He et al. 2015 (Kaiming normal, fan_out) for convs, BN gamma 1 / beta 0, torchvision's
   default for the classifier. `zero_init_residual=True` (an override, off by default as in
   the papers) zeroes the last BN gamma of each post-activation unit (Goyal et al. 2017) or
   the last conv of each pre-activation unit, so every unit starts as the identity.
6. Counts: the 2015 CIFAR table's figures include BN parameters (ResNet-1202: 19.42M with,
   19.33M without; printed 19.4M). Identity Mappings' 10.2M for ResNet-1001 is its conv + fc
   weights (10.18M); with BN the net built here holds 10.33M (+1.3%); same architecture.
7. ResNeXt-101 2x40d / 4x24d / 8x14d: the paper prints only errors for them (Table 3); their
   widths follow the same preserved-complexity rule (C*d per conv2_x unit), which gives
   44.5M / 44.4M / 45.1M params and 7.84 / 7.89 / 8.08 GMACs next to 32x4d's 44.2M / 7.97G.
8. `caffe_pooling=True` (set by weights converted from Kaiming He's Caffe release,
   `convzoo.interop.caffe`): the stem's max-pool is Caffe's 3x3/2 without padding, rounding its
   output size up (ceil mode), instead of PyTorch's usual pad 1. Both give 56x56 at 224 but over
   windows shifted by one pixel, so only this reproduces the released network.
9. `min_input_size` is 32 for the ImageNet nets and 8 for the CIFAR nets (global pooling after a
   total stride of 4), which keeps the registry-wide tests cheap for the 1202/1001-layer nets.
"""

from __future__ import annotations

from typing import Any, Protocol, TypedDict, cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import ZooModel
from ..registry import register

HE2015 = "He et al. 2015, arXiv:1512.03385"
HE2016 = "He et al. 2016 (Identity Mappings), arXiv:1603.05027"
XIE2016 = "Xie et al. 2016 (ResNeXt), arXiv:1611.05431"


class _MinSize(TypedDict):  # register()'s min_input_size option, typed for `**CIFAR_REG`
    min_input_size: int


# CIFAR nets stride 4 in total and pool globally, so they run on 8x8 (2x2 in conv4_x); the small
# minimum keeps the registry-wide forward/backward test cheap for the 1202- and 1001-layer nets.
CIFAR_REG: _MinSize = {"min_input_size": 8}
SHORTCUT_PADS = ("after", "split")  # where option A's zero channels go (ZeroPadShortcut)


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride, 1, groups=groups, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride, 0, bias=False)


class ZeroPadShortcut(nn.Module):
    """Option A (Sec. 3.3 / 4.2): identity with stride-2 subsampling and zero-padded channels.

    Parameter-free: x[:, :, ::s, ::s], then (out - in) zero channels. `pad="after"` appends
    them after the existing channels; `pad="split"` puts half before and half after them, as
    the popular third-party port akamaster/pytorch_resnet_cifar10 does (F.pad by planes // 4
    on each side). Same function class, different functions: weights trained with one
    convention score wrongly with the other, so the convention travels with the weights
    (WeightSpec.model_kwargs `shortcut_pad`).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, pad: str = "after"):
        super().__init__()
        if pad not in SHORTCUT_PADS:
            raise ValueError(f"shortcut_pad must be one of {', '.join(SHORTCUT_PADS)}, not {pad!r}")
        extra = out_channels - in_channels
        self.before = extra // 2 if pad == "split" else 0
        self.after, self.stride = extra - self.before, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, self.before, self.after))


class BasicBlock(nn.Module):
    """Fig. 5 left: [3x3, width; 3x3, width] + shortcut, ReLU after the addition."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(in_channels, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(width, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)


class Bottleneck(nn.Module):
    """Fig. 5 right / ResNeXt Fig. 3(c): [1x1, width; 3x3, width, C groups; 1x1, 4*planes].

    `stride_in_1x1` places a stage's stride-2 in the first 1x1 (the paper's original); False
    puts it in the 3x3 (v1.5, torchvision).
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        width: int,
        out_channels: int,
        stride: int = 1,
        cardinality: int = 1,
        downsample: nn.Module | None = None,
        stride_in_1x1: bool = False,
    ):
        super().__init__()
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = conv1x1(in_channels, width, s1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, s3, groups=cardinality)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, out_channels)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)


class PreActBasicBlock(nn.Module):
    """Identity Mappings Fig. 4(e) with two 3x3 convs: BN-ReLU-conv3x3, BN-ReLU-conv3x3, add."""

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        preactivate: bool = True,
    ):
        super().__init__()
        # The first unit after conv1 shares the stem's BN-ReLU (deviation note 3).
        self.bn1 = nn.BatchNorm2d(in_channels) if preactivate else None
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = conv3x3(in_channels, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x if self.bn1 is None else self.relu(self.bn1(x))
        # a projection sees the activated input (BN-ReLU before the split); an identity sees x
        shortcut = x if self.downsample is None else self.downsample(out)
        out = self.conv1(out)
        out = self.conv2(self.relu(self.bn2(out)))
        return out + shortcut

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv2.weight)


class PreActBottleneck(nn.Module):
    """Identity Mappings Fig. 4(e), bottleneck: BN-ReLU-1x1, BN-ReLU-3x3, BN-ReLU-1x1, add."""

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        width: int,
        out_channels: int,
        stride: int = 1,
        cardinality: int = 1,
        downsample: nn.Module | None = None,
        stride_in_1x1: bool = False,
        preactivate: bool = True,
    ):
        super().__init__()
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.bn1 = nn.BatchNorm2d(in_channels) if preactivate else None
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = conv1x1(in_channels, width, s1)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, s3, groups=cardinality)
        self.bn3 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, out_channels)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x if self.bn1 is None else self.relu(self.bn1(x))
        shortcut = x if self.downsample is None else self.downsample(out)
        out = self.conv1(out)
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return out + shortcut

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv3.weight)


# He et al. 2015, Table 1 (and Identity Mappings for 200): depth -> (unit, repeats of conv2_x..conv5_x).
# CIFAR depths (Sec. 4.2: 6n+2 with basic units; Identity Mappings: 9n+2 with bottlenecks) use
# the same units with n repeats in each of their three stages.
# fmt: off
TABLE1 = {
    #      unit          conv2_x conv3_x conv4_x conv5_x
    18:  ("basic",      (2,      2,      2,      2)),
    34:  ("basic",      (3,      4,      6,      3)),
    50:  ("bottleneck", (3,      4,      6,      3)),
    101: ("bottleneck", (3,      4,      23,     3)),
    152: ("bottleneck", (3,      8,      36,     3)),
    200: ("bottleneck", (3,      24,     36,     3)),   # Identity Mappings / fb.resnet.torch
}
# fmt: on


class _UnitClass(Protocol):
    """A residual unit class: its output/width ratio and its constructor."""

    expansion: int

    def __call__(self, *args: Any, **kwargs: Any) -> nn.Module: ...


class _ZeroInitLast(Protocol):
    def zero_init_last(self) -> None: ...


UNITS: dict[str, tuple[_UnitClass, _UnitClass]] = {  # (post-activation, pre-activation) class per unit kind
    "basic": (BasicBlock, PreActBasicBlock),
    "bottleneck": (Bottleneck, PreActBottleneck),
}
# Stage rows: (paper row, planes, stride of the first unit). Output channels = planes * expansion;
# output size at 224 is 56, 28, 14, 7 (Table 1); for CIFAR 32, 16, 8 (Sec. 4.2).
IMAGENET_STAGES = (("conv2_x", 64, 1), ("conv3_x", 128, 2), ("conv4_x", 256, 2), ("conv5_x", 512, 2))
CIFAR_STAGES = (("conv2_x", 16, 1), ("conv3_x", 32, 2), ("conv4_x", 64, 2))


def cifar_depth(depth: int, unit: str) -> tuple[str, tuple[int, ...]]:
    """Sec. 4.2: depth = 6n+2 (basic units); Identity Mappings: depth = 9n+2 (bottlenecks)."""
    per_unit = 2 if unit == "basic" else 3
    n, rest = divmod(depth - 2, 3 * per_unit)
    if rest or n < 1:
        raise ValueError(f"CIFAR ResNet depth {depth} is not {3 * per_unit}n+2")
    return unit, (n, n, n)


class ResNet(ZooModel):
    """The shared skeleton: stem, stages of residual units, global average pool, fc.

    `stem="imagenet"`: conv1 7x7/2, 64 + BN + ReLU + 3x3/2 max-pool (Table 1);
    `stem="cifar"`: conv1 3x3, 16 + BN + ReLU (Sec. 4.2). `shortcut` is "B" (projection) or
    "A" (zero padding; `shortcut_pad` "after" or "split" says where the zero channels go).
    ResNeXt: `cardinality` C and `base_width` d give the 3x3 width
    planes * C * d / 64 (so ResNet is C=1, d=64: "1x64d").
    """

    def __init__(
        self,
        unit: str,
        repeats,
        stages,
        num_classes: int = 1000,
        stem: str = "imagenet",
        preact: bool = False,
        shortcut: str = "B",
        cardinality: int = 1,
        base_width: int = 64,
        stride_in_1x1: bool = False,
        zero_init_residual: bool = False,
        shortcut_pad: str = "after",
        caffe_pooling: bool = False,
    ):
        super().__init__()
        if shortcut_pad not in SHORTCUT_PADS:
            raise ValueError(f"shortcut_pad must be one of {', '.join(SHORTCUT_PADS)}, not {shortcut_pad!r}")
        if shortcut_pad != "after" and shortcut != "A":
            raise ValueError(f"shortcut_pad={shortcut_pad!r} applies to option-A shortcuts only")
        block = UNITS[unit][preact]
        stem_width = 64 if stem == "imagenet" else 16
        k, s = (7, 2) if stem == "imagenet" else (3, 1)
        self.conv1 = nn.Conv2d(3, stem_width, k, s, k // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        pool = nn.MaxPool2d(3, 2, 0, ceil_mode=True) if caffe_pooling else nn.MaxPool2d(3, 2, 1)
        self.maxpool = pool if stem == "imagenet" else None
        self.stage_names = [row for row, _, _ in stages]
        in_ch = stem_width
        for i, ((_row, planes, stride), n) in enumerate(zip(stages, repeats, strict=True)):
            out_ch = planes * block.expansion
            units = []
            for j in range(n):
                st = stride if j == 0 else 1
                downsample: nn.Module | None = None
                if st != 1 or in_ch != out_ch:
                    if shortcut == "A":
                        downsample = ZeroPadShortcut(in_ch, out_ch, st, shortcut_pad)
                    elif preact:
                        downsample = nn.Sequential(conv1x1(in_ch, out_ch, st))
                    else:
                        downsample = nn.Sequential(conv1x1(in_ch, out_ch, st), nn.BatchNorm2d(out_ch))
                kw = dict(stride=st, downsample=downsample)
                if preact:
                    kw["preactivate"] = not (i == 0 and j == 0)
                if block.expansion == 1:
                    units.append(block(in_ch, planes, **kw))
                else:
                    width = planes * cardinality * base_width // 64
                    units.append(
                        block(
                            in_ch, width, out_ch, cardinality=cardinality, stride_in_1x1=stride_in_1x1, **kw
                        )
                    )
                in_ch = out_ch
            setattr(self, f"layer{i + 1}", nn.Sequential(*units))
        self.bn_final = nn.BatchNorm2d(in_ch) if preact else None
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = in_ch
        self.fc = nn.Linear(in_ch, num_classes)
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if hasattr(m, "zero_init_last"):
                    cast(_ZeroInitLast, m).zero_init_last()

    def layers(self):
        return [getattr(self, f"layer{i + 1}") for i in range(len(self.stage_names))]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        if self.maxpool is not None:
            x = self.maxpool(x)
        for layer in self.layers():
            x = layer(x)
        if self.bn_final is not None:  # pre-activation: the extra BN-ReLU after the last addition
            x = self.relu(self.bn_final(x))
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def paper_stages(self) -> dict[str, str]:
        # Table 1 lists the 3x3 max-pool in the conv2_x row; it is its own submodule here.
        stages = {"conv1": "conv1"}
        if self.maxpool is not None:
            stages["pool1"] = "maxpool"
        stages.update({row: f"layer{i + 1}" for i, row in enumerate(self.stage_names)})
        if self.bn_final is not None:
            stages["final_bn"] = "bn_final"
        stages.update(pool="avgpool", fc="fc")
        return stages


def _resnet(depth: int, num_classes: int, *, cifar: bool = False, **kw) -> ResNet:
    if cifar:
        unit, repeats = cifar_depth(depth, "bottleneck" if kw.get("preact") else "basic")
        kw = {"stem": "cifar", "shortcut": "B" if kw.get("preact") else "A", **kw}
        return ResNet(unit, repeats, CIFAR_STAGES, num_classes, **kw)
    unit, repeats = TABLE1[depth]
    return ResNet(unit, repeats, IMAGENET_STAGES, num_classes, **kw)


# ---- ResNet v1.5 (torchvision layout; stride in the 3x3), He et al. 2015 Table 1 -------------
@register(paper=f"{HE2015}, Table 1 (v1.5)", input_size=224)
def resnet18(num_classes=1000, **kw):
    return _resnet(18, num_classes, **kw)


@register(paper=f"{HE2015}, Table 1 (v1.5)", input_size=224)
def resnet34(num_classes=1000, **kw):
    return _resnet(34, num_classes, **kw)


@register(paper=f"{HE2015}, Table 1 (v1.5)", input_size=224)
def resnet50(num_classes=1000, **kw):
    return _resnet(50, num_classes, **kw)


@register(paper=f"{HE2015}, Table 1 (v1.5)", input_size=224)
def resnet101(num_classes=1000, **kw):
    return _resnet(101, num_classes, **kw)


@register(paper=f"{HE2015}, Table 1 (v1.5)", input_size=224)
def resnet152(num_classes=1000, **kw):
    return _resnet(152, num_classes, **kw)


# ---- the paper's original: stride 2 in the first 1x1 of a bottleneck ---------------------------
@register(paper=f"{HE2015}, Table 1 (stride in 1x1)", input_size=224)
def resnet50_paper(num_classes=1000, **kw):
    return _resnet(50, num_classes, stride_in_1x1=True, **kw)


@register(paper=f"{HE2015}, Table 1 (stride in 1x1)", input_size=224)
def resnet101_paper(num_classes=1000, **kw):
    return _resnet(101, num_classes, stride_in_1x1=True, **kw)


@register(paper=f"{HE2015}, Table 1 (stride in 1x1)", input_size=224)
def resnet152_paper(num_classes=1000, **kw):
    return _resnet(152, num_classes, stride_in_1x1=True, **kw)


# ---- pre-activation ResNets, Identity Mappings Fig. 4(e) --------------------------------------
@register(paper=f"{HE2016}, Fig. 4(e)", input_size=224)
def preact_resnet18(num_classes=1000, **kw):
    return _resnet(18, num_classes, preact=True, **kw)


@register(paper=f"{HE2016}, Fig. 4(e)", input_size=224)
def preact_resnet34(num_classes=1000, **kw):
    return _resnet(34, num_classes, preact=True, **kw)


@register(paper=f"{HE2016}, Fig. 4(e)", input_size=224)
def preact_resnet50(num_classes=1000, **kw):
    return _resnet(50, num_classes, preact=True, **kw)


@register(paper=f"{HE2016}, Fig. 4(e)", input_size=224)
def preact_resnet101(num_classes=1000, **kw):
    return _resnet(101, num_classes, preact=True, **kw)


@register(paper=f"{HE2016}, Fig. 4(e)", input_size=224)
def preact_resnet152(num_classes=1000, **kw):
    return _resnet(152, num_classes, preact=True, **kw)


@register(paper=f"{HE2016}, Fig. 4(e), Table 5 (ResNet-200)", input_size=224)
def preact_resnet200(num_classes=1000, **kw):
    return _resnet(200, num_classes, preact=True, **kw)


# ---- CIFAR-10, He et al. 2015 Sec. 4.2 (6n+2 layers, option A) -------------------------------
@register(paper=f"{HE2015}, Sec. 4.2 (n=3)", input_size=32, num_classes=10, **CIFAR_REG)
def resnet20_cifar(num_classes=10, **kw):
    return _resnet(20, num_classes, cifar=True, **kw)


@register(paper=f"{HE2015}, Sec. 4.2 (n=5)", input_size=32, num_classes=10, **CIFAR_REG)
def resnet32_cifar(num_classes=10, **kw):
    return _resnet(32, num_classes, cifar=True, **kw)


@register(paper=f"{HE2015}, Sec. 4.2 (n=7)", input_size=32, num_classes=10, **CIFAR_REG)
def resnet44_cifar(num_classes=10, **kw):
    return _resnet(44, num_classes, cifar=True, **kw)


@register(paper=f"{HE2015}, Sec. 4.2 (n=9)", input_size=32, num_classes=10, **CIFAR_REG)
def resnet56_cifar(num_classes=10, **kw):
    return _resnet(56, num_classes, cifar=True, **kw)


@register(paper=f"{HE2015}, Sec. 4.2 (n=18)", input_size=32, num_classes=10, **CIFAR_REG)
def resnet110_cifar(num_classes=10, **kw):
    return _resnet(110, num_classes, cifar=True, **kw)


@register(paper=f"{HE2015}, Sec. 4.2 (n=200)", input_size=32, num_classes=10, **CIFAR_REG)
def resnet1202_cifar(num_classes=10, **kw):
    return _resnet(1202, num_classes, cifar=True, **kw)


# ---- CIFAR-10 pre-activation bottleneck nets, Identity Mappings (9n+2 layers) ----------------
@register(paper=f"{HE2016}, Table 4 (ResNet-164, n=18)", input_size=32, num_classes=10, **CIFAR_REG)
def preact_resnet164_cifar(num_classes=10, **kw):
    return _resnet(164, num_classes, cifar=True, preact=True, stride_in_1x1=True, **kw)


@register(paper=f"{HE2016}, Table 4 (ResNet-1001, n=111)", input_size=32, num_classes=10, **CIFAR_REG)
def preact_resnet1001_cifar(num_classes=10, **kw):
    return _resnet(1001, num_classes, cifar=True, preact=True, stride_in_1x1=True, **kw)


# ---- ResNeXt, Xie et al. 2016 Tables 1-3/5: C x d, 3x3 width C*d in conv2_x ------------------
@register(paper=f"{XIE2016}, Table 2 (2x40d)", input_size=224)
def resnext50_2x40d(num_classes=1000, **kw):
    return _resnet(50, num_classes, cardinality=2, base_width=40, **kw)


@register(paper=f"{XIE2016}, Table 2 (4x24d)", input_size=224)
def resnext50_4x24d(num_classes=1000, **kw):
    return _resnet(50, num_classes, cardinality=4, base_width=24, **kw)


@register(paper=f"{XIE2016}, Table 2 (8x14d)", input_size=224)
def resnext50_8x14d(num_classes=1000, **kw):
    return _resnet(50, num_classes, cardinality=8, base_width=14, **kw)


@register(paper=f"{XIE2016}, Table 1 (32x4d)", input_size=224)
def resnext50_32x4d(num_classes=1000, **kw):
    return _resnet(50, num_classes, cardinality=32, base_width=4, **kw)


@register(paper=f"{XIE2016}, Table 3 (2x40d)", input_size=224)
def resnext101_2x40d(num_classes=1000, **kw):
    return _resnet(101, num_classes, cardinality=2, base_width=40, **kw)


@register(paper=f"{XIE2016}, Table 3 (4x24d)", input_size=224)
def resnext101_4x24d(num_classes=1000, **kw):
    return _resnet(101, num_classes, cardinality=4, base_width=24, **kw)


@register(paper=f"{XIE2016}, Table 3 (8x14d)", input_size=224)
def resnext101_8x14d(num_classes=1000, **kw):
    return _resnet(101, num_classes, cardinality=8, base_width=14, **kw)


@register(paper=f"{XIE2016}, Table 3/5 (32x4d)", input_size=224)
def resnext101_32x4d(num_classes=1000, **kw):
    return _resnet(101, num_classes, cardinality=32, base_width=4, **kw)


@register(paper=f"{XIE2016}, Table 5 (64x4d)", input_size=224)
def resnext101_64x4d(num_classes=1000, **kw):
    return _resnet(101, num_classes, cardinality=64, base_width=4, **kw)


@register(paper=f"{XIE2016} (32x8d, torchvision's pretrained variant)", input_size=224)
def resnext101_32x8d(num_classes=1000, **kw):
    return _resnet(101, num_classes, cardinality=32, base_width=8, **kw)
