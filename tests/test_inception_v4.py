"""Inception-v4 / Inception-ResNet-v1 / -v2 (Szegedy et al. 2016, arXiv:1602.07261)."""

import pytest
import torch

from convzoo import create_model, model_info
from convzoo.analysis.profile import profile
from convzoo.models.inception_v4 import InceptionResNetBlock

SMALL = 75  # the smallest input the layouts run on (see the module)


@pytest.mark.parametrize("name", ["inception_v4", "inception_resnet_v2"])
def test_counts_match_reference(name, paper_numbers):
    """Params and MACs at 299x299 against the package's reference/paper_numbers.json (meta device)."""
    entry = paper_numbers["models"][name]
    with torch.device("meta"):
        model = create_model(name)
    p = profile(model, entry["input"])
    assert p.params / 1e6 == pytest.approx(entry["params_M"]["reference"], rel=entry["params_M"]["tol"])
    assert p.macs / 1e9 == pytest.approx(entry["macs_G"]["reference"], rel=entry["macs_G"]["tol"])


def _randomise(model: torch.nn.Module) -> None:
    """Random weights and non-trivial BN statistics, so that BN eps and every key matter.

    Running variances of 0.02-0.07 make eps 1e-3 (TF-Slim) vs 1e-5 a 1-5% change per layer;
    gamma ~ sqrt(running_var) keeps activations from growing through ~150 layers.
    """
    g = torch.Generator().manual_seed(0)
    sd = model.state_dict()
    with torch.no_grad():
        for name, t in sd.items():
            if not t.is_floating_point() or name.endswith("bn.weight"):
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) * 0.05 + 0.02)
                gamma = sd[name.replace("running_var", "weight")]
                gamma.copy_(t.sqrt() * (torch.rand(t.shape, generator=g) * 0.4 + 0.8))
            elif name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif t.dim() > 1:
                t.copy_(torch.randn(t.shape, generator=g) * (1.0 / t[0].numel()) ** 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)


@pytest.mark.parametrize("name", ["inception_v4", "inception_resnet_v2"])
def test_timm_state_dict_loads_and_outputs_match(name):
    """timm's state_dict loads strictly (same keys and shapes) and eval outputs agree."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    ref = timm.create_model(name, pretrained=False).eval()
    _randomise(ref)
    ours = create_model(name).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, SMALL, SMALL)
    with torch.no_grad():
        want, got = ref(x), ours(x)
    assert got.shape == want.shape == (2, 1000)
    assert torch.isfinite(want).all() and want.abs().max() > 0
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()


@pytest.mark.parametrize(
    "name, key, scale",
    [
        ("inception_resnet_v1", "repeat.0", 0.17),
        ("inception_resnet_v1", "repeat_1.0", 0.10),
        ("inception_resnet_v1", "repeat_2.4", 0.20),
        ("inception_resnet_v2", "repeat.3", 0.17),
        ("inception_resnet_v2", "repeat_1.0", 0.10),
        ("inception_resnet_v2", "repeat_2.8", 0.20),
    ],
)
def test_residual_scaling_applied(name, key, scale):
    """Figs. 10-13, 16-19: out = ReLU(x + scale * conv1x1(concat(branches))), scales 0.17 / 0.10 / 0.20."""
    torch.manual_seed(0)
    block = create_model(name).get_submodule(key).eval()
    assert isinstance(block, InceptionResNetBlock) and block.scale == scale
    c = block.conv2d.out_channels
    x = torch.randn(1, c, 5, 5)
    with torch.no_grad():
        residual = block.conv2d(
            torch.cat([getattr(block, f"branch{i}")(x) for i in range(block.num_branches)], 1)
        )
        assert residual.abs().max() > 0
        torch.testing.assert_close(block(x), torch.relu(x + scale * residual))
        # ... and not the unscaled sum
        assert not torch.allclose(block(x), torch.relu(x + residual))


def test_last_v2_block_has_no_relu():
    """The released v2's final Inception-ResNet-C block (timm `block8`) is linear: negatives survive."""
    torch.manual_seed(0)
    block = create_model("inception_resnet_v2").block8.eval()
    with torch.no_grad():
        assert (block(torch.randn(1, 2080, 3, 3)) < 0).any()


def _block_params(model, key):
    return sum(p.numel() for p in model.get_submodule(key).parameters())


