"""`convzoo eval` and `convzoo predict` run `accel.fast_inference` by default (BN folded into
the convs, weights cast once, channels_last; torch.compile only when the run repays it). The
fast path must compute what the plain eval-mode fp32 model computes:

- fp32: folding rewrites conv(x)*g + b as conv(x; w*g) + b, which changes only the rounding of
  each product (2^-24 relative); summed over a few dozen layers the logits stay within 1e-5 of
  the plain model's logit range (measured 1e-7..2e-6 on the zoo models below). Top-1/top-5
  counts must then be equal.
- bf16: an 8-bit mantissa (2^-9 relative per op), so the logits move by ~1-3 % of their range;
  predictions agree on >= 90 % of generated inputs (as in test_accel.py), which bounds the
  top-1 difference of a whole eval by 10 percentage points.

Every expected value is the plain model's own output in the same test (obtained by replacing
`accel.fast_inference` with "the plain model, unchanged"), never a number recorded from the
fast path. Nothing is timed.
"""

import json

import pytest
import torch
import torch.nn as nn

from convzoo.cli import main
from convzoo.engine import accel
from convzoo.factory import create_model
from convzoo.inference.evaluation import EvalJob
from convzoo.inference.evaluation import evaluate_weights as evaluate_job
from convzoo.weights import WeightSpec, save_weights
from helpers import randomize_, rel_error


def _bn_stats(model: nn.Module) -> nn.Module:
    # a fresh BN is the identity, which folding would reproduce trivially
    return randomize_(model, seed=1).eval()


LABELS = [f"class{i}" for i in range(10)]


pytestmark = pytest.mark.usefixtures("tiny_models_one_thread")


def _plain(monkeypatch):
    """Make eval/predict run the plain eval-mode model under the requested precision's autocast
    (what they did before the fast path): the reference."""
    monkeypatch.setattr(
        accel, "fast_inference", lambda model, precision, *a, **k: (model.eval(), precision, {})
    )


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """resnet18 (BN after every conv), 10 classes, 32x32 input like `synthetic`."""
    torch.manual_seed(0)
    net = _bn_stats(create_model("resnet18", num_classes=10))
    path = tmp_path_factory.mktemp("w") / "resnet18.safetensors"
    save_weights(str(path), net, WeightSpec(model="resnet18", num_classes=10, input_size=32, labels=LABELS))
    return path


@pytest.mark.parametrize("name,size", [("resnet18", 64), ("inception_v3", 75)])
def test_folded_fp32_model_equals_the_plain_model(name, size):
    torch.manual_seed(0)
    model = _bn_stats(create_model(name, num_classes=10))
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    fast, run_precision, info = accel.fast_inference(model, "fp32", channels_last=False)
    assert run_precision == "fp32" and info == {
        "bn_folded": n_bn,
        "compiled": False,
    }  # every BN follows a conv
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    x = torch.randn(4, 3, size, size)
    with torch.no_grad():
        assert rel_error(fast(x), model(x)) < 1e-5


def test_root_pre_hook_survives_folding():
    """Converted torchvision googlenet/inception_v3 weights carry `transform_input` as a forward
    pre-hook on the model; tracing for the fold runs forward() directly and would drop it."""
    from convzoo.weights import _transform_input

    torch.manual_seed(0)
    model = _bn_stats(create_model("resnet18", num_classes=10))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        unhooked = model(x)
        model.register_forward_pre_hook(_transform_input)
        hooked = model(x)
        assert rel_error(hooked, unhooked) > 1e-2  # the hook matters here
        fast, _, _ = accel.fast_inference(model, "fp32", channels_last=True)
        assert rel_error(fast(x), hooked) < 1e-5


