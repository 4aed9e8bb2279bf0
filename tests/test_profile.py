"""The profiler on small networks whose numbers are worked out by hand below."""

import torch
import torch.nn as nn

from convzoo.analysis.profile import profile
from convzoo.layers import ZooModel
from helpers import one_line, run


class Tiny(ZooModel):
    """conv3x3/1 p1 (3->8) -> maxpool 2/2 -> conv3x3/2 p1 (8->16) -> global avg -> fc 16->10.

    By hand at 32x32 (r' = r + (k-1)*j, j' = j*s):
      conv1: r = 1 + 2*1 = 3, j = 1;  params 3*8*9 + 8 = 224;  MACs 8*32*32 * 27 = 221,184
      pool:  r = 3 + 1*1 = 4, j = 2;  output 8x16x16
      conv2: r = 4 + 2*2 = 8, j = 4;  params 8*16*9 + 16 = 1,168;  MACs 16*8*8 * 72 = 73,728
      fc:    global;                  params 16*10 + 10 = 170;  MACs 160
    """

    def __init__(self, aux: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(8, 16, 3, 2, 1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)
        self.aux_head = nn.Linear(8 * 16 * 16, 10) if aux else None

    def forward(self, x):
        x = self.pool(self.conv1(x))
        aux = self.aux_head(x.flatten(1)) if self.training and self.aux_head is not None else None
        y = self.fc(self.gap(self.conv2(x)).flatten(1))
        return (y, aux) if aux is not None else y


def test_hand_counts_and_receptive_fields():
    p = profile(Tiny(), 32)
    assert p.params == 224 + 1168 + 170
    assert p.macs == 221_184 + 73_728 + 160
    assert (p.row("conv1").receptive_field, p.row("conv1").rf_stride) == (3, 1)
    assert (p.row("pool").receptive_field, p.row("pool").rf_stride) == (4, 2)
    assert (p.row("conv2").receptive_field, p.row("conv2").rf_stride) == (8, 4)
    assert p.row("conv2").output_shape == [16, 8, 8]
    assert p.row("fc").receptive_field is None  # global
    assert p.aux_params == 0


def test_aux_head_counted_separately():
    p = profile(Tiny(aux=True), 32)
    assert p.params == 224 + 1168 + 170
    assert p.aux_params == 8 * 16 * 16 * 10 + 10


class TwoBranch(nn.Module):
    """1x1 and 5x5 (p2) branches concatenated: the block's receptive field is the larger, 5."""

    def __init__(self):
        super().__init__()
        self.b1 = nn.Conv2d(3, 4, 1)
        self.b5 = nn.Conv2d(3, 4, 5, padding=2)

    def forward(self, x):
        return torch.cat([self.b1(x), self.b5(x)], 1)


def test_branches_take_the_largest_receptive_field():
    net = nn.Sequential(TwoBranch(), nn.Conv2d(8, 8, 3, padding=1))
    p = profile(net, 16)
    assert p.row("0").receptive_field == 5
    assert p.row("1").receptive_field == 7  # 5 + (3-1)*1


def test_output_size_formula_warning():
    """AlexNet's conv1 at 224 without padding: (224 - 11)/4 + 1 = 54.25 drops pixels; at 227 it is 55."""
    net = nn.Sequential(nn.Conv2d(3, 96, 11, 4))
    assert any("not whole" in w for w in profile(net, 224).warnings)
    assert not profile(net, 227).warnings


def test_bottleneck_warning():
    class Squeeze(ZooModel):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 64, 3, padding=1)  # 64x32x32 = 65,536
            self.b = nn.Conv2d(64, 8, 3, stride=2, padding=1)  # 8x16x16 = 2,048: /32

        def forward(self, x):
            return self.b(self.a(x))

    p = profile(Squeeze(), 32)
    assert any("bottleneck" in w and "a -> b" in w for w in p.warnings)


def test_profile_on_meta_does_not_touch_real_memory():
    with torch.device("meta"):
        net = nn.Sequential(nn.Conv2d(3, 4096, 3), nn.Conv2d(4096, 4096, 3))
    p = profile(net, 512)
    assert p.params == 3 * 4096 * 9 + 4096 + 4096 * 4096 * 9 + 4096


def test_summary_describes_the_model_the_weights_make(tmp_path, capsys):
    """`summary MODEL --weights W`: W's class count, input size and preprocessing, not the paper's."""
    import json

    from convzoo.factory import create_model
    from convzoo.weights import WeightSpec, save_weights

    path = tmp_path / "three.safetensors"
    spec = WeightSpec(model="resnet20_cifar", num_classes=3, labels=["cat", "dog", "fox"], input_size=32)
    save_weights(str(path), create_model("resnet20_cifar", num_classes=3), spec)
    rc, out, _ = run(capsys, "summary", "resnet20_cifar", "--weights", path, "--json")
    doc = json.loads(out)
    assert rc == 0 and doc["layers"][-1]["output_shape"] == [3] and doc["input_size"] == 32
    assert doc["weights"]["num_classes"] == 3 and doc["weights"]["labels"] == ["cat", "dog", "fox"]
    assert doc["weights"]["preprocessing"]["resize_size"] == 32  # written out, never null (<= 64 px: whole)
    rc, out, _ = run(capsys, "summary", "resnet20_cifar", "--weights", path)
    assert rc == 0 and "3 classes (cat, dog, fox)" in out and "resize the shorter side to 32" in out
    rc, _, err = run(capsys, "summary", "resnet56_cifar", "--weights", path)
    assert rc == 2 and "are for resnet20_cifar" in err and one_line(err)