def test_inception_resnet_v1_block_counts_by_hand():
    """Parameter counts of Figs. 10 and 11, worked out by hand (a conv+BN layer: k*k*cin*cout + 2*cout;
    the 1x1 linear conv: cin*cout + cout bias).

    Inception-ResNet-A (Fig. 10), input 35x35x256:
      three 1x1 256->32:       3 * (256*32 + 64)   = 3 * 8,256  = 24,768
      three 3x3 32->32:        3 * (9*32*32 + 64)  = 3 * 9,280  = 27,840
      1x1 linear 96->256:      96*256 + 256                     = 24,832
      total                                                     = 77,440
      MACs at 35x35: (3*256*32 + 3*9*32*32 + 96*256) * 1225 = 76,800 * 1225 = 94,080,000
    Inception-ResNet-B (Fig. 11), input 17x17x896:
      two 1x1 896->128:        2 * (896*128 + 256) = 2 * 114,944 = 229,888
      1x7 and 7x1 128->128:    2 * (7*128*128 + 256) = 2 * 114,944 = 229,888
      1x1 linear 256->896:     256*896 + 896                     = 230,272
      total                                                      = 690,048
    Stage outputs: stem 35x35x256 (Fig. 14), Reduction-A 17x17x(256+384+256) = 896 (Table 1:
    m=256, n=384), Reduction-B 8x8x(896+384+256+256) = 1792 (Fig. 12), classifier 1792*1000+1000.
    """
    with torch.device("meta"):
        model = create_model("inception_resnet_v1")
    assert _block_params(model, "repeat.0") == 77_440
    assert _block_params(model, "repeat_1.0") == 690_048
    assert _block_params(model, "classif") == 1_793_000
    p = profile(model, 299)
    assert (
        p.row("repeat.0.conv2d").macs + sum(r.macs for r in p.layers if r.name.startswith("repeat.0.branch"))
        == 94_080_000
    )
    shapes = {r.name: r.output_shape for r in p.layers if r.depth == 0}
    assert shapes["stem.7"] == [256, 35, 35]
    assert shapes["reduction_a"] == [896, 17, 17]
    assert shapes["reduction_b"] == [1792, 8, 8]
    assert shapes["inception_resnet_c"] == [1792, 8, 8]


@pytest.mark.parametrize(
    "name, stem_out, rf",
    [
        ("inception_v4", "stem.6", 55),
        ("inception_resnet_v1", "stem.7", 31),
        ("inception_resnet_v2", "stem.8", 63),
    ],
)
def test_stem_receptive_field_by_hand(name, stem_out, rf):
    """Receptive field r and jump j of the stem output (r' = r + (k-1)*j per axis, j' = j*s).

    Common start (Figs. 3, 14): 3x3/2 -> r 3, j 2; 3x3 -> 7; 3x3 -> 11; 3x3/2 (pool or conv) -> 15, j 4.
    Inception-v4 (Fig. 3): 71x71 split, longest path 1x1, 1x7, 7x1, 3x3: each axis 15 + 6*4 + 2*4 = 47
      (a 1x7 then a 7x1 is 7x7, not 13x13); 3x3/2 split -> 47 + 2*4 = 55, j 8.
    Inception-ResNet-v1 (Fig. 14): 1x1 -> 15; 3x3 V -> 23; 3x3/2 V -> 31, j 8.
    Inception-ResNet-v2 (released): 1x1 -> 15; 3x3 -> 23; max 3x3/2 -> 31, j 8; Mixed_5b's 1x1-5x5 and
      1x1-3x3-3x3 branches -> 31 + 4*8 = 63.
    """
    with torch.device("meta"):
        model = create_model(name)
    row = profile(model, 299).row(stem_out)
    assert row.output_shape[1:] == [35, 35]
    assert (row.receptive_field, row.rf_stride) == (rf, 8)


def test_registry_metadata_and_paper_stages():
    for name in ("inception_v4", "inception_resnet_v1", "inception_resnet_v2"):
        info = model_info(name)
        assert info.input_size == 299 and info.min_input_size == SMALL
    with torch.device("meta"):
        v4 = create_model("inception_v4")
    stages = v4.paper_stages()
    # Fig. 9: 6 stem modules (Fig. 3), 4 x A, Reduction-A, 7 x B, Reduction-B, 3 x C
    assert stages["reduction_a"] == "features.10" and stages["reduction_b"] == "features.18"
    assert [k for k in stages if k.startswith("inception_b")] == [f"inception_b.{i}" for i in range(1, 8)]
    assert stages["inception_c.3"] == "features.21" and stages["classifier"] == "last_linear"
    for path in stages.values():
        v4.get_submodule(path)