def test_bf16_fast_model_agrees_with_plain_fp32():
    torch.manual_seed(0)
    model = _bn_stats(create_model("resnet18", num_classes=10))
    x = torch.randn(64, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    fast, run_precision, info = accel.fast_inference(model, "bf16", channels_last=True)
    assert run_precision == "fp32" and info["bn_folded"] == 20  # bf16 is inside: no autocast around it
    assert next(fast.parameters()).dtype == torch.bfloat16
    with torch.no_grad():
        out = fast(x)
    assert out.dtype == torch.float32 and rel_error(out, ref) < 0.05
    assert (out.argmax(1) == ref.argmax(1)).float().mean() >= 0.9


@pytest.mark.parametrize("crop", ["center", "ten"])
def test_eval_fp32_equals_plain_model(weights, crop, monkeypatch):
    kw = dict(crop=crop, batch_size=16, workers=0, device="cpu", precision="fp32", limit=40)
    fast = evaluate_weights("resnet18", str(weights), "synthetic", **kw)
    assert fast["bn_folded"] == 20 and fast["compiled"] is False
    _plain(monkeypatch)
    plain = evaluate_weights("resnet18", str(weights), "synthetic", **kw)
    assert fast["images"] == plain["images"] == 40
    assert (fast["top1"], fast["top5"]) == (plain["top1"], plain["top5"])
    assert fast["loss"] == pytest.approx(plain["loss"], rel=1e-5)


def test_eval_bf16_close_to_plain_fp32(weights, monkeypatch):
    kw = dict(batch_size=16, workers=0, device="cpu", limit=40)
    fast = evaluate_weights("resnet18", str(weights), "synthetic", precision="bf16", **kw)
    assert fast["precision"] == "bf16" and fast["bn_folded"] == 20
    _plain(monkeypatch)
    plain = evaluate_weights("resnet18", str(weights), "synthetic", precision="fp32", **kw)
    assert abs(fast["top1"] - plain["top1"]) <= 10.0


def test_eval_report_and_aux_head_model(tmp_path, monkeypatch):
    """--report (per-image path) runs the fast model too; a model with an auxiliary head
    returns plain logits in eval mode, so it folds and evaluates like any other."""
    torch.manual_seed(0)
    net = _bn_stats(create_model("tiny_aux_test"))
    path = tmp_path / "aux.safetensors"
    save_weights(
        str(path), net, WeightSpec(model="tiny_aux_test", num_classes=10, input_size=32, labels=LABELS)
    )
    kw = dict(batch_size=16, workers=0, device="cpu", precision="fp32", limit=40)
    fast = evaluate_weights("tiny_aux_test", str(path), "synthetic", report=str(tmp_path / "rep"), **kw)
    assert fast["bn_folded"] == 3 and (tmp_path / "rep" / "per_class.csv").is_file()
    _plain(monkeypatch)
    plain = evaluate_weights("tiny_aux_test", str(path), "synthetic", **kw)
    assert (fast["top1"], fast["top5"]) == (plain["top1"], plain["top5"])
    assert fast["loss"] == pytest.approx(plain["loss"], rel=1e-5)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from convzoo.data.synthetic import SyntheticDataset

    folder = tmp_path_factory.mktemp("img")
    val = SyntheticDataset("val")
    for i in range(5):
        val.image(i).save(folder / f"img{i}.png")
    return folder


def _predict(capsys, weights, images, *extra):
    rc = main(
        [
            "predict",
            "resnet18",
            "--weights",
            str(weights),
            str(images),
            "--precision",
            "fp32",
            "--batch-size",
            "2",
            "--json",
            *map(str, extra),
        ]
    )
    out, err = capsys.readouterr()
    assert rc == 0, err
    return json.loads(out)


def test_predict_fp32_top5_and_cam_match_plain_model(weights, images, tmp_path, capsys, monkeypatch):
    fast = _predict(capsys, weights, images, "--cam", tmp_path / "cam", "--no-compile")
    assert len(list((tmp_path / "cam").glob("*_cam.png"))) == 5  # the hook-free CAM path still works
    _plain(monkeypatch)
    plain = _predict(capsys, weights, images)
    assert [r["image"] for r in fast] == [r["image"] for r in plain]
    for f, p in zip(fast, plain):
        assert [x["label"] for x in f["predictions"]] == [x["label"] for x in p["predictions"]]
        for a, b in zip(f["predictions"], p["predictions"]):
            assert a["probability"] == pytest.approx(b["probability"], abs=1e-5)


def test_cli_eval_accepts_no_compile(weights, capsys):
    rc = main(
        [
            "eval",
            "resnet18",
            "--weights",
            str(weights),
            "--data",
            "synthetic",
            "--limit",
            "8",
            "--workers",
            "0",
            "--precision",
            "fp32",
            "--no-compile",
            "--json",
        ]
    )
    out, err = capsys.readouterr()
    assert rc == 0, err
    r = json.loads(out)
    assert r["compiled"] is False and r["bn_folded"] == 20 and "torch.compile" not in err


def test_compile_only_when_it_pays_back(monkeypatch, capsys, tmp_path):
    """torch.compile itself is replaced by a recorder: what is tested is the decision, made from
    the network's work (MACs x images) against the compile time."""
    monkeypatch.setenv("CONVZOO_CACHE", str(tmp_path))
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda m, **kw: compiled.append(kw) or m)
    net = create_model("tiny_test")
    lots = 10**7
    assert accel.fast_inference(net, "fp32", False, images=lots, size=32)[2]["compiled"] is False
    assert accel.fast_inference(net, "fp32", False, images=None, size=32)[2]["compiled"] is False
    assert compiled == [] and "torch.compile" not in capsys.readouterr().err
    # once a compile of this network has been timed here at 0.1 s, ten million images repay it
    accel.record_compile_seconds(accel.compile_key(net, 32, "bf16"), 0.1)
    assert accel.compile_seconds(net, 32, "bf16") == (0.1, True)
    model, _, info = accel.fast_inference(net, "bf16", True, images=lots, size=32, command="convzoo eval")
    assert info["compiled"] is True and compiled == [{"options": {"freezing": True}}]
    assert "convzoo eval: torch.compile" in capsys.readouterr().err
    assert isinstance(model, accel.CompiledForOneShape)
    off = accel.fast_inference(net, "fp32", False, compile=False, images=lots, size=32)
    assert off[2]["compiled"] is False
    assert accel.fast_inference(net, "fp32", False, compile=True, images=1, size=32)[2]["compiled"] is True


