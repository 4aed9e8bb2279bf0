"""AlexNet: the 2012 two-GPU network and the single-tower variant the world uses.

`alexnet_original`: Krizhevsky, Sutskever & Hinton 2012, "ImageNet Classification with Deep
Convolutional Neural Networks" (NeurIPS 2012; no arXiv id), Section 3.5 and Figure 2:
conv1 96x11x11/4, conv2 256x5x5 (two groups), conv3 384x3x3 (across groups), conv4 384x3x3 and
conv5 256x3x3 (two groups), fc6/fc7 4096, fc8 1000; ReLU -> LRN -> max-pool after conv1 and
conv2, max-pool after conv5 (Section 3.5), overlapping pools 3/2 (Section 3.4), LRN k=2, n=5,
alpha=1e-4, beta=0.75 (Section 3.3), dropout 0.5 in fc6 and fc7 (Section 4.2).
Layer names follow the released Caffe definition (conv1, relu1, norm1, pool1, ..., fc8).

`caffenet`: the BVLC reference CaffeNet (Jia et al. 2014, "Caffe: Convolutional Architecture for
Fast Feature Embedding", arXiv:1408.5093; models/bvlc_reference_caffenet in BVLC/caffe), the
AlexNet replication Caffe's authors trained and published; Zhou et al.'s Places365 AlexNet
(TPAMI 2017, alexnet_places365.caffemodel, 365 classes) has the same definition. It is
`alexnet_original` as one network (groups=2 in conv2/4/5 as in Caffe's file) with the
max-pool BEFORE the LRN after conv1 and conv2 (see Deviations).

`alexnet`: the single-tower AlexNet of Krizhevsky 2014, "One weird trick for parallelizing
convolutional neural networks", arXiv:1404.5997 (64-192-384-256-256, no LRN, no groups), in
torchvision's layout: same module keys and shapes, so torchvision's ImageNet weights load 1:1.

Deviations:
- Input 227x227, not the paper's "224x224": with conv1 11x11/4 and no padding only 227 gives
  the paper's own 55x55 conv1 output ((227 - 11)/4 + 1 = 55; at 224 it is 54.25, and no
  symmetric padding gives 55). `convzoo summary alexnet_original --input-size 224` warns.
- The two GPUs are `groups=2` convolutions (same arithmetic, one device).
- An AdaptiveAvgPool2d(6) sits before fc6 (torchvision does the same). At 227 it is the
  identity (pool5 is already 6x6); it only lets small test inputs reach the classifier.
- `caffenet` pools before it normalises (conv -> ReLU -> pool -> LRN), the reverse of the
  paper's Section 3.5 order (ReLU -> LRN -> pool); that is how CaffeNet was defined and trained,
  and its weights (and Places365's AlexNet) need it. Parameters and MACs are those of
  `alexnet_original` (the LRN then runs on 27x27 and 13x13 maps instead of 55x55 and 27x27).
- LRN constants: `alexnet_original` has the paper's (k = 2, alpha = 1e-4 on the plain sum).
  Caffe's definitions of BVLC AlexNet and CaffeNet write `local_size: 5 alpha: 0.0001 beta: 0.75`
  and leave k at Caffe's default 1; Caffe divides alpha by local_size, so they compute k = 1,
  alpha = 2e-5 in the paper's form. `caffenet` uses those (`caffe_lrn=True`, its default), and
  weights converted from BVLC's AlexNet build `alexnet_original(caffe_lrn=True)`
  (WeightSpec.model_kwargs) - the released weights were trained with them.
- `caffe_pooling=True` (set by weights converted from Caffe, `convzoo.interop.caffe`): max-pools
  round their output size up as Caffe does (ceil mode). At 227 every pool divides exactly, so it
  changes nothing there; it keeps other input sizes identical to Caffe too.
- `alexnet` puts dropout on the inputs of fc6 and fc7, as torchvision does (the paper drops
  the outputs of fc6 and fc7); kept so torchvision's weights and training behave as published.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TypedDict

import torch
import torch.nn as nn

from ..layers import LRN, ZooModel
from ..registry import register

# Krizhevsky et al. 2012, Section 3.5 / Figure 2, one row per convolutional layer:
#   (row,  kernels, size, stride, pad, groups, LRN,   max-pool after)
# fmt: off
ALEXNET_2012 = [
    ("conv1",  96, 11, 4, 0, 1, True,  True),
    ("conv2", 256,  5, 1, 2, 2, True,  True),
    ("conv3", 384,  3, 1, 1, 1, False, False),
    ("conv4", 384,  3, 1, 1, 2, False, False),
    ("conv5", 256,  3, 1, 1, 2, False, True),
]
# fmt: on
# Krizhevsky 2014 (arXiv:1404.5997) single tower, torchvision's `alexnet` (conv1 padded by 2).
# fmt: off
ALEXNET_ONE_TOWER = [
    ("conv1",  64, 11, 4, 2, 1, False, True),
    ("conv2", 192,  5, 1, 2, 1, False, True),
    ("conv3", 384,  3, 1, 1, 1, False, False),
    ("conv4", 256,  3, 1, 1, 1, False, False),
    ("conv5", 256,  3, 1, 1, 1, False, True),
]
# fmt: on


# Section 3.3: k = 2, n = 5, alpha = 1e-4, beta = 0.75 (alpha multiplies the plain sum of squares)
class LRNArgs(TypedDict):
    size: int
    alpha: float
    beta: float
    k: float


PAPER_LRN: LRNArgs = {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 2.0}
# BVLC's bvlc_alexnet / bvlc_reference_caffenet: lrn_param local_size 5, alpha 1e-4, beta 0.75, k
# left at Caffe's default 1; Caffe divides alpha by local_size, so the paper-form alpha is 1e-4 / 5
CAFFE_LRN: LRNArgs = {"size": 5, "alpha": 1e-4 / 5, "beta": 0.75, "k": 1.0}
FC_WIDTH = 4096  # fc6 and fc7
POOL5_SIZE = 6  # pool5 output at the paper's input size


class AlexNet(ZooModel):
    """Five conv layers and three fully-connected ones, built from a spec like the ones above.

    `torchvision_layout=True` numbers the layers (`features.0`, `classifier.1`, ...) instead of
    naming them, and drops the FC inputs instead of their outputs, exactly as torchvision does.
    """

    def __init__(
        self,
        spec,
        num_classes: int = 1000,
        dropout: float = 0.5,
        torchvision_layout: bool = False,
        pool_before_lrn: bool = False,
        caffe_pooling: bool = False,
        caffe_lrn: bool = False,
    ):
        super().__init__()
        layers: list[tuple[str, nn.Module]] = []
        in_ch = 3
        for i, (row, out_ch, k, s, p, groups, lrn, pool) in enumerate(spec, 1):
            layers += [
                (row, nn.Conv2d(in_ch, out_ch, k, s, p, groups=groups)),
                (f"relu{i}", nn.ReLU(inplace=True)),
            ]
            after: list[tuple[str, nn.Module]] = []
            if lrn:  # Section 3.3: applied after the ReLU
                after.append((f"norm{i}", LRN(**(CAFFE_LRN if caffe_lrn else PAPER_LRN))))
            if pool:  # Section 3.4: overlapping pooling, z=3, s=2
                after.append((f"pool{i}", nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=caffe_pooling)))
            layers += after[::-1] if pool_before_lrn else after  # CaffeNet: pool, then LRN
            in_ch = out_ch

        head: list[tuple[str, nn.Module]] = []
        fc_in = in_ch * POOL5_SIZE * POOL5_SIZE
        for i, (n_in, n_out) in enumerate([(fc_in, FC_WIDTH), (FC_WIDTH, FC_WIDTH)], 6):
            fc = [(f"fc{i}", nn.Linear(n_in, n_out)), (f"relu{i}", nn.ReLU(inplace=True))]
            drop = (f"drop{i}", nn.Dropout(dropout))
            head += [drop, *fc] if torchvision_layout else [*fc, drop]
        head.append(("fc8", nn.Linear(FC_WIDTH, num_classes)))

        if torchvision_layout:
            self.features = nn.Sequential(*(m for _, m in layers))
            self.classifier = nn.Sequential(*(m for _, m in head))
            path = {n: f"features.{i}" for i, (n, _) in enumerate(layers)}
            path.update({n: f"classifier.{i}" for i, (n, _) in enumerate(head)})
        else:
            self.features = nn.Sequential(OrderedDict(layers))
            self.classifier = nn.Sequential(OrderedDict(head))
            path = {n: f"features.{n}" for n, _ in layers}
            path.update({n: f"classifier.{n}" for n, _ in head})
        self.avgpool = nn.AdaptiveAvgPool2d(POOL5_SIZE)
        # paper rows: conv, LRN, pool and fc layers (ReLU and dropout are not rows of their own)
        self._stages = {n: p for n, p in path.items() if not n.startswith(("relu", "drop"))}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(x), 1))

    def head_paths(self) -> list[str]:
        return [f"classifier.{list(self.classifier.named_children())[-1][0]}"]  # fc8

    def paper_stages(self) -> dict[str, str]:
        return dict(self._stages)


def _init_paper(model: AlexNet) -> AlexNet:
    """Section 5: weights N(0, 0.01); biases 1 in conv2, conv4, conv5 and fc6/fc7, else 0."""
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.01)
            ones = name.rsplit(".", 1)[-1] in ("conv2", "conv4", "conv5", "fc6", "fc7")
            assert m.bias is not None  # every AlexNet conv and linear has a bias
            nn.init.constant_(m.bias, 1.0 if ones else 0.0)
    return model


@register(
    "alexnet_original",
    paper="Krizhevsky et al. 2012, NeurIPS, Section 3.5 / Figure 2",
    input_size=227,
    min_input_size=67,
)
def alexnet_original(num_classes: int = 1000, **kw) -> AlexNet:
    return _init_paper(AlexNet(ALEXNET_2012, num_classes, **kw))


@register(
    "caffenet",
    paper="Jia et al. 2014, arXiv:1408.5093 (BVLC reference CaffeNet; Places365 AlexNet)",
    input_size=227,
    min_input_size=67,
)
def caffenet(num_classes: int = 1000, caffe_lrn: bool = True, **kw) -> AlexNet:
    return _init_paper(AlexNet(ALEXNET_2012, num_classes, pool_before_lrn=True, caffe_lrn=caffe_lrn, **kw))


@register(
    "alexnet",
    paper="Krizhevsky 2014, arXiv:1404.5997 (torchvision layout)",
    input_size=224,
    min_input_size=63,
)
def alexnet(num_classes: int = 1000, **kw) -> AlexNet:
    return AlexNet(ALEXNET_ONE_TOWER, num_classes, torchvision_layout=True, **kw)
