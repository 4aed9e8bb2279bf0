"""A fast ImageNet-resolution training input path: decode + random-resized-crop + flip.

The plain path (PIL decode of the whole photo -> RandomResizedCrop -> flip -> ToTensor ->
Normalize, per image, in fp32) spends most of its time on work that can be skipped:
- decoding pixels that the crop then throws away at reduced resolution. PIL's JPEG
  `draft` mode decodes at 1/2, 1/4 or 1/8 scale in the DCT domain (libjpeg's scaled IDCT),
  so when the crop is later shrunk by >= 2x it is decoded at the smaller scale directly;
- converting to float and normalising one image at a time: here an image stays uint8
  CHW (a quarter of the bytes through the DataLoader's queues) and `normalize_batch` makes
  the float (or bf16), normalised, channels_last batch in one vectorised op;
- PIL's decoder: where no DCT scaling applies, torchvision.io's libjpeg-turbo decoder is
  used, and crop + resize + flip run on the uint8 tensor (torchvision's vectorised
  antialiased bilinear kernel) instead of PIL's float path.

`RandomResizedCropDecode` draws the crop exactly as torchvision's RandomResizedCrop
(scale (0.08, 1), ratio (3/4, 4/3), 10 tries then a center crop) from the header size,
before decoding. Non-JPEG files are decoded in full (draft is a no-op for them).
"""

from __future__ import annotations

import io
import math
import random
from typing import Protocol

import torch
from PIL import Image


class _Rng(Protocol):
    """What crop_params draws from: the `random` module itself or a seeded random.Random."""

    def uniform(self, a: float, b: float) -> float: ...
    def randint(self, a: int, b: int) -> int: ...


def crop_params(
    width: int, height: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), rng: _Rng = random
) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params on a size: (top, left, h, w)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class RandomResizedCropDecode:
    """path -> uint8 CHW tensor [3, size, size]: decoded, cropped, resized, maybe flipped.

    JPEGs whose crop is >= 2x the output size are decoded by PIL in draft mode at the
    reduced scale; the others are decoded by torchvision.io's libjpeg-turbo decoder and
    resampled in uint8 (torchvision's antialiased bilinear kernel). Other formats go
    through PIL in full.
    """

    def __init__(
        self,
        size: int = 224,
        scale=(0.08, 1.0),
        ratio=(3 / 4, 4 / 3),
        flip: float = 0.5,
        seed: int | None = None,
    ):
        self.size, self.scale, self.ratio, self.flip = size, scale, ratio, flip
        self.rng = random.Random(seed) if seed is not None else random

    def __call__(self, path: str) -> torch.Tensor:
        with open(path, "rb") as f:
            data = f.read()
        with Image.open(io.BytesIO(data)) as im:  # reads the header only
            W, H = im.size
            top, left, h, w = crop_params(W, H, self.scale, self.ratio, self.rng)
            # largest DCT scaling (1, 1/2, 1/4, 1/8) that keeps the crop >= the output size
            reduce = 1
            while reduce < 8 and min(h, w) >= 2 * reduce * self.size:
                reduce *= 2
            if im.format == "JPEG" and reduce == 1:
                out = self._turbo(data, top, left, h, w)
            else:
                if reduce > 1 and im.format == "JPEG":
                    im.draft("RGB", (math.ceil(W / reduce), math.ceil(H / reduce)))
                sx, sy = im.size[0] / W, im.size[1] / H  # the scale draft actually chose
                box = (left * sx, top * sy, (left + w) * sx, (top + h) * sy)
                im = im.convert("RGB").resize((self.size, self.size), Image.Resampling.BILINEAR, box=box)
                out = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
                out = out.view(self.size, self.size, 3).permute(2, 0, 1)
        if self.rng.random() < self.flip:
            out = out.flip(-1)
        return out

    def _turbo(self, data: bytes, top: int, left: int, h: int, w: int) -> torch.Tensor:
        from torchvision.io import ImageReadMode, decode_jpeg
        from torchvision.transforms.v2.functional import resized_crop

        img = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        return resized_crop(img, top, left, h, w, [self.size, self.size], antialias=True)


def normalize_batch(images: torch.Tensor, mean, std, dtype=torch.float32) -> torch.Tensor:
    """uint8 [N, 3, H, W] -> normalised [N, 3, H, W] in `dtype`, as one vectorised op on the
    whole batch. Stays NCHW-contiguous: converting a uint8 batch to channels_last here was
    measured 13x slower than this whole function; the model's first cast does it instead."""
    x = images.to(dtype)
    m = torch.tensor(mean, dtype=dtype).view(1, 3, 1, 1) * 255
    s = torch.tensor(std, dtype=dtype).view(1, 3, 1, 1) * 255
    return x.sub_(m).div_(s)
