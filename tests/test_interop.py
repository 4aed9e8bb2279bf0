"""`convzoo convert`: torchvision, timm, Places365 and remap checkpoints -> convzoo weights.

The expected outputs come from the reference implementations themselves: a torchvision
(or timm) model with random weights and non-trivial BatchNorm statistics is saved as its
publisher saves it, converted, loaded into convzoo, and both models must give the same
logits (max |diff| <= 1e-5 relative) on the same input. A test skips (with the reason)
only while the convzoo model is not registered.

Cost: the biggest models (VGG 11-19 but vgg11_bn, resnet101/152, resnext101_*) are checked on
the meta device - every key and shape through the converter, no numbers - so the file stays
fast on 2 cores; one VGG (vgg11_bn) and the others run numerically at their smallest input.
"""

import random

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from convzoo import create_model, list_models, model_info
from convzoo.errors import UserError
from convzoo.interop import convert, load_checkpoint
from convzoo.interop import torchvision as tv_conv
from convzoo.weights import read_spec, save_weights
from helpers import one_line, randomize_, run
from tiny_models import TINY, ConvBNNet, OtherConvBNNet, register_convbn

REGISTERED = set(list_models())
BIG = {
    "vgg11",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
    "resnet101",
    "resnet152",
    "resnext101_32x8d",
    "resnext101_64x4d",
}
TIMM_MODELS = ["inception_v4", "inception_resnet_v2"]


def need(name):
    if name not in REGISTERED:
        pytest.skip(f"convzoo model {name} is not registered (yet)")


def tv_model(name, num_classes=1000):
    kw = {}
    if name in ("googlenet", "inception_v3"):  # as torchvision builds them for its pretrained weights
        kw = {"aux_logits": True, "transform_input": True, "init_weights": False}
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kw)


def assert_same_logits(ref_model, ours, size, batch=2):
    torch.manual_seed(1)
    x = torch.randn(batch, 3, size, size)
    ref_model.eval(), ours.eval()
    with torch.no_grad():
        want, got = ref_model(x), ours(x)
    assert got.shape == want.shape
    tol = 1e-5 * max(1.0, float(want.abs().max()))
    assert float((got - want).abs().max()) <= tol


# ---- torchvision ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", [n for n in tv_conv.SHARED if n not in BIG])
def test_torchvision_logits_match(name, tmp_path, capsys):
    need(name)
    ref = randomize_(tv_model(name))
    src = tmp_path / f"{name}.pth"
    torch.save(ref.state_dict(), src)
    out = tmp_path / f"{name}.safetensors"
    code, stdout, err = run(
        capsys, "convert", "--from", "torchvision", str(src), "--model", name, "--out", str(out)
    )
    assert code == 0, err
    spec = read_spec(str(out))
    assert (spec.model, spec.num_classes, spec.source) == (name, 1000, "torchvision")
    assert len(spec.labels) == 1000 and spec.labels[0] == "tench"  # index 0 = n01440764
    # torchvision's published transform_input for exactly these two
    assert bool(spec.extra.get("transform_input")) == (name in ("googlenet", "inception_v3"))
    ours = create_model(name, weights=str(out))
    assert_same_logits(ref, ours, model_info(name).min_input_size)


@pytest.mark.parametrize("name", ["googlenet", "inception_v3"])
def test_torchvision_without_aux_heads(name, tmp_path):
    """`torchvision.models.googlenet(weights=...)` drops aux1/aux2 (inception_v3: AuxLogits), so
    its state_dict lacks them: the heads are initialised afresh and the logits still match."""
    need(name)
    ref = randomize_(tv_model(name))
    ref.aux_logits = False
    for head in ("aux1", "aux2", "AuxLogits"):
        if hasattr(ref, head):
            setattr(ref, head, None)
    torch.save(ref.state_dict(), tmp_path / "noaux.pth")
    state, spec = convert("torchvision", str(tmp_path / "noaux.pth"), name)
    ours = create_model(name)
    ours.load_state_dict(state)
    ours.transform_input = True
    assert_same_logits(ref, ours, model_info(name).min_input_size)


@pytest.mark.parametrize("name", sorted(BIG))
def test_torchvision_big_key_map(name):
    """Key map and shapes only (meta device): the converter sees torchvision's exact keys."""
    need(name)
    with torch.device("meta"):
        src = tv_model(name).state_dict()
    state, mapping = tv_conv.convert_state(src, name)
    assert [t for _, t, _ in mapping] == list(src)  # identity, every key used
    assert all(tuple(state[k].shape) == tuple(v.shape) for k, v in src.items())


