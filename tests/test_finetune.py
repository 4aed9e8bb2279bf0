"""Fine-tuning and deeper evaluation: new head, frozen stages bit for bit, head lr multiplier, the
reproducible stratified split, eval reports, dense (FC-as-conv) evaluation, CAM, features, filters,
the depth chart. Expected values are derived by hand in each test's docstring; everything is tiny
(32x32 images, resnet20_cifar or hand-built networks) to stay fast on a loaded 2-core machine."""

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from convzoo.cli import main
from convzoo.data.images import load_image
from convzoo.factory import create_model
from convzoo.weights import WeightSpec, read_spec, read_state_dict, save_weights

COLORS = [(220, 30, 30), (30, 200, 30), (30, 30, 220)]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_tree(root: Path, per_class=(12, 10, 8), size=32, seed=0) -> Path:
    """A single class-folder tree: class k's images are noisy squares of colour k (learnable)."""
    rng = np.random.default_rng(seed)
    for k, n in enumerate(per_class):
        d = root / f"class{k}"
        d.mkdir(parents=True)
        for i in range(n):
            a = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            x, y = rng.integers(0, size // 2, 2)
            a[y : y + size // 2, x : x + size // 2] = COLORS[k]
            Image.fromarray(a).save(d / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("tree") / "data")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """'Earlier weights': a 10-class resnet20_cifar with non-default BN statistics."""
    torch.manual_seed(0)
    net = create_model("resnet20_cifar", num_classes=10)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("w") / "pre.safetensors"
    save_weights(
        str(path),
        net,
        WeightSpec(model="resnet20_cifar", num_classes=10, input_size=32, labels=[str(i) for i in range(10)]),
    )
    return path


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, tree, pretrained):
    out = tmp_path_factory.mktemp("ft")
    rc = main(
        [
            "train",
            "resnet20_cifar",
            "--data",
            str(tree),
            "--out",
            str(out),
            "--weights",
            str(pretrained),
            "--freeze",
            "conv3_x",
            "--head-lr-mult",
            "10",
            "--recipe",
            "demo",
            "--epochs",
            "3",
            "--batch-size",
            "8",
            "--workers",
            "0",
            "--lr",
            "0.01",
            "--device",
            "cpu",
            "--set",
            "schedule.warmup_epochs=0",
            "--set",
            "data.augment=none",
        ]
    )
    assert rc == 0
    return out


def test_finetune_head_replaced_and_frozen_unchanged(finetuned, pretrained):
    """Frozen: conv1 (+bn1), conv2_x, conv3_x - every parameter and BN buffer equal bit for bit
    (requires_grad off, BN kept in eval mode so running stats do not move); conv4_x trains; fc is
    a new 3-class layer (the tree has 3 class folders)."""
    before, after = read_state_dict(str(pretrained)), read_state_dict(str(finetuned / "last.safetensors"))
    assert after["fc.weight"].shape == (3, 64) and before["fc.weight"].shape == (10, 64)
    frozen = [k for k in before if k.startswith(("conv1.", "bn1.", "layer1.", "layer2."))]
    assert any("running_mean" in k for k in frozen)
    for k in frozen:
        assert torch.equal(before[k], after[k]), k
    assert not torch.equal(before["layer3.0.conv1.weight"], after["layer3.0.conv1.weight"])
    assert read_spec(str(finetuned / "last.safetensors")).num_classes == 3


def test_finetune_head_learns(finetuned):
    """Colour squares are separable: after 3 epochs the train loss fell below its first-epoch
    value and training accuracy is at least twice chance (1/3)."""
    rows = list(csv.DictReader((finetuned / "metrics.csv").open()))
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert float(rows[-1]["train_top1"]) > 2 * 100 / 3


def test_head_lr_mult_param_groups(pretrained):
    """The head group's lr is base lr x mult after the schedule sets it."""
    from convzoo.recipes import resolve
    from convzoo.training.finetune import prepare_model
    from convzoo.training.optim import LRSchedule, build_optimizer

    flags = {"finetune": {"weights": str(pretrained), "head_lr_mult": 5.0}}
    cfg = resolve("resnet20_cifar", "demo", flags, ["schedule.warmup_epochs=0"])
    net, groups = prepare_model(cfg, 4, lambda *a: None)
    opt = build_optimizer(net, cfg.optim, groups)
    LRSchedule(opt, cfg.schedule, 0.1, 10).step(0.0)
    head = [g for g in opt.param_groups if g["lr_mult"] == 5.0]
    assert len(head) == 1 and {id(p) for p in head[0]["params"]} == {id(net.fc.weight), id(net.fc.bias)}
    assert head[0]["lr"] == pytest.approx(0.5)


def test_freeze_unknown_stage_is_user_error(tmp_path, tree, pretrained, capsys):
    rc = main(
        [
            "train",
            "resnet20_cifar",
            "--data",
            str(tree),
            "--out",
            str(tmp_path),
            "--weights",
            str(pretrained),
            "--freeze",
            "conv9_x",
            "--epochs",
            "1",
            "--workers",
            "0",
        ]
    )
    assert rc == 2 and "conv9_x" in capsys.readouterr().err


def test_split_reproducible_and_stratified(finetuned, tree, tmp_path):
    """Per class round(0.1 n) goes to val (at least one): 12 -> 1, 10 -> 1, 8 -> 1; the same seed
    gives the same split, and the run folder records it."""
    from convzoo.data.source import open_source

    def split_single_tree(fraction, seed):
        return open_source(str(tree), val_fraction=fraction, seed=seed).tree()

    a, b = split_single_tree(0.1, 0), split_single_tree(0.1, 0)
    assert a.rows == b.rows
    val = [t for _, t, s in a.rows if s == "val"]
    assert sorted(val) == [0, 1, 2] and len(a.train) == 27
    c = split_single_tree(0.5, 0)
    assert [sum(1 for _, t, s in c.rows if s == "val" and t == k) for k in range(3)] == [6, 5, 4]
    assert split_single_tree(0.5, 1).rows != c.rows
    recorded = list(csv.DictReader((finetuned / "split.csv").open()))
    assert [(r["path"], int(r["label"]), r["split"]) for r in recorded] == a.rows


def test_eval_report(finetuned, tree, tmp_path, capsys):
    """Confusion matrix sums to the number of evaluated images; per-class counts to each class's
    val images; eval rebuilds the recorded split (3 val images, one per class)."""
    rep = tmp_path / "rep"
    rc = main(
        [
            "eval",
            "resnet20_cifar",
            "--weights",
            str(finetuned / "last.safetensors"),
            "--data",
            str(tree),
            "--report",
            str(rep),
            "--json",
            "--workers",
            "0",
            "--device",
            "cpu",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["images"] == 3
    rows = list(csv.reader((rep / "confusion.csv").open()))
    counts = np.array([[int(x) for x in r[1:]] for r in rows[1:]])
    assert counts.sum() == 3 and counts.shape == (3, 3)
    per_class = list(csv.DictReader((rep / "per_class.csv").open()))
    assert [int(r["images"]) for r in per_class] == [1, 1, 1]
    assert (rep / "confusion.png").is_file()
    mis = list(csv.DictReader((rep / "misclassified.csv").open()))
    assert len(mis) == 3 - round(out["top1"] * 3 / 100)
    assert all(os.path.isfile(r["path"]) for r in mis)


def test_dense_equals_fc_at_native_size():
    """alexnet_original at 227: conv5/pool5 give 6x6, so fc6 as a 6x6 conv gives a 1x1 map and
    fc7/fc8 as 1x1 convs the same logits as the FC form (up to float rounding)."""
    from convzoo.inference.dense import DenseHead

    torch.manual_seed(0)
    net = create_model("alexnet_original", num_classes=7).eval()
    x = torch.randn(1, 3, 227, 227)
    with torch.no_grad():
        ref = net(x)
        dense = DenseHead(net)(x)
    assert dense.shape == (1, 7, 1, 1)
    torch.testing.assert_close(dense.flatten(1), ref, rtol=1e-4, atol=1e-4)
    with torch.no_grad():  # a larger image gives a larger score map: (259-227)/32 + 1 = 2 per side
        assert DenseHead(net)(torch.randn(1, 3, 259, 259)).shape == (1, 7, 2, 2)


def test_dense_refuses_gap_network():
    from convzoo.errors import UserError
    from convzoo.inference.dense import DenseHead

    with pytest.raises(UserError):
        DenseHead(create_model("resnet20_cifar"))


class RedDetector(nn.Module):
    """A GAP network by hand: channel 0 = red - (green + blue)/2 (ReLU), channel 1 = constant 0.01
    (a 6x6 red square on 32x32 averages 36/1024 = 0.035 > 0.01);
    fc: class 0 = 'red' (weights 1, 0), class 1 = 'not red' (0, 1)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[1.0, -0.5, -0.5], [0, 0, 0]]).view(2, 3, 1, 1))
            self.conv.bias.copy_(torch.tensor([0.0, 0.01]))
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.eye(2))
            self.fc.bias.zero_()

    def forward_features(self, x):
        return torch.relu(self.conv(x))

    def forward_head(self, x):
        return self.fc(x.mean((2, 3)))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def get_classifier(self):  # the declared head CAM reads (ZooModel's contract)
        return self.fc


def test_cam_follows_pasted_object():
    """The CAM of class 'red' peaks where a red square was pasted, and moves with it."""
    from convzoo.analysis.cam import class_activation_map

    net = RedDetector().eval()
    for y, x in ((4, 4), (20, 24)):
        img = torch.zeros(1, 3, 32, 32)
        img[0, 0, y : y + 6, x : x + 6] = 1.0
        cam, cls = class_activation_map(net, img)
        assert cam.shape == (1, 32, 32) and int(cls[0]) == 0
        iy, ix = divmod(int(cam[0].argmax()), 32)
        assert y <= iy < y + 6 and x <= ix < x + 6


def test_cam_refuses_non_gap_network():
    from convzoo.analysis.cam import class_activation_map
    from convzoo.errors import UserError

    net = create_model("alexnet_original", num_classes=3).eval()
    with pytest.raises(UserError):
        class_activation_map(net, torch.randn(1, 3, 227, 227))


def test_predict_cam_files(finetuned, tree, tmp_path, capsys):
    cams = tmp_path / "cams"
    files = sorted(str(p) for p in (tree / "class0").iterdir())[:2]
    rc = main(
        [
            "predict",
            "resnet20_cifar",
            "--weights",
            str(finetuned / "last.safetensors"),
            *files,
            "--cam",
            str(cams),
            "--device",
            "cpu",
            "--batch-size",
            "2",
        ]
    )
    assert rc == 0
    assert sorted(p.name for p in cams.iterdir()) == ["000_cam.png", "001_cam.png"]


def test_features_shape_and_order(finetuned, tree, tmp_path, capsys):
    """conv4_x of resnet20_cifar has 64 channels -> [N, 64] pooled features, rows in the order of
    the image list written beside them; row i equals the features of image i computed alone."""
    out = tmp_path / "f.npy"
    rc = main(
        [
            "features",
            "resnet20_cifar",
            "--weights",
            str(finetuned / "last.safetensors"),
            "--data",
            str(tree),
            "--split",
            "train",
            "--layer",
            "conv4_x",
            "--out",
            str(out),
            "--workers",
            "0",
            "--device",
            "cpu",
            "--batch-size",
            "5",
        ]
    )
    assert rc == 0
    feats = np.load(out)
    names = (tmp_path / "f.txt").read_text().splitlines()
    assert feats.shape == (27, 64) and len(names) == 27
    from convzoo.analysis.features import extract_features
    from convzoo.data.transforms import eval_transform_from_spec

    net = create_model("resnet20_cifar", weights=str(finetuned / "last.safetensors")).eval()
    x = eval_transform_from_spec(net.weight_spec)(load_image(names[5]))[None]  # as eval/predict do
    one = extract_features(net, "conv4_x", [x])
    np.testing.assert_allclose(feats[5], one[0], rtol=1e-4, atol=1e-5)


def test_filters_png(tmp_path, capsys):
    out = tmp_path / "filters.png"
    assert main(["summary", "alexnet_original", "--filters", str(out)]) == 0
    img = Image.open(out)
    assert img.format == "PNG" and img.width > 100


def test_depth_chart(tmp_path, capsys, paper_numbers):
    """The depth chart's published top-5 errors (typed into chart.py from the papers) are those of
    the package's paper_numbers.json, an independent transcription."""
    from convzoo.analysis.chart import DEPTH_POINTS

    pub = paper_numbers["published_errors"]["top5"]
    keys = {"AlexNet": "alexnet", "VGG": "vgg", "GoogLeNet": "googlenet", "ResNet": "resnet_ensemble"}
    assert {name: err for name, _, err, _ in DEPTH_POINTS} == {n: pub[k] for n, k in keys.items()}
    assert [d for _, d, _, _ in DEPTH_POINTS] == [8, 19, 22, 152]
    out = tmp_path / "depth.png"
    assert main(["chart", "--kind", "depth", "--out", str(out)]) == 0 and out.is_file()


def test_chart_resnext_accuracies_match_table3(paper_numbers):
    """chart.PUBLISHED's ResNeXt top-1 accuracies are 100 - the Table 3 errors of paper_numbers.json."""
    from convzoo.analysis.chart import PUBLISHED

    errors = paper_numbers["published_errors"]["resnext_top1"]
    charted = {n: top1 for n, (top1, _, src) in PUBLISHED.items() if "1611.05431" in src}
    assert charted and all(top1 == pytest.approx(100 - errors[n]) for n, top1 in charted.items())


def test_profile_notes():
    """Inception-v3 Sec. 3.2: a 1x7 + 7x1 pair costs 2*7 = 14 instead of 49: saves 1 - 2/7 = 71%;
    ResNeXt-50 32x4d's conv2_x grouped 3x3 is 128*128/32 per position: 1/32 of dense."""
    from convzoo.analysis.profile import profile

    with torch.device("meta"):
        p = profile(create_model("inception_v3"), 299)
        q = profile(create_model("resnext50_32x4d"), 224)
    sevens = [r for r in p.layers if r.kernel.startswith(("1x7", "7x1"))]
    assert sevens and all("saves 71%" in r.note for r in sevens)
    grouped = [r for r in q.layers if "1/32 of dense" in r.note]
    assert grouped and grouped[0].cxk == 128 * 128 // 32


def test_execution_order_is_the_live_models_and_leaves_it_as_it_was():
    """Freezing reads the order from the model being fine-tuned (its options and head as they are),
    with meta tensors in its place: the same order a real eval-mode forward gives, and the model
    keeps its mode, its device and its weights."""
    from convzoo.registry import build
    from convzoo.training.finetune import execution_order

    net = build("resnet20_cifar", num_classes=3).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    order = execution_order(net, 32)
    real: list[str] = []
    hooks = [
        m.register_forward_pre_hook(lambda _m, _i, n=n: real.append(n) if n not in real else None)
        for n, m in net.named_modules()
        if n
    ]
    net.eval()
    with torch.no_grad():
        net(torch.zeros(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert order == real and order[0] == "conv1" and order[-1] == "fc"
    net.train()
    order_again = execution_order(net, 32)
    assert order_again == order and net.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.device.type == "cpu" for p in net.parameters())
