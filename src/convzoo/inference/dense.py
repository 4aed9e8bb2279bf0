"""Dense multi-scale evaluation as VGG did it (Simonyan & Zisserman 2014, arXiv:1409.1556, Sec. 3.2).

"The fully-connected layers are first converted to convolutional layers (the first FC layer to a
7x7 conv. layer, the last two FC layers to 1x1 conv. layers). The resulting fully-convolutional
net is then applied to the whole (uncropped) image. The result is a class score map ... spatially
averaged (sum-pooled) to obtain a fixed-size vector of class scores", and the soft-max posteriors
of the image and its horizontal flip are averaged; with several test scales Q (Sec. 4.2, e.g.
256, 384, 512), the posteriors are averaged over the scales too.

`DenseHead` converts any model built as `features -> AdaptiveAvgPool2d(k) -> classifier` of
Linear/ReLU/Dropout layers (the VGG and AlexNet families): the first Linear becomes a k x k
convolution over the feature map (its weight is the same tensor viewed as [out, C, k, k], since
flatten orders the input as C, row, column) and the others 1 x 1 convolutions. At the native
size the feature map is k x k, the adaptive pool is the identity, and the result equals the FC
form. Deviation: images smaller than the native size are not supported (no score map).
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.transforms import v2

from ..data.transforms import ChannelScale, interpolation_mode, tensor_steps
from ..errors import UserError
from ..layers import ZooModel


class DenseHead(nn.Module):
    """Fully-convolutional view of a model: image -> class score map [B, classes, h, w]."""

    def __init__(self, model: nn.Module):
        super().__init__()
        pool, classifier = getattr(model, "avgpool", None), getattr(model, "classifier", None)
        name = getattr(model, "model_name", type(model).__name__)
        if (
            not isinstance(pool, nn.AdaptiveAvgPool2d)
            or not isinstance(classifier, nn.Sequential)
            or not any(isinstance(m, nn.Linear) for m in classifier)
        ):
            raise UserError(
                f"--crop dense needs fully-connected layers over a fixed grid (VGG, AlexNet "
                f"families); {name} has none"
            )
        # the zoo's pools have a fixed grid (the stub also allows None for 'keep this side')
        size = cast("int | tuple[int, int]", pool.output_size)
        k = size if isinstance(size, int) else size[0]
        layers: list[nn.Module] = []
        first = True
        for m in classifier:
            if isinstance(m, nn.Linear):
                kernel = k if first else 1
                conv = nn.Conv2d(
                    m.in_features // (kernel * kernel),
                    m.out_features,
                    kernel,
                    device=m.weight.device,
                    dtype=m.weight.dtype,
                )
                conv.weight = nn.Parameter(m.weight.detach().view_as(conv.weight), requires_grad=False)
                conv.bias = nn.Parameter(m.bias.detach(), requires_grad=False)
                layers.append(conv)
                first = False
            elif isinstance(m, (nn.ReLU, nn.Dropout)):
                layers.append(m)
            else:
                raise UserError(f"--crop dense: cannot convert {type(m).__name__} in {name}'s classifier")
        self.model, self.head = model, nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(cast(ZooModel, self.model).forward_features(x))


class DenseTransform:
    """PIL image -> one normalised tensor per test scale Q (shorter side resized to Q, no crop)."""

    def __init__(
        self,
        scales: list[int],
        mean,
        std,
        interpolation: str = "bilinear",
        min_size: int = 1,
        channel_order: str = "RGB",
        pixel_scale: float = 1.0,
    ):
        if not scales or any(q < min_size for q in scales):
            raise UserError(f"--scales must be sizes of at least {min_size} (the network's input size)")
        self.resize = [v2.Resize(q, interpolation=interpolation_mode(interpolation)) for q in scales]
        tensor, norm = tensor_steps(
            mean, std, ChannelScale(channel_order, pixel_scale)
        )  # e.g. Caffe's BGR 0-255
        self.tail = v2.Compose(tensor + norm)
        self.draft_size = min(scales)

    def __call__(self, img) -> tuple[torch.Tensor, ...]:
        return tuple(self.tail(r(img)) for r in self.resize)


@torch.no_grad()
def dense_probabilities(
    dense: DenseHead, scaled: tuple[torch.Tensor, ...], device, autocast_ctx
) -> torch.Tensor:
    """Soft-max posteriors averaged over the scales and the horizontal flips: [classes]."""
    probs = []
    for t in scaled:
        x = t.to(device)[None]
        with autocast_ctx():
            scores = dense(torch.cat([x, x.flip(-1)])).float().mean((2, 3))  # spatial average
        probs.append(F.softmax(scores, dim=1))
    return torch.cat(probs).mean(0)
