"""AlexNet, NiN and VGG against their papers, torchvision, and hand-derived geometry.

Expected numbers come from the package's data/reference/paper_numbers.json, from the papers'
tables (VGG Table 1/2), from hand derivations written out in the docstrings, or from
torchvision itself (equivalence with random weights) - never from this code's own output.
"""

import pytest
import torch
import torch.nn as nn

from convzoo import create_model, list_models
from convzoo.analysis.profile import profile
from convzoo.cli import main
from convzoo.models.vgg import CONFIGS, parse_layer
from helpers import load_paper_numbers, meta_model

_PAPER = load_paper_numbers()
OURS = [n for n in _PAPER["models"] if n == "alexnet_original" or n.startswith("vgg_")]


# ---- published counts -------------------------------------------------------------------
@pytest.mark.parametrize("name", OURS)
def test_params_and_macs_match_paper_numbers(name):
    """The most exact published figure (derived > reference > paper), within its tol."""
    ref = _PAPER["models"][name]
    prof = profile(meta_model(name), ref["input"], device="meta")
    for key, got, unit in (("params_M", prof.params, 1e6), ("macs_G", prof.macs, 1e9)):
        if key not in ref:
            continue
        entry = ref[key]
        want = next(entry[k] for k in ("derived", "reference", "paper") if k in entry)
        assert abs(got / unit - want) <= entry["tol"] * want, f"{name} {key}: {got / unit} vs {want}"


def test_alexnet_original_counts_by_hand():
    """Section 3.5 widths at 227: conv1 96*(11*11*3)+96 = 34,944; conv2 256*(5*5*48)+256 =
    307,456; conv3 384*(3*3*256)+384 = 885,120; conv4 384*(3*3*192)+384 = 663,936; conv5
    256*(3*3*192)+256 = 442,624; fc6 4096*9216+4096 = 37,752,832; fc7 4096*4096+4096 =
    16,781,312; fc8 1000*4096+1000 = 4,097,000. Sum 60,965,224."""
    prof = profile(meta_model("alexnet_original"), 227)
    expected = {
        "conv1": 34_944,
        "conv2": 307_456,
        "conv3": 885_120,
        "conv4": 663_936,
        "conv5": 442_624,
        "fc6": 37_752_832,
        "fc7": 16_781_312,
        "fc8": 4_097_000,
    }
    assert {k: prof.row(k).params for k in expected} == expected
    assert prof.params == 60_965_224


@pytest.mark.parametrize(
    "name, table2_millions",
    [("vgg_a", 133), ("vgg_a_lrn", 133), ("vgg_b", 133), ("vgg_c", 134), ("vgg_d", 138), ("vgg_e", 144)],
)
def test_vgg_table2_parameter_counts(name, table2_millions):
    """Simonyan & Zisserman Table 2, "Number of parameters (in millions)": 133 133 134 138 144
    for A, A-LRN, B, C, D, E (A and A-LRN share one column: LRN has no parameters)."""
    assert round(profile(meta_model(name), 224).params / 1e6) == table2_millions


def test_vgg_a_lrn_equals_a_in_parameters():
    assert profile(meta_model("vgg_a_lrn"), 224).params == profile(meta_model("vgg_a"), 224).params


def test_nin_counts_by_hand():
    """Params from the released definitions, transcribed here independently as (in, out, k):
    NIN-Imagenet sums to 7,595,176 (conv1 34,944 + 2 x 9,312; conv2 614,656 + 2 x 65,792;
    conv3 885,120 + 2 x 147,840; conv4-1024 3,539,968 + 1,049,600 + 1,025,000);
    cifar10_nin to 966,986."""

    def count(layers):
        return sum(o * i * k * k + o for i, o, k in layers)

    imagenet = [
        (3, 96, 11),
        (96, 96, 1),
        (96, 96, 1),
        (96, 256, 5),
        (256, 256, 1),
        (256, 256, 1),
        (256, 384, 3),
        (384, 384, 1),
        (384, 384, 1),
        (384, 1024, 3),
        (1024, 1024, 1),
        (1024, 1000, 1),
    ]
    cifar = [
        (3, 192, 5),
        (192, 160, 1),
        (160, 96, 1),
        (96, 192, 5),
        (192, 192, 1),
        (192, 192, 1),
        (192, 192, 3),
        (192, 192, 1),
        (192, 10, 1),
    ]
    assert count(imagenet) == 7_595_176
    assert profile(meta_model("nin"), 224).params == count(imagenet)
    assert profile(meta_model("nin_cifar"), 32).params == count(cifar)
    # global average pooling sees the last cccp maps: 6x6 at 224 (Caffe pool4 6x6), 8x8 at 32
    assert profile(meta_model("nin"), 224).row("mlpconv4").output_shape == [1000, 6, 6]
    assert profile(meta_model("nin_cifar"), 32).row("mlpconv3").output_shape == [10, 8, 8]


