"""The papers' augmentation presets and the evaluation crops.

Expected values come from the geometry, not from running the code: a generated image whose
pixels encode their own coordinates (R = x, G = y), so every crop must equal the numpy slice
that the crop's definition names (torchvision's centre offset is round((H - S) / 2)).
"""

import numpy as np
import pytest
import torch
from PIL import Image

from convzoo.data.transforms import (
    IMAGENET_PCA_EIGVAL,
    IMAGENET_PCA_EIGVEC,
    PAPER_EVAL,
    PRESETS,
    Lighting,
    eval_transform,
    eval_transform_from_spec,
    train_transform,
)
from convzoo.errors import UserError
from convzoo.weights import WeightSpec

ZERO, ONE = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)


def coord_image(w: int, h: int) -> np.ndarray:
    """uint8 [h, w, 3]: R = x, G = y, B = (x + y) % 256."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx, yy, (xx + yy) % 256], -1).astype(np.uint8)


def as_tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).permute(2, 0, 1).float() / 255


def same(x: torch.Tensor, y: torch.Tensor) -> bool:
    """Equal up to float rounding (x/255 vs x*(1/255)); a one-pixel shift differs by >= 1/255."""
    return x.shape == y.shape and torch.allclose(x, y, atol=1e-6, rtol=0)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("wh", [(500, 375), (120, 90), (224, 224)])
def test_train_preset_output_size(preset, wh):
    img = Image.fromarray(coord_image(*wh))
    out = train_transform(preset, 224, (0.5,) * 3, (0.25,) * 3)(img)
    assert type(out) is torch.Tensor and out.shape == (3, 224, 224) and out.dtype == torch.float32


@pytest.mark.parametrize(
    "preset,size", [("inception", 299), ("alexnet", 227), ("cifar", 32), ("resnet", 112)]
)
def test_train_preset_other_sizes(preset, size):
    img = Image.fromarray(coord_image(40, 32) if size == 32 else coord_image(400, 300))
    assert train_transform(preset, size, ZERO, ONE)(img).shape == (3, size, size)


@pytest.mark.parametrize("preset,lo,hi", [("vgg", 256, 512), ("resnet", 256, 480)])
def test_scale_jitter_range(preset, lo, hi):
    """VGG Sec. 3.1 S in [256, 512]; ResNet Sec. 3.4 shorter side in [256, 480]."""
    resize = train_transform(preset, 224, ZERO, ONE).transforms[0]
    torch.manual_seed(0)
    sides = {min(resize(Image.new("RGB", (300, 200))).size) for _ in range(60)}
    assert min(sides) >= lo and max(sides) <= hi and len(sides) > 20


def test_cifar_preset_pads_with_zeros_and_crops_32():
    """He et al. Sec. 4.2: pad 4, random 32 crop. An all-white image must show a black border
    (zero padding) in some crops and be untouched in others."""
    t = train_transform("cifar", 32, ZERO, ONE)
    torch.manual_seed(0)
    outs = [t(Image.new("RGB", (32, 32), (255, 255, 255))) for _ in range(30)]
    assert all(o.shape == (3, 32, 32) for o in outs)
    assert any((o == 0).any() for o in outs) and all(o.max() == 1 for o in outs)


def test_pca_lighting_matches_paper_formula():
    """AlexNet Sec. 4.1: add [p1 p2 p3][a1 l1, a2 l2, a3 l3]^T to every pixel, a ~ N(0, 0.1)."""
    vec = torch.tensor(IMAGENET_PCA_EIGVEC)
    assert torch.allclose(vec.T @ vec, torch.eye(3), atol=2e-3)  # published eigenvectors are orthonormal
    img = torch.rand(3, 5, 7)
    torch.manual_seed(3)
    out = Lighting(0.1)(img)
    torch.manual_seed(3)
    alpha = torch.randn(3) * 0.1
    expected = sum(alpha[i] * IMAGENET_PCA_EIGVAL[i] * vec[:, i] for i in range(3))
    assert torch.allclose(out - img, expected.view(3, 1, 1).expand_as(img), atol=1e-6)
    assert torch.equal(Lighting(0.0)(img), img)


def test_eval_center_default_resize_and_size():
    img = Image.fromarray(coord_image(500, 375))
    t = eval_transform(224, ZERO, ONE)
    assert t.draft_size == 256 and t(img).shape == (3, 224, 224)
    t = eval_transform(299, ZERO, ONE, crop="ten")
    assert t.draft_size == 342 and t(img).shape == (10, 3, 299, 299)


def test_ten_crop_geometry():
    """No resampling (resize_size = shorter side), mean 0, std 1: crops are slices of the image."""
    a = coord_image(256, 240)
    out = eval_transform(224, ZERO, ONE, resize_size=240, crop="ten")(Image.fromarray(a))
    full = as_tensor(a)
    S = 224
    slices = [
        full[:, :S, :S],
        full[:, :S, -S:],
        full[:, -S:, :S],
        full[:, -S:, -S:],
        full[:, 8 : 8 + S, 16 : 16 + S],
    ]  # centre: round((240-224)/2)=8, round((256-224)/2)=16
    for i, expected in enumerate(slices):
        assert same(out[i], expected), f"crop {i}"
        assert same(out[5 + i], expected.flip(-1)), f"flip of crop {i}"
    # and the centre crop alone is the same slice
    center = eval_transform(224, ZERO, ONE, resize_size=240)(Image.fromarray(a))
    assert same(center, slices[4])


def test_native_32_center_is_the_image_and_ten_crop_pads_4():
    a = coord_image(32, 32)
    center = eval_transform(32, ZERO, ONE, native_size=32)(Image.fromarray(a))
    assert same(center, as_tensor(a))
    ten = eval_transform(32, ZERO, ONE, crop="ten", native_size=32)(Image.fromarray(a))
    padded = torch.nn.functional.pad(as_tensor(a), (4, 4, 4, 4))  # 40x40, zeros around
    expected = [
        padded[:, :32, :32],
        padded[:, :32, 8:],
        padded[:, 8:, :32],
        padded[:, 8:, 8:],
        padded[:, 4:36, 4:36],
    ]
    assert ten.shape == (10, 3, 32, 32)
    for i, e in enumerate(expected):
        assert same(ten[i], e) and same(ten[5 + i], e.flip(-1))
    assert same(ten[4], as_tensor(a))  # the centre crop is the image


def test_normalisation_applied():
    img = Image.new("RGB", (32, 32), (255, 0, 51))
    out = eval_transform(32, (0.5, 0.5, 0.5), (0.5, 0.25, 0.1), native_size=32)(img)
    assert torch.allclose(out[:, 0, 0], torch.tensor([1.0, -2.0, -3.0]), atol=1e-6)  # (v-m)/s by hand


def test_from_spec_and_paper_sizes():
    spec = WeightSpec(model="x", num_classes=10, input_size=299, resize_size=320, interpolation="bicubic")
    t = eval_transform_from_spec(spec)
    assert t.draft_size == 320 and t(Image.new("RGB", (400, 300))).shape == (3, 299, 299)
    assert PAPER_EVAL["alexnet"] == (227, 256) and PAPER_EVAL["inception"] == (299, 342)
    size, resize = PAPER_EVAL["alexnet"]
    assert eval_transform(size, ZERO, ONE, resize, crop="ten")(Image.new("RGB", (300, 256))).shape == (
        10,
        3,
        227,
        227,
    )


@pytest.mark.parametrize(
    "call",
    [
        lambda: train_transform("lenet", 224, ZERO, ONE),
        lambda: train_transform("alexnet", 0, ZERO, ONE),
        lambda: eval_transform(224, ZERO, ONE, crop="twelve"),
        lambda: eval_transform(224, ZERO, ONE, interpolation="cubic-ish"),
        lambda: eval_transform(224, ZERO, ONE, resize_size=200),
    ],
)
def test_bad_arguments_are_user_errors(call):
    with pytest.raises(UserError):
        call()


def test_to_display_takes_a_one_value_mean():
    """validate() accepts one mean/std for all channels; showing such an input must not crash."""
    import torch

    from convzoo.data.transforms import to_display
    from convzoo.weights import WeightSpec

    spec = WeightSpec(model="resnet20_cifar", num_classes=10, mean=(0.5,), std=(0.25,), input_size=32)
    x = torch.zeros(3, 8, 8)
    assert torch.allclose(to_display(spec, x), torch.full((3, 8, 8), 0.5))
