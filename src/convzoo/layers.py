"""Blocks that several families really share: conv(+BN)+ReLU, the papers' LRN, the model base.

Family-specific blocks (Inception modules, residual units) live in their family's file.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import torch
import torch.nn as nn


class ModelOutput(NamedTuple):
    """What a model with auxiliary heads returns in training mode (docs/DESIGN.md: Shared formats)."""

    logits: torch.Tensor
    aux: tuple[torch.Tensor, ...]  # auxiliary logits, shallowest first


class ZooModel(nn.Module):
    """Base of every convzoo model: `forward = forward_head(forward_features(x))`.

    Subclasses name their submodules as the paper names its rows where they can; where
    they cannot (torchvision-compatible key names), `paper_stages` maps the paper's row
    names to submodule paths, for `convzoo summary` and `--freeze`.
    """

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def head_paths(self) -> list[str]:
        """Submodule paths of the layers that map features to class scores, declared per model
        (timm's `get_classifier`): the classifier first, then each auxiliary head's last layer.
        Fine-tuning re-initialises exactly these, CAM reads the first."""
        return ["fc"]

    def get_classifier(self) -> nn.Module:
        return self.get_submodule(self.head_paths()[0])

    def reset_classifier(self, num_classes: int) -> None:
        """New, freshly initialised classifier layers (`head_paths`) for `num_classes` classes."""
        for path in self.head_paths():
            old = self.get_submodule(path)
            if isinstance(old, nn.Linear):
                new: nn.Module = nn.Linear(old.in_features, num_classes)
            elif isinstance(old, nn.Conv2d):  # NiN's class maps
                # ignore: torch's stub types Conv2d's 2-tuples as tuple[int, ...] (shared with _ConvNd)
                new = nn.Conv2d(old.in_channels, num_classes, old.kernel_size, old.stride, old.padding)  # type: ignore[arg-type]
            else:
                raise TypeError(f"{type(self).__name__}.{path} is a {type(old).__name__}, not a classifier")
            parent, _, name = path.rpartition(".")
            setattr(self.get_submodule(parent) if parent else self, name, new)

    def paper_stages(self) -> dict[str, str]:
        """Paper row name -> submodule path, in forward order. Default: the top-level children."""
        return {name: name for name, _ in self.named_children()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def conv_padding(kernel_size: int | tuple[int, int]) -> int | tuple[int, int]:
    """'Same' padding for odd kernels, per dimension (so 1x7 gets (0, 3))."""
    if isinstance(kernel_size, int):
        return kernel_size // 2
    return kernel_size[0] // 2, kernel_size[1] // 2


class ConvBNAct(nn.Sequential):
    """Convolution, optional BatchNorm, optional ReLU. Bias only when there is no BN."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size=3,
        stride=1,
        padding=None,
        groups: int = 1,
        bn: bool = True,
        act: bool = True,
        bn_eps: float = 1e-5,
    ):
        padding = conv_padding(kernel_size) if padding is None else padding
        layers: list[tuple[str, nn.Module]]
        layers = [
            (
                "conv",
                nn.Conv2d(
                    in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=not bn
                ),
            )
        ]
        if bn:
            layers.append(("bn", nn.BatchNorm2d(out_channels, eps=bn_eps)))
        if act:
            layers.append(("relu", nn.ReLU(inplace=True)))
        super().__init__(OrderedDict(layers))


class LRN(nn.LocalResponseNorm):
    """Local response normalisation as the AlexNet paper writes it.

    Paper: b = a / (k + alpha * sum_{n neighbours} a^2)^beta.
    torch.nn.LocalResponseNorm divides alpha by the window size n (Caffe's convention),
    so the paper's alpha is passed as n * alpha.

    Inside `onnx_lrn()` the layer is one `convzoo::lrn` op, which the ONNX export writes as ONNX's
    LRN (the same formula, alpha/n included): torch's own decomposition (a 3-d average pool over
    the squares) is a third of GoogLeNet's time under ONNX Runtime.
    """

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0):
        super().__init__(size, alpha=alpha * size, beta=beta, k=k)
        self.paper_alpha = alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _AS_ONE_OP:
            return torch.ops.convzoo.lrn(x, self.size, self.alpha, self.beta, self.k)
        return super().forward(x)


_AS_ONE_OP = False


@torch.library.custom_op("convzoo::lrn", mutates_args=())
def lrn_op(x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """torch.nn.functional.local_response_norm as one op, for exporters to map (ONNX: LRN)."""
    return nn.functional.local_response_norm(x, size, alpha, beta, k)


@lrn_op.register_fake
def _(x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    return torch.empty_like(x)


class onnx_lrn:
    """`with onnx_lrn():` LRN layers trace as one `convzoo::lrn` op (interop/export.py)."""

    def __enter__(self) -> None:
        global _AS_ONE_OP
        self.before, _AS_ONE_OP = _AS_ONE_OP, True

    def __exit__(self, *exc) -> None:
        global _AS_ONE_OP
        _AS_ONE_OP = self.before


class AuxPool(nn.Module):
    """The average pool in front of an Inception auxiliary head: `kernel`/`stride` as the paper
    draws it wherever that yields the paper's `grid` (14x14 -> 4x4 in GoogLeNet, 17x17 -> 5x5 in
    Inception-v3); on other input sizes an adaptive average pool to `grid`, so that the head's
    layers still fit and small test inputs run (a deviation only off the paper's input size).
    """

    def __init__(self, kernel: int, stride: int, grid: int):
        super().__init__()
        self.kernel, self.stride, self.grid = kernel, stride, grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if all(s >= self.kernel and (s - self.kernel) // self.stride + 1 == self.grid for s in x.shape[-2:]):
            return nn.functional.avg_pool2d(x, self.kernel, self.stride)
        return nn.functional.adaptive_avg_pool2d(x, self.grid)


def inception_transform_input(x: torch.Tensor) -> torch.Tensor:
    """Map an input normalised with the ImageNet mean/std to the [-1, 1] scaling of Google's
    released Inception weights (torchvision's `transform_input=True`): x * std/0.5 + (mean-0.5)/0.5,
    channel by channel with torchvision's own arithmetic, so converted weights give its logits."""
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    return torch.cat([x[:, c : c + 1] * (std[c] / 0.5) + (mean[c] - 0.5) / 0.5 for c in range(3)], 1)
