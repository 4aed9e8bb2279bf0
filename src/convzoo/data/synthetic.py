"""The built-in `synthetic` dataset: coloured shapes, generated from the seed, no files.

Ten classes, one per shape (disc, square, triangle, diamond, pentagon, hexagon, star, cross,
ring, half-disc). Every image draws, from its own random stream, a position, a scale (35-80%
of the image), a rotation, a background texture (smooth gradient, stripes, checkerboard or
noise in two random colours) and a fill colour: for half of the images a colour of the
class's own hue (hue 36 deg * class +- 10), for the other half any colour. So colour is an
easy cue that a small network picks up in its first epoch (accuracy rises early in a short
CPU demo), and the silhouette is needed for the rest; place, size and angle are nuisances. Shapes are drawn
at 4x resolution and reduced with a box filter (anti-aliased edges).

Image i of split s with seed k is generated from `numpy.random.SeedSequence([k, s, i])`, so
the dataset is identical on every rank and every data-loader worker and needs no storage;
labels are a seeded permutation of a balanced list (each class 1/10 of the split).
"""

from __future__ import annotations

import colorsys
import math

import numpy as np
import torch
from PIL import Image, ImageDraw

CLASSES = [
    "disc",
    "square",
    "triangle",
    "diamond",
    "pentagon",
    "hexagon",
    "star",
    "cross",
    "ring",
    "half-disc",
]
SPLITS = {"train": (0, 5000), "val": (1, 1000)}  # split -> (stream id, default size)
_SUPER = 4  # supersampling factor for anti-aliasing
CLASS_COLOUR_P = 0.5  # share of images whose fill has the class's own hue (the rest: any colour)


def _polygon(n: int, radius: float = 1.0, phase: float = -math.pi / 2) -> list[tuple[float, float]]:
    return [
        (radius * math.cos(phase + 2 * math.pi * k / n), radius * math.sin(phase + 2 * math.pi * k / n))
        for k in range(n)
    ]


def _star() -> list[tuple[float, float]]:
    outer, inner = _polygon(5), _polygon(5, 0.4, -math.pi / 2 + math.pi / 5)
    return [p for pair in zip(outer, inner) for p in pair]


_Outline = list[tuple[float, float]]  # a closed polygon in the unit square
_CROSS: _Outline
_CROSS = [
    (-0.3, -1),
    (0.3, -1),
    (0.3, -0.3),
    (1, -0.3),
    (1, 0.3),
    (0.3, 0.3),
    (0.3, 1),
    (-0.3, 1),
    (-0.3, 0.3),
    (-1, 0.3),
    (-1, -0.3),
    (-0.3, -0.3),
]
_HALF = [(math.cos(t), math.sin(t)) for t in np.linspace(0, math.pi, 24)]
# unit-size outlines, centred at 0; "disc" and "ring" are drawn as ellipses
_OUTLINES: dict[str, _Outline]
_OUTLINES = {
    "square": _polygon(4, 1.0, math.pi / 4),
    "triangle": _polygon(3),
    "diamond": [(0, -1), (0.6, 0), (0, 1), (-0.6, 0)],
    "pentagon": _polygon(5),
    "hexagon": _polygon(6),
    "star": _star(),
    "cross": _CROSS,
    "half-disc": _HALF,
}


def _colour(rng: np.random.Generator, label: int | None = None) -> tuple[int, int, int]:
    """A random colour; with a label, a saturated colour of the class's hue (36 deg * label +- 10)."""
    if label is None:
        r, g, b = (int(v) for v in rng.integers(0, 256, 3))
        return r, g, b
    hue = (label / len(CLASSES) + rng.uniform(-10, 10) / 360) % 1.0
    rgb = colorsys.hsv_to_rgb(hue, rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0))
    r, g, b = (int(round(255 * v)) for v in rgb)
    return r, g, b


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    yy, xx = np.mgrid[0:size, 0:size] / size
    kind = rng.integers(4)
    angle = rng.uniform(0, math.pi)
    u = xx * math.cos(angle) + yy * math.sin(angle)
    if kind == 0:  # gradient
        t = u / max(1e-6, abs(math.cos(angle)) + abs(math.sin(angle)))
    elif kind == 1:  # stripes
        t = 0.5 + 0.5 * np.sin(2 * math.pi * u * rng.uniform(2, 6))
    elif kind == 2:  # checkerboard
        n = rng.integers(2, 6)
        t = ((np.floor(xx * n) + np.floor(yy * n)) % 2).astype(float)
    else:  # noise
        t = rng.uniform(0, 1, (size, size))
    img = c0 + (c1 - c0) * t[..., None] * rng.uniform(0.2, 0.6)  # low contrast: the shape stands out
    return np.clip(img, 0, 255).astype(np.uint8)


def render(label: int, rng: np.random.Generator, size: int = 32) -> Image.Image:
    """One image of class `label` drawn from `rng`."""
    big = size * _SUPER
    background = _background(rng, size)
    canvas = Image.fromarray(background).resize((big, big), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(canvas)
    radius = rng.uniform(0.35, 0.8) * big / 2
    cx, cy = rng.uniform(radius, big - radius, 2)
    theta = rng.uniform(0, 2 * math.pi)
    class_colour = rng.uniform() < CLASS_COLOUR_P
    fill = _colour(rng, label if class_colour else None)
    for _ in range(20):  # keep the shape visible: redraw colours too close to the background's mean
        if np.abs(np.subtract(fill, background.reshape(-1, 3).mean(0))).sum() > 160:
            break
        fill = _colour(rng, label if class_colour else None)
    name = CLASSES[label]
    if name in ("disc", "ring"):
        box = [cx - radius, cy - radius, cx + radius, cy + radius]
        if name == "disc":
            draw.ellipse(box, fill=fill)
        else:
            draw.ellipse(box, outline=fill, width=max(2, int(radius * 0.35)))
    else:
        c, s = math.cos(theta), math.sin(theta)
        pts = [(cx + radius * (x * c - y * s), cy + radius * (x * s + y * c)) for x, y in _OUTLINES[name]]
        draw.polygon(pts, fill=fill)
    return canvas.resize((size, size), Image.Resampling.BOX)


class SyntheticDataset(torch.utils.data.Dataset):
    """`synthetic`: items are (transform(PIL image), label); see the module docstring."""

    label_set = "synthetic"

    def __init__(
        self,
        split: str = "train",
        seed: int = 0,
        transform=None,
        size: int | None = None,
        image_size: int = 32,
    ):
        stream, default = SPLITS[split]
        self.split, self.seed, self.transform, self.image_size = split, seed, transform, image_size
        self._stream = stream
        n = default if size is None else int(size)
        rng = np.random.default_rng([seed, stream, 2**31 - 1])  # distinct from every image stream
        self.targets = [int(t) for t in rng.permutation(np.arange(n) % len(CLASSES))]
        self.classes = list(CLASSES)
        self.num_classes = len(CLASSES)
        self.native_size = image_size
        self.samples = [(f"synthetic:{split}/{i}", t) for i, t in enumerate(self.targets)]

    def __len__(self) -> int:
        return len(self.targets)

    def image(self, index: int) -> Image.Image:
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self._stream, index]))
        return render(self.targets[index], rng, self.image_size)

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(index)
        img = self.image(index)
        return (self.transform(img) if self.transform else img), self.targets[index]