def test_resnet20_on_the_cifar10_test_set_does_not_compile(monkeypatch, tmp_path):
    """10,000 CIFAR-10 images through ResNet-20 are a few seconds of network work: a compile
    (about a minute) cannot pay back. ResNet-50 over the 50,000 ImageNet validation images can."""
    monkeypatch.setenv("CONVZOO_CACHE", str(tmp_path))
    compile, why = accel.compile_decision(create_model("resnet20_cifar"), 32, 10_000, "bf16")
    assert compile is False and "10000 images" in why
    with torch.device("meta"):
        big = create_model("resnet50")
    monkeypatch.setattr("convzoo.engine.flops.count_macs", lambda m, size: 4_100_000_000)
    assert accel.compile_decision(big, 224, 50_000, "bf16")[0] is True
    assert accel.compile_decision(big, 224, 500, "bf16")[0] is False


def test_training_compiles_by_the_runs_work_and_its_time_budget(monkeypatch, tmp_path):
    """`compile: auto` in training: a step is three passes of the network's work. ResNet-50 over
    ImageNet compiles; the demo (ResNet-20, 5,000 images x 12 epochs) does not; a 10-minute budget
    caps what compiling can save, whatever the epochs say."""
    monkeypatch.setenv("CONVZOO_CACHE", str(tmp_path))
    demo, why = accel.compile_decision(create_model("resnet20_cifar"), 32, 60_000, "fp32", training=True)
    assert demo is False and "60000 training images" in why
    with torch.device("meta"):
        big = create_model("resnet50")
    monkeypatch.setattr("convzoo.engine.flops.count_macs", lambda m, size: 4_100_000_000)
    assert accel.compile_decision(big, 224, 1_281_167 * 90, "fp32", training=True)[0] is True
    # 2,000 images: a compile taking twice what inference would save is not repaid by inference,
    # is by training's three passes, and is not within a budget that caps the saving below it
    saved = accel.network_seconds(4_100_000_000, 2_000, "fp32") * (1 - 1 / accel.COMPILE_SPEEDUP)
    accel.record_compile_seconds(accel.compile_key(big, 224, "fp32"), 2 * saved)
    assert accel.compile_decision(big, 224, 2_000, "fp32")[0] is False
    assert accel.compile_decision(big, 224, 2_000, "fp32", training=True)[0] is True
    budget = 10 * saved  # saves at most 1.3 x `saved` in it
    assert accel.compile_decision(big, 224, 2_000, "fp32", training=True, within_s=budget)[0] is False


def test_the_first_compiled_call_is_timed_for_the_next_decision(monkeypatch, tmp_path):
    monkeypatch.setenv("CONVZOO_CACHE", str(tmp_path))
    net = create_model("tiny_test")
    key = accel.compile_key(net, 32, "fp32")
    m = accel.CompiledForOneShape(nn.Identity(), nn.Identity(), key)
    assert accel.compile_seconds(net, 32, "fp32")[1] is False  # not measured yet: the estimate
    m(torch.zeros(2, 3, 4, 4))
    seconds, measured = accel.compile_seconds(net, 32, "fp32")
    assert measured and 0 <= seconds < 5


def test_fp16_keeps_the_plain_model_under_autocast():
    net = create_model("tiny_test")
    model, run_precision, info = accel.fast_inference(net, "fp16", False, num_batches=1000)
    assert model is net and run_precision == "fp16" and info == {"bn_folded": 0, "compiled": False}


def test_compiled_model_runs_other_batch_shapes_eager():
    """The last, partial batch must not trigger a second compilation."""
    calls = []

    class Spy(nn.Module):
        def __init__(self, tag):
            super().__init__()
            self.tag = tag

        def forward(self, x):
            calls.append((self.tag, x.shape[0]))
            return x

    m = accel.CompiledForOneShape(Spy("compiled"), Spy("eager"))
    for b in (8, 8, 3, 8):
        m(torch.zeros(b, 3, 4, 4))
    assert calls == [("compiled", 8), ("compiled", 8), ("eager", 3), ("compiled", 8)]


def test_lrn_runs_in_a_bf16_model_on_the_cpu():
    """torch's LRN (a 3-d average pool) has no bf16 CPU kernel: the fast path computes it in fp32."""
    from convzoo.layers import LRN

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), LRN(5), nn.Flatten(), nn.LazyLinear(4)).eval()
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        ref = net(x)
        got = accel.prepare_for_inference(net, "bf16", channels_last=True)(x)
    assert got.dtype == torch.float32 and got.shape == ref.shape
    assert (got - ref).abs().max() <= 0.05 * max(1.0, float(ref.abs().max()))


def evaluate_weights(model: str, weights: str, data: str, **settings) -> dict:
    """`convzoo eval` in this process, its settings as the EvalJob's keywords."""
    return evaluate_job(EvalJob(model, weights, data, **settings))
