"""The papers' training augmentations and the evaluation crops, from torchvision's v2 transforms.

Training presets (`train_transform(preset, input_size, mean, std)`), sizes quoted for a 224 input
and scaled by input_size/224 otherwise (227 counts as 224: Caffe's AlexNet crops 227 from 256):
- `alexnet`  Krizhevsky et al. 2012, Sec. 4.1: shorter side 256, central 256x256, random 224
             crop, horizontal flip, PCA colour lighting (sigma 0.1), mean subtraction.
- `vgg`      Simonyan & Zisserman 2014 (arXiv 1409.1556), Sec. 3.1: scale jitter, shorter side S
             uniform in [256, 512], random 224 crop, flip, AlexNet colour shift.
- `inception` Szegedy et al. 2014 (arXiv 1409.4842), Sec. 6: random crop of 8-100% of the area
             with aspect ratio in [3/4, 4/3], resized to the input, flip, photometric distortion
             (brightness/contrast/saturation/hue of Howard 2013 as in the Inception code).
- `resnet`   He et al. 2015 (arXiv 1512.03385), Sec. 3.4: shorter side uniform in [256, 480],
             random 224 crop, flip, the AlexNet colour augmentation.
- `cifar`    He et al. 2015, Sec. 4.2: pad 4 pixels (zeros), random 32 crop, flip.
- `none`     shorter side to input_size, centre crop, normalise.

Evaluation (`eval_transform`): shorter side to resize_size (default `default_resize`:
round(input/0.875), 256 for 224, 342 for 299; the input size itself for inputs of at most 64 px),
then the centre crop [3, S, S] or ten crops [10, 3, S, S] in the order
(top-left, top-right, bottom-left, bottom-right, centre, then the horizontal flip of each of
those five, same order). The papers' sizes are in `PAPER_EVAL`. For 32x32 data (native size
<= 64 and input_size == native size) "centre" is the image as it is and "ten" crops the image
padded by 4 pixels.

Weights from Caffe (WeightSpec channel_order "BGR", pixel_scale 255, resize_mode "squash") are fed
as Caffe's python classifier feeds them: the image squashed to resize_size x resize_size (aspect
ignored), centre crop, pixels 0-255 in BGR order minus the mean pixel (`CaffeInput`).

`describe_preprocessing(spec)` says in words and numbers what the evaluation transform of a
WeightSpec does (eval/predict/summary/serve output, the export sidecar).

Every returned transform has `draft_size`: the shorter side it needs from the decoder, used by
the datasets for PIL's draft mode (fast reduced-size JPEG decoding).

Deviations:
- Mean subtraction uses `Normalize(mean, std)` with the values passed in (the WeightSpec's),
  so training and evaluation agree; pass std=(1, 1, 1) for the papers' pure mean subtraction
  (AlexNet subtracted a mean image, not per-channel means).
- The PCA eigenvalues/vectors are the ImageNet ones published with fb.resnet.torch (pixels in
  [0, 1]); the AlexNet paper describes the method but prints no numbers.
- Inception's random interpolation method per image is not reproduced (bilinear always).
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as F

from ..errors import UserError

PRESETS = ("alexnet", "vgg", "inception", "resnet", "cifar", "none")

# ImageNet RGB covariance (pixels in [0, 1]): eigenvalues, eigenvectors as columns
IMAGENET_PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_PCA_EIGVEC = ((-0.5675, 0.7192, 0.4009), (-0.5808, -0.0045, -0.8140), (-0.5836, -0.6948, 0.4203))

# model family -> (input size, resize size) of the paper's single-crop / 10-crop evaluation
PAPER_EVAL = {
    "alexnet": (227, 256),  # Caffe reference crops 227 from 256 (the paper says 224)
    "vgg": (224, 256),  # Q = S = 256 single scale
    "googlenet": (224, 256),
    "inception": (299, 342),  # Inception v3/v4: 299 crop, 0.875 central fraction
    "resnet": (224, 256),
}


class Lighting:
    """AlexNet PCA colour augmentation on a float [3, H, W] image in [0, 1]:
    adds eigvec @ (alpha * eigval) to every pixel, alpha ~ N(0, sigma^2) per image."""

    def __init__(self, sigma: float = 0.1, eigval=IMAGENET_PCA_EIGVAL, eigvec=IMAGENET_PCA_EIGVEC):
        self.sigma = sigma
        self.eigval = torch.tensor(eigval)
        self.eigvec = torch.tensor(eigvec)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if self.sigma == 0:
            return img
        alpha = torch.randn(3) * self.sigma
        rgb = self.eigvec @ (alpha * self.eigval)
        return img + rgb.view(3, 1, 1).to(img.dtype)

    def __repr__(self) -> str:
        return f"Lighting(sigma={self.sigma})"


class ChannelScale:
    """[..., 3, H, W] RGB in [0, 1] -> `order` (RGB or BGR) in [0, scale]: Caffe's raw_scale 255
    and channel_swap (2, 1, 0); the identity for RGB/1."""

    def __init__(self, order: str = "RGB", scale: float = 1.0):
        if order not in ("RGB", "BGR"):
            raise UserError(f"unknown channel order {order!r}: use RGB or BGR")
        self.order, self.scale = order, float(scale)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if self.order == "BGR":
            img = img.flip(-3)
        return img * self.scale if self.scale != 1.0 else img

    def invert(self, x: torch.Tensor) -> torch.Tensor:
        """Back to RGB in [0, 1] (for displaying an input, e.g. under a CAM)."""
        x = x / self.scale if self.scale != 1.0 else x
        return x.flip(-3) if self.order == "BGR" else x

    def __repr__(self) -> str:
        return f"ChannelScale(order={self.order}, scale={self.scale:g})"


class TenCrop:
    """[10, C, S, S]: four corners and centre (torchvision's five_crop), then their flips."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        crops = list(F.five_crop(img, [self.size, self.size]))
        return torch.stack(crops + [F.horizontal_flip(c) for c in crops])

    def __repr__(self) -> str:
        return f"TenCrop(size={self.size})"


class Preset(v2.Compose):
    """A Compose that knows the shorter side it needs from the decoder (`draft_size`)."""

    def __init__(self, transforms, draft_size: int | None):
        super().__init__(transforms)
        self.draft_size = draft_size


def interpolation_mode(name: str) -> InterpolationMode:
    """torchvision's mode for a name (`bilinear`, `bicubic`, ...); UserError for an unknown one."""
    try:
        return InterpolationMode(str(name).lower())
    except ValueError:
        raise UserError(
            f"unknown interpolation {name!r}: use one of {', '.join(m.value for m in InterpolationMode)}"
        ) from None


def _scaled(size: int, input_size: int) -> int:
    return size if input_size in (224, 227) else round(size * input_size / 224)


def tensor_steps(mean, std, channels: ChannelScale | None = None) -> tuple[list, list]:
    """(decoded image -> fp32 tensor in [0, 1], normalisation) steps; `channels` converts to the
    channel order and pixel scale a model was trained on (Caffe's BGR 0-255) before normalising."""
    norm = [v2.Normalize(list(mean), list(std)), v2.ToPureTensor()]
    if channels is not None and (channels.order != "RGB" or channels.scale != 1.0):
        norm.insert(0, channels)
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)], norm