# ---- VGG notation -----------------------------------------------------------------------
def test_vgg_parser():
    assert parse_layer("conv3-64") == ("conv", 3, 64)
    assert parse_layer("conv1-256") == ("conv", 1, 256)
    assert parse_layer("maxpool")[0] == "maxpool" and parse_layer("LRN")[0] == "LRN"
    for bad in ("conv3", "conv3-", "pool", "lrn", "conv3-64 "):
        with pytest.raises(ValueError):
            parse_layer(bad)


@pytest.mark.parametrize(
    "column, weight_layers", [("A", 11), ("A-LRN", 11), ("B", 13), ("C", 16), ("D", 16), ("E", 19)]
)
def test_vgg_table1_depths(column, weight_layers):
    """Table 1 header: 11, 11, 13, 16, 16, 19 weight layers (convs + 3 FC), 5 max-pools."""
    convs = [t for t in CONFIGS[column] if parse_layer(t)[0] == "conv"]
    assert len(convs) + 3 == weight_layers
    assert CONFIGS[column].count("maxpool") == 5
    assert ("conv1-256" in CONFIGS[column]) == (column == "C")


# ---- torchvision equivalence --------------------------------------------------------------
TORCHVISION = ["alexnet", "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"]


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_state_dict_loads_and_outputs_match(name):
    tvm = pytest.importorskip("torchvision.models")
    torch.manual_seed(0)
    ref = getattr(tvm, name)().eval()
    for m in ref.modules():  # non-trivial BN statistics, so BN placement is really tested
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    # built on the meta device and given torchvision's tensors (shapes are still checked):
    # skips initialising a second 140M-parameter model on a 2-core machine
    ours = meta_model(name).eval()
    ours.load_state_dict(ref.state_dict(), strict=True, assign=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want, got = ref(x), ours(x)
    assert got.shape == want.shape == (2, 1000)
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()


def test_alexnet_plain_torchvision_load():
    """The documented path, as a user writes it: a CPU model, load_state_dict, same logits."""
    tvm = pytest.importorskip("torchvision.models")
    ref = tvm.alexnet().eval()
    ours = create_model("alexnet").eval()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert (ours(x) - ref(x)).abs().max() <= 1e-5 * ref(x).abs().max()


# ---- receptive fields and design checks --------------------------------------------------
def test_alexnet_original_receptive_fields():
    """By hand, r' = r + (k-1)*j and j' = j*s from r = j = 1 (a 3x3/2 pool: k=3, s=2):
    conv1 11x11/4: r = 1 + 10*1 = 11,  j = 4
    pool1 3x3/2:   r = 11 + 2*4 = 19,  j = 8
    conv2 5x5/1:   r = 19 + 4*8 = 51,  j = 8
    pool2 3x3/2:   r = 51 + 2*8 = 67,  j = 16
    conv3 3x3/1:   r = 67 + 2*16 = 99
    conv4 3x3/1:   r = 99 + 2*16 = 131
    conv5 3x3/1:   r = 131 + 2*16 = 163
    pool5 3x3/2:   r = 163 + 2*16 = 195, j = 32."""
    prof = profile(meta_model("alexnet_original"), 227)
    expected = {
        "conv1": (11, 4),
        "pool1": (19, 8),
        "conv2": (51, 8),
        "pool2": (67, 16),
        "conv3": (99, 16),
        "conv4": (131, 16),
        "conv5": (163, 16),
        "pool5": (195, 32),
    }
    assert {k: (prof.row(k).receptive_field, prof.row(k).rf_stride) for k in expected} == expected
    assert prof.row("pool5").output_shape == [256, 6, 6]  # the paper's 6x6x256 into fc6


def test_vgg_d_receptive_fields():
    """By hand (3x3/1 convs add 2*j, 2x2/2 pools add 1*j and double j):
    block 1 (j=1): conv1_1 3, conv1_2 5;            pool1 6,  j=2
    block 2 (j=2): conv2_1 10, conv2_2 14;          pool2 16, j=4
    block 3 (j=4): 24, 32, 40;                      pool3 44, j=8
    block 4 (j=8): 60, 76, 92;                      pool4 100, j=16
    block 5 (j=16): conv5_1 132, conv5_2 164, conv5_3 196; pool5 196 + 16 = 212, j=32.
    (conv5_3 is 196, not 212: the last 2x2/2 pool adds one more jump of 16.)"""
    prof = profile(meta_model("vgg_d"), 224)
    expected = {
        "conv1_2": (5, 1),
        "pool1": (6, 2),
        "pool2": (16, 4),
        "conv3_3": (40, 4),
        "pool3": (44, 8),
        "pool4": (100, 16),
        "conv5_1": (132, 16),
        "conv5_3": (196, 16),
        "pool5": (212, 32),
    }
    assert {k: (prof.row(k).receptive_field, prof.row(k).rf_stride) for k in expected} == expected


def test_alexnet_original_input_size_design_check():
    """(224 - 11)/4 + 1 = 54.25 is not whole; (227 - 11)/4 + 1 = 55 is (and so are the pools)."""
    at_224 = profile(meta_model("alexnet_original"), 224).warnings
    assert any("(224 - 11 + 0)/4 + 1" in w and "not whole" in w for w in at_224)
    at_227 = profile(meta_model("alexnet_original"), 227).warnings
    assert not any("not whole" in w for w in at_227)


def test_alexnet_original_paper_layer_order():
    """Section 3.5: ReLU -> LRN -> max-pool after conv1 and conv2; pool only after conv5."""
    names = [n for n, _ in create_model("alexnet_original").features.named_children()]
    assert names == [
        "conv1",
        "relu1",
        "norm1",
        "pool1",
        "conv2",
        "relu2",
        "norm2",
        "pool2",
        "conv3",
        "relu3",
        "conv4",
        "relu4",
        "conv5",
        "relu5",
        "pool5",
    ]
    m = create_model("alexnet_original")
    assert [m.features.get_submodule(c).groups for c in ("conv1", "conv2", "conv3", "conv4", "conv5")] == [
        1,
        2,
        1,
        2,
        2,
    ]
    assert m.features.norm1.k == 2.0 and m.features.norm1.size == 5 and m.features.norm1.paper_alpha == 1e-4


def test_paper_stages_name_paper_rows():
    assert {"conv1", "conv5", "pool5", "fc6", "fc8"} <= set(create_model("alexnet").paper_stages())
    stages = meta_model("vgg_e").paper_stages()
    assert list(stages)[:3] == ["conv1_1", "conv1_2", "pool1"] and "conv5_4" in stages and "fc8" in stages
    assert "norm1" in meta_model("vgg_a_lrn").paper_stages()


# ---- chart --------------------------------------------------------------------------------
def test_chart_writes_png(tmp_path, capsys):
    out = tmp_path / "chart.png"
    assert main(["chart", "--out", str(out), "--metric", "top1"]) == 0
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    from PIL import Image

    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 500


def test_chart_bad_metric_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["chart", "--metric", "top3"])
    assert e.value.code == 2
    assert main(["chart", "--out", "chart.jpg"]) == 2


def test_chart_points_use_profile_and_skip_unregistered():
    from convzoo.analysis.chart import PUBLISHED, chart_points

    points = {p.model: p for p in chart_points("top1")}
    registered = set(list_models())
    assert set(points) == {n for n, (top1, _, _) in PUBLISHED.items() if top1 is not None and n in registered}
    assert points["alexnet_original"].params == 60_965_224  # the hand count above, at 227


def test_chart_torchvision_accuracies_match_torchvision_metadata():
    """The table's torchvision rows are copied from torchvision's documented weight metrics."""
    tvm = pytest.importorskip("torchvision.models")
    from convzoo.analysis.chart import PUBLISHED

    for name, (top1, top5, source) in PUBLISHED.items():
        if source.startswith("torchvision"):
            metrics = tvm.get_model_weights(name).IMAGENET1K_V1.meta["_metrics"]["ImageNet-1K"]
            assert (top1, top5) == (metrics["acc@1"], metrics["acc@5"]), name