def test_torchvision_preprocessing_from_published_file_name():
    """torchvision publishes resnet50 V1 (resize 256) and V2 (resize 232, file 11ad3fa6)."""
    v2 = tv_conv.weight_spec("resnet50", 1000, "resnet50-11ad3fa6.pth", lambda s: None)
    notes = []
    v1 = tv_conv.weight_spec("resnet50", 1000, "my_resnet.pth", notes.append)
    assert (v2.resize_size, v2.crop_size) == (232, 224)
    assert (v1.resize_size, v1.crop_size) == (256, 224) and notes
    inc = tv_conv.weight_spec("inception_v3", 1000, "inception_v3_google-0cc3c7bd.pth", lambda s: None)
    assert (inc.input_size, inc.resize_size, inc.extra["transform_input"]) == (299, 342, True)


def test_torchvision_refuses_a_model_it_does_not_have():
    with pytest.raises(UserError, match="remap"):
        tv_conv.check_model("vgg_a")


# ---- timm ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", TIMM_MODELS)
def test_timm_logits_match(name, tmp_path):
    need(name)
    timm = pytest.importorskip("timm")
    ref = randomize_(timm.create_model(name, pretrained=False))
    src = tmp_path / "model.safetensors"  # timm's hub format
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(src))
    state, spec = convert("timm", str(src), name)
    assert (spec.input_size, spec.interpolation, spec.mean) == (299, "bicubic", (0.5, 0.5, 0.5))
    ours = create_model(name, num_classes=spec.num_classes)
    ours.load_state_dict(state)
    assert_same_logits(ref, ours, model_info(name).min_input_size)


# ---- places365 -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,prefix",
    [
        ("resnet18", "module."),
        ("resnet50", "module."),
        ("alexnet", "module."),
        ("alexnet", "features.module."),
    ],
)
def test_places365_logits_match(name, prefix, tmp_path, capsys):
    """The official files: {"state_dict": {"module."+k: v}, ...}; AlexNet's official file
    wrapped only `features` in DataParallel (keys `features.module.0.weight`)."""
    need(name)
    ref = randomize_(tv_model(name, num_classes=365))
    sd = ref.state_dict()
    if prefix == "module.":
        wrapped = {"module." + k: v for k, v in sd.items()}
    else:
        wrapped = {k.replace("features.", "features.module.", 1): v for k, v in sd.items()}
    src = tmp_path / f"{name}_places365.pth.tar"
    torch.save({"epoch": 90, "arch": name, "state_dict": wrapped, "best_prec1": 53.2}, src)
    out = tmp_path / "p.safetensors"
    code, _, err = run(capsys, "convert", "--from", "places365", str(src), "--model", name, "--out", str(out))
    assert code == 0, err
    spec = read_spec(str(out))
    assert spec.num_classes == 365 and len(spec.labels) == 365
    flags = spec.extra["indoor_outdoor"]
    assert len(flags) == 365 and set(flags) == {1, 2}
    # IO_places365.txt's first line is "/a/airfield 2" (2 = outdoor)
    assert (spec.labels[0], flags[0]) == ("airfield", 2)
    assert_same_logits(ref, create_model(name, weights=str(out)), model_info(name).min_input_size)


# ---- remap ---------------------------------------------------------------------------------
def test_remap_by_order_matches_and_prints_mapping(monkeypatch, tmp_path, capsys):
    register_convbn(monkeypatch)
    other = randomize_(OtherConvBNNet(num_classes=10))
    sd = {k: v for k, v in other.state_dict().items() if not k.endswith("num_batches_tracked")}
    src = tmp_path / "other.pt"
    torch.save(sd, src)
    out = tmp_path / "tiny.safetensors"
    code, _, err = run(
        capsys, "convert", "--from", "remap", str(src), "--model", TINY, "--out", str(out), "--verbose"
    )
    assert code == 0, err
    assert "stem_norm.running_var -> features.0.bn.running_var" in " ".join(err.split())
    assert "head.weight -> fc.weight" in " ".join(err.split())
    spec = read_spec(str(out))
    assert spec.num_classes == 10 and spec.labels is None  # class count read off the source
    assert_same_logits(other, create_model(TINY, weights=str(out)), 16)


def test_remap_refuses_shape_mismatch(monkeypatch, tmp_path, capsys):
    register_convbn(monkeypatch)
    src = tmp_path / "wider.pth"
    torch.save(OtherConvBNNet(width=12).state_dict(), src)
    code, _, err = run(
        capsys,
        "convert",
        "--from",
        "remap",
        str(src),
        "--model",
        TINY,
        "--out",
        str(tmp_path / "x.safetensors"),
    )
    assert code == 2 and one_line(err)
    assert "stem_conv.weight" in err and "features.0.conv.weight" in err and "[12, 3, 3, 3]" in err
    assert not (tmp_path / "x.safetensors").exists()


def test_remap_refuses_different_tensor_count(monkeypatch, tmp_path):
    register_convbn(monkeypatch)
    sd = OtherConvBNNet().state_dict()
    sd["extra.weight"] = torch.zeros(3)
    torch.save(sd, tmp_path / "more.pth")
    with pytest.raises(UserError, match="not the same architecture"):
        convert("remap", str(tmp_path / "more.pth"), TINY)