def _check_size(input_size) -> int:
    if not isinstance(input_size, int) or input_size < 1:
        raise UserError(f"input size must be a positive integer, got {input_size!r}")
    return input_size


def train_transform(preset: str, input_size: int, mean, std) -> Preset:
    """The training augmentation of a paper (see the module docstring)."""
    s = _check_size(input_size)
    tensor, norm = tensor_steps(mean, std)
    flip = v2.RandomHorizontalFlip()
    if preset == "alexnet":
        r = _scaled(256, s)
        ops, draft = [v2.Resize(r), v2.CenterCrop(r), v2.RandomCrop(s), flip, *tensor, Lighting(0.1)], r
    elif preset == "vgg":
        lo, hi = _scaled(256, s), _scaled(512, s)
        ops, draft = [v2.RandomResize(lo, hi + 1), v2.RandomCrop(s), flip, *tensor, Lighting(0.1)], hi
    elif preset == "resnet":
        lo, hi = _scaled(256, s), _scaled(480, s)
        ops, draft = [v2.RandomResize(lo, hi + 1), v2.RandomCrop(s), flip, *tensor, Lighting(0.1)], hi
    elif preset == "inception":
        jitter = v2.ColorJitter(brightness=0.125, contrast=0.5, saturation=0.5, hue=0.2)
        ops = [v2.RandomResizedCrop(s, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)), flip, jitter, *tensor]
        draft = round(s / math.sqrt(0.08))  # the smallest crops still get native resolution
    elif preset == "cifar":
        ops, draft = (
            [
                v2.Resize(s),
                v2.CenterCrop(s),
                v2.RandomCrop(s, padding=max(1, round(4 * s / 32))),
                flip,
                *tensor,
            ],
            s,
        )
    elif preset == "none":
        ops, draft = [v2.Resize(s), v2.CenterCrop(s), *tensor], s
    else:
        raise UserError(f"unknown augmentation preset {preset!r}: use one of {', '.join(PRESETS)}")
    return Preset(ops + norm, draft)


