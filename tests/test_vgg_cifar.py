"""vgg8_cifar (models/vgg_cifar.py): the table's shapes, the whitening initialisation, and what
the training engine does with a model that declares `init_from_data`."""

import dataclasses

import pytest
import torch
import torch.nn as nn

from convzoo import create_model
from convzoo.recipes import resolve
from convzoo.training.finetune import param_groups


def test_rows_have_the_tables_shapes_and_widths():
    net = create_model("vgg8_cifar").eval()
    x = torch.randn(2, 3, 32, 32)
    shapes = {}
    for name in ("whiten", "group1", "group2", "group3"):
        getattr(net, name).register_forward_hook(lambda m, i, o, name=name: shapes.__setitem__(name, o.shape))
    assert net(x).shape == (2, 10)
    assert shapes == {
        "whiten": (2, 24, 31, 31),
        "group1": (2, 48, 15, 15),
        "group2": (2, 96, 7, 7),
        "group3": (2, 192, 3, 3),
    }
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (3, 24, (2, 2)),
        (24, 48, (3, 3)),
        (48, 48, (3, 3)),
        (48, 96, (3, 3)),
        (96, 96, (3, 3)),
        (96, 192, (3, 3)),
        (192, 192, (3, 3)),
    ]
    assert net.fc.bias is None and net.get_classifier() is net.fc
    # 7 convolutions + the classifier: the 8 weight layers of the name (the whitening conv counts)
    assert len(convs) + 1 == 8


def test_batchnorm_scale_and_whitening_filters_do_not_train():
    net = create_model("vgg8_cifar")
    frozen = {n for n, p in net.named_parameters() if not p.requires_grad}
    bn_weights = {f"{n}.weight" for n, m in net.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert frozen == bn_weights | {"whiten.weight"} and net.whiten.bias is None


def test_convolutions_start_as_the_identity_on_their_input_channels():
    """dirac init: a 3x3 conv's first `in_channels` filters pass their input channel through."""
    conv = create_model("vgg8_cifar").group2.conv1  # 48 -> 96
    x = torch.randn(1, 48, 7, 7)
    with torch.no_grad():
        assert torch.allclose(conv(x)[:, :48], x, atol=1e-6)


def test_init_from_data_whitens_the_2x2_patches():
    """After init_from_data, the first 12 whitening maps (before their GELU) of the same
    images are uncorrelated with variance eigenvalue / (eigenvalue + eps) - ~1 for every
    direction whose variance is far above eps. The images are smooth (neighbouring pixels and
    channels strongly correlated), so the raw patches are far from white."""
    from convzoo.models.vgg_cifar import WHITEN_EPS

    g = torch.Generator().manual_seed(0)
    base = torch.randn(400, 1, 8, 8, generator=g)
    images = nn.functional.interpolate(base, size=32, mode="bilinear", align_corners=False)
    noisy = [images + 0.5 * torch.randn(400, 1, 32, 32, generator=g) for _ in range(2)]
    images = torch.cat([images, *noisy], 1)
    net = create_model("vgg8_cifar")
    net.init_from_data(images)
    with torch.no_grad():
        maps = nn.functional.conv2d(images, net.whiten.weight[:12])  # [N, 12, 31, 31]
    flat = maps.permute(0, 2, 3, 1).reshape(-1, 12).double()
    raw = images.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 12).double()
    eigenvalues = torch.linalg.eigvalsh(raw.T @ raw / len(raw))
    assert torch.allclose(
        flat.T @ flat / len(flat), torch.diag(eigenvalues / (eigenvalues + WHITEN_EPS)), atol=1e-4
    )
    assert eigenvalues.max() / eigenvalues.min() > 1000  # far from white before
    assert (eigenvalues / (eigenvalues + WHITEN_EPS))[1:].min() > 0.98  # white after
    assert torch.equal(net.whiten.weight[12:], -net.whiten.weight[:12])


def _optim(**settings):
    return dataclasses.replace(resolve("vgg8_cifar").optim, **settings)


def test_param_groups_scale_batchnorm_shifts_and_keep_their_decay_per_step():
    net = create_model("vgg8_cifar")
    groups = param_groups(net, "vgg8_cifar", 10, 1.0, _optim(norm_bias_lr_mult=64.0, weight_decay=0.002))
    assert groups is not None and len(groups) == 2
    plain, shifts = sorted(groups, key=lambda g: g["lr_mult"])
    bn_biases = {id(m.bias) for m in net.modules() if isinstance(m, nn.BatchNorm2d)}
    assert {id(p) for p in shifts["params"]} == bn_biases
    assert shifts["lr_mult"] == 64.0 and plain["lr_mult"] == 1.0
    # lr x weight decay, the decay of one step, is the same in both groups
    assert shifts["lr_mult"] * shifts["weight_decay"] == pytest.approx(plain["weight_decay"])
    assert param_groups(net, "vgg8_cifar", 10, 1.0, _optim(norm_bias_lr_mult=1.0, weight_decay=0.002)) is None


def test_param_groups_combine_head_and_shift_multipliers():
    net = create_model("resnet20_cifar")
    groups = param_groups(net, "resnet20_cifar", 10, 5.0, _optim(norm_bias_lr_mult=2.0, weight_decay=1e-4))
    assert groups is not None
    by_param = {id(p): g["lr_mult"] for g in groups for p in g["params"]}
    assert by_param[id(net.fc.weight)] == 5.0 and by_param[id(net.bn1.bias)] == 2.0
    assert by_param[id(net.conv1.weight)] == 1.0
    assert sum(len(g["params"]) for g in groups) == sum(1 for p in net.parameters() if p.requires_grad)


def _tree(root, n=8):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("airplane", "cat"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                    root / split / cls / f"{i}.png"
                )
    return f"cifar10:{root}"


def test_a_fresh_run_initialises_from_data_and_a_resumed_run_does_not(tmp_path, capsys):
    """The airbench recipe on 16 images: the engine calls init_from_data on the training images
    (the saved whitening filters are the +- pairs it writes, never trained), the BatchNorm
    shifts train with 64x the lr; `--resume` of the finished run does not initialise again."""
    from safetensors.torch import load_file

    from convzoo.training.train import fit

    data = _tree(tmp_path / "cifar10")
    sets = ["time_limit_minutes=null", "epochs=2", "batch_size=8", "data.progressive=null", "precision=fp32"]
    cfg = resolve("vgg8_cifar", "airbench", {}, sets, data_spec=data)
    fit(cfg, str(tmp_path / "run"))
    assert "initialised VGGCifar from 16 training images (init_from_data)" in capsys.readouterr().err
    w = load_file(str(tmp_path / "run" / "last.safetensors"))["whiten.weight"]
    assert torch.equal(w[12:], -w[:12]) and w.abs().max() > 0  # the +- pairs of init_from_data
    fit(cfg, str(tmp_path / "run"), resume=True)
    assert "init_from_data" not in capsys.readouterr().err