def test_by_name_refuses_foreign_keys(monkeypatch, tmp_path):
    """A by-name kind on another implementation's keys fails and points at remap."""
    register_convbn(monkeypatch)
    torch.save(OtherConvBNNet().state_dict(), tmp_path / "o.pth")
    with pytest.raises(UserError, match="try --from remap"):
        convert("timm", str(tmp_path / "o.pth"), TINY)


# ---- loading safely ------------------------------------------------------------------------
class Payload:
    """Unpickling this calls open(path, "w"): a stand-in for arbitrary code."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_malicious_pickle_is_refused_not_executed(monkeypatch, tmp_path, capsys):
    register_convbn(monkeypatch)
    marker = tmp_path / "pwned"
    src = tmp_path / "evil.pth.tar"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2), "x": Payload(str(marker))}}, src)
    # the payload is live: an unsafe load of the same kind of file does run it
    probe_marker, probe = tmp_path / "probe", tmp_path / "probe.pth"
    torch.save({"x": Payload(str(probe_marker))}, probe)
    torch.load(probe, weights_only=False)
    assert probe_marker.exists()

    code, _, err = run(
        capsys,
        "convert",
        "--from",
        "remap",
        str(src),
        "--model",
        TINY,
        "--out",
        str(tmp_path / "o.safetensors"),
    )
    assert code == 2 and one_line(err) and "refused" in err
    assert not marker.exists()


@pytest.mark.parametrize(
    "case",
    ["garbage.pth", "truncated.pth", "garbage.safetensors", "list.pth", "tensor_values.pth", "missing.pth"],
)
def test_bad_files_exit_2_one_line(case, monkeypatch, tmp_path, capsys):
    register_convbn(monkeypatch)
    src = tmp_path / case
    if case.startswith("garbage"):
        src.write_bytes(random.Random(case).randbytes(4096))  # seeded: test_fuzz_readers covers many draws
    elif case == "truncated.pth":
        full = tmp_path / "full.pth"
        torch.save(ConvBNNet().state_dict(), full)
        src.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    elif case == "list.pth":
        torch.save([torch.zeros(2)], src)
    elif case == "tensor_values.pth":
        torch.save({"state_dict": {"fc.weight": [1, 2]}}, src)
    code, out, err = run(
        capsys,
        "convert",
        "--from",
        "torchvision",
        str(src),
        "--model",
        "x",
        "--out",
        str(tmp_path / "o.safetensors"),
    )
    assert code == 2 and one_line(err), err  # "x" is not even a model: that is said first
    code, out, err = run(
        capsys,
        "convert",
        "--from",
        "remap",
        str(src),
        "--model",
        TINY,
        "--out",
        str(tmp_path / "o.safetensors"),
    )
    assert code == 2 and one_line(err) and err.startswith("convzoo convert: error:"), err
    assert out == ""


def test_unwrap_state_dict_and_module_prefixes(tmp_path):
    sd = ConvBNNet().state_dict()
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}, "epoch": 3}, tmp_path / "a.pth")
    assert list(load_checkpoint(str(tmp_path / "a.pth"))) == list(sd)


# ---- using converted weights ---------------------------------------------------------------
def test_weights_for_another_model_or_class_count_fail_in_one_line(monkeypatch, tmp_path):
    register_convbn(monkeypatch)
    register_convbn(monkeypatch, "tiny_interop_other")
    path = str(tmp_path / "t.safetensors")
    save_weights(path, ConvBNNet(num_classes=5), _spec(TINY, 5))
    with pytest.raises(UserError) as e:
        create_model("tiny_interop_other", weights=path)
    assert TINY in str(e.value) and "tiny_interop_other" in str(e.value) and one_line(e.value)
    with pytest.raises(UserError) as e:
        create_model(TINY, num_classes=7, weights=path)
    assert "5 classes" in str(e.value) and "7" in str(e.value)


def test_transform_input_is_applied_by_create_model(monkeypatch, tmp_path):
    """With extra.transform_input, the model sees torchvision's re-normalised input:
    x_c * std_c / 0.5 + (mean_c - 0.5) / 0.5 (torchvision googlenet/inception_v3 forward)."""
    register_convbn(monkeypatch)
    net = ConvBNNet(num_classes=3)
    path = str(tmp_path / "t.safetensors")
    save_weights(path, net, _spec(TINY, 3, extra={"transform_input": True}))
    ours = create_model(TINY, weights=path).eval()
    x = torch.randn(2, 3, 16, 16)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    by_hand = x * (std / 0.5).view(1, 3, 1, 1) + ((mean - 0.5) / 0.5).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), net.eval()(by_hand))


def _spec(model, n, **kw):
    from convzoo.weights import WeightSpec

    return WeightSpec(model=model, num_classes=n, input_size=16, **kw)