def eval_transform(
    input_size: int,
    mean,
    std,
    resize_size: int | None = None,
    interpolation="bilinear",
    crop: str = "center",
    native_size: int | None = None,
    channel_order: str = "RGB",
    pixel_scale: float = 1.0,
    resize_mode: str = "shorter",
) -> Preset:
    """Resize + centre crop ([3, S, S]) or ten-crop ([10, 3, S, S]); small native images as they are.

    `resize_mode` "shorter" resizes the shorter side to resize_size, "squash" the whole image to
    resize_size x resize_size; `channel_order`/`pixel_scale` as in `ChannelScale` (before mean/std)."""
    s = _check_size(input_size)
    if crop not in ("center", "ten"):
        raise UserError(f"unknown crop {crop!r}: use center or ten")
    if resize_mode not in ("shorter", "squash"):
        raise UserError(f"unknown resize mode {resize_mode!r}: use shorter or squash")
    mode = interpolation_mode(interpolation)
    tensor, norm = tensor_steps(mean, std, ChannelScale(channel_order, pixel_scale))
    if native_size is not None and native_size <= 64 and s == native_size:
        # the image as it is (Resize/CenterCrop are no-ops on native-size images, guards for others)
        ops = [v2.Resize(s, interpolation=mode), v2.CenterCrop(s), *tensor]
        if crop == "ten":
            ops += [v2.Pad(4), TenCrop(s)]
        return Preset(ops + norm, s)
    r = resize_size or default_resize(s)
    if r < s:
        raise UserError(f"resize size {r} is smaller than the crop {s}")
    size = [r, r] if resize_mode == "squash" else r
    ops = [v2.Resize(size, interpolation=mode), *tensor, v2.CenterCrop(s) if crop == "center" else TenCrop(s)]
    return Preset(ops + norm, r)


SMALL_INPUT = 64  # pixels: CIFAR-sized networks and below


def default_resize(crop: int) -> int:
    """The shorter side before the centre crop where a WeightSpec leaves it open: crop / 0.875
    (ImageNet's 256 -> 224) for ImageNet-sized inputs, the crop itself for inputs of at most
    SMALL_INPUT px. Small networks train on whole small images (the `cifar` preset resizes to the
    input, no margin), and enlarging a 32-px photo to 37 then cropping 32 back drops its border:
    vgg8_cifar on the CIFAR-10 test JPEGs, 71.4 % top-1 whole against 55.2 % enlarged and cropped
    (benchmarks/small_input_eval.py, docs/preprocessing.md)."""
    return crop if crop <= SMALL_INPUT else round(crop / 0.875)


def effective_sizes(spec) -> tuple[int, int]:
    """(resize, crop) that `eval_transform_from_spec` applies for a WeightSpec (None filled in)."""
    crop = spec.crop_size or spec.input_size
    return spec.resize_size or default_resize(crop), crop


def describe_preprocessing(
    spec,
    input_size: int | None = None,
    crop: str = "center",
    native_size: int | None = None,
    scales: list[int] | None = None,
) -> dict:
    """The preprocessing `predict`, `serve` and `eval` apply for a WeightSpec (and `export`'s sidecar
    states), every size filled in (a spec may leave resize_size None for the default rule,
    `default_resize`; a consumer reading that literally would resize differently), with the steps
    in order as text.
    `input_size`: another crop size (as `eval --input-size`), resized by the same rule. For `eval`:
    `crop` "ten" or "dense" (over `scales`), and `native_size`, the dataset's own image size: small
    images at the network's own size are taken as they are (`eval_transform`)."""
    if input_size is not None and input_size != (spec.crop_size or spec.input_size):
        spec = dataclasses.replace(spec, input_size=input_size, crop_size=input_size, resize_size=None)
    resize: int | list[int] | None
    resize, size = effective_sizes(spec)
    scale = {1.0: "pixel/255", 255.0: "pixel"}.get(spec.pixel_scale, f"pixel/255*{spec.pixel_scale:g}")
    first = (
        f"squash to {resize}x{resize} (aspect ratio ignored, {spec.interpolation})"
        if spec.resize_mode == "squash"
        else f"resize the shorter side to {resize} ({spec.interpolation}, on the 8-bit image)"
    )
    cut = f"centre crop {size}x{size}"
    if crop == "dense":  # VGG's multi-scale evaluation (inference/dense.py)
        resize, first = scales, f"resize the shorter side to each of {scales} ({spec.interpolation})"
        cut = "the whole image, the classifier slid over it"
    elif native_size is not None and native_size <= 64 and native_size == size:
        resize, first, cut = size, f"the image as it is ({size}x{size}, the dataset's own size)", "no crop"
        if crop == "ten":
            cut = f"pad 4 pixels, ten crops {size}x{size} (corners, centre, and their mirror images)"
    elif crop == "ten":
        cut = f"ten crops {size}x{size} (corners, centre, and their mirror images)"
    return {
        "resize_mode": spec.resize_mode,
        "resize_size": resize,
        "crop_size": size,
        "input_size": size,
        "interpolation": spec.interpolation,
        "channel_order": spec.channel_order,
        "pixel_scale": spec.pixel_scale,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "steps": [
            "decode to RGB",
            first,
            cut,
            f"x = ({scale} - mean) / std per channel in {spec.channel_order} order, mean "
            f"{', '.join(f'{v:g}' for v in spec.mean)}, std {', '.join(f'{v:g}' for v in spec.std)}; "
            "NCHW float32",
        ],
    }


def eval_transform_from_spec(spec, crop: str = "center", native_size: int | None = None) -> Preset:
    """`eval_transform` with the sizes, interpolation and normalisation stored in a WeightSpec."""
    return eval_transform(
        spec.crop_size or spec.input_size,
        spec.mean,
        spec.std,
        spec.resize_size,
        spec.interpolation,
        crop,
        native_size,
        spec.channel_order,
        spec.pixel_scale,
        spec.resize_mode,
    )


def to_display(spec, x: torch.Tensor) -> torch.Tensor:
    """A network input made by `eval_transform_from_spec` back to an RGB image in [0, 1]."""
    # -1: a WeightSpec may give one value for all channels (validate() accepts 1 or 3)
    mean = torch.tensor(spec.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    std = torch.tensor(spec.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return ChannelScale(spec.channel_order, spec.pixel_scale).invert(x * std + mean)
