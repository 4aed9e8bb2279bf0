"""`convzoo export`: ONNX (torch.onnx.export, dynamo=True) and pt2 (torch.export).

The expected logits are the PyTorch model's own: the exported graph, reloaded by
onnxruntime / torch.export.load, must reproduce them on a batch of 3 (the graphs are traced
with a batch of 2, so this also checks the batch axis is dynamic). Each model is exported
once per format at its smallest input (weights saved with that input size): the exports are the
slowest tests of the suite on 2 cores.
"""

import json

import pytest
import torch

from convzoo import create_model, list_models, model_info
from convzoo.cli import main
from convzoo.weights import WeightSpec, save_weights
from helpers import one_line, randomize_
from tiny_models import TINY, register_convbn

# One model per kind of operator the exporters must translate: LRN (AlexNet), concatenated
# branches (GoogLeNet), BatchNorm in branches (BN-Inception), residual sums (ResNet), grouped
# convolutions (ResNeXt). VGG (AlexNet's operators, 25 s of ONNX export for its 103 M-parameter
# fc6) and Inception v3 (BN-Inception's, 34 s) add time, not operators.
REPRESENTATIVE = ["alexnet_original", "googlenet_original", "bn_inception", "resnet50", "resnext50_32x4d"]
# torch.export (pt2) does not lower to operators: three graph shapes are enough
PT2 = {"alexnet_original", "googlenet_original", "resnet50"}
REGISTERED = set(list_models())


def make_weights(name, path, extra=None):
    """Random weights (non-trivial BN statistics) with a WeightSpec at the smallest input."""
    torch.manual_seed(0)
    model = randomize_(create_model(name, num_classes=10))
    size = model_info(name).min_input_size
    save_weights(
        str(path),
        model,
        WeightSpec(
            model=name,
            num_classes=10,
            labels=[f"c{i}" for i in range(10)],
            input_size=size,
            extra=extra or {},
        ),
    )
    return size


def reference_logits(name, weights, x):
    model = create_model(name, weights=str(weights)).eval()
    with torch.no_grad():
        return model(x)


def export(capsys, name, weights, fmt, out):
    code = main(["export", name, "--weights", str(weights), "--format", fmt, "--out", str(out)])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert stdout.count("\n") == 1 and "max |diff|" in stdout  # the command checks itself too
    return json.loads((out.parent / (out.name + ".json")).read_text())


def run_onnx(path, x):
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert isinstance(inp.shape[0], str), f"batch axis not dynamic: {inp.shape}"
    return torch.from_numpy(session.run(None, {inp.name: x.numpy()})[0])


def check_close(got, want):
    got = got.detach()
    assert got.shape == want.shape
    assert float((got - want).abs().max()) <= 1e-4 * max(1.0, float(want.abs().max()))


@pytest.mark.parametrize("name", REPRESENTATIVE)
def test_export_matches_pytorch(name, tmp_path, capsys):
    """ONNX (and pt2 for PT2) per model, from one set of weights and one reference run."""
    if name not in REGISTERED:
        pytest.skip(f"convzoo model {name} is not registered (yet)")
    weights = tmp_path / "w.safetensors"
    size = make_weights(name, weights)
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(3))
    want = reference_logits(name, weights, x)
    for fmt in ("onnx", "pt2") if name in PT2 else ("onnx",):
        out = tmp_path / f"{name}.{fmt}"
        sidecar = export(capsys, name, weights, fmt, out)
        with torch.no_grad():
            got = run_onnx(out, x) if fmt == "onnx" else torch.export.load(str(out)).module()(x)
        check_close(got, want)
        if fmt == "onnx":  # LRN layers are ONNX's LRN op, not torch's 3-d average-pool decomposition
            import onnx

            from convzoo.layers import LRN

            ops = {n.op_type for n in onnx.load(str(out), load_external_data=False).graph.node}
            has_lrn = any(isinstance(m, LRN) for m in create_model(name, num_classes=10).modules())
            assert ("LRN" in ops) == has_lrn and ("AveragePool" not in ops or not has_lrn), ops
        # height/width dynamic (every shipped model pools adaptively before its classifier, and
        # the export checks a second size itself); a fixed size comes with the reason
        fixed = "fixed_size" in sidecar["input"]
        dynamic = ["batch", 3, "height", "width"]
        assert sidecar["input"]["shape"] == (["batch", 3, size, size] if fixed else dynamic)
        assert sidecar["output"]["shape"] == ["batch", 10] and len(sidecar["labels"]) == 10
        out.unlink()  # pytest keeps the last runs' tmp_path folders, and graphs are large


def test_export_tiny_both_formats_and_sidecar(monkeypatch, tmp_path, capsys):
    """Runs whatever models are registered: a test-only net, with transform_input recorded,
    so the exported graph must include the input re-normalisation of create_model."""
    register_convbn(monkeypatch)
    weights = tmp_path / "w.safetensors"
    size = make_weights(TINY, weights, extra={"transform_input": True})
    x = torch.randn(3, 3, size, size)
    want = reference_logits(TINY, weights, x)
    for fmt in ("onnx", "pt2"):
        out = tmp_path / f"tiny.{fmt}"
        sidecar = export(capsys, TINY, weights, fmt, out)
        got = run_onnx(out, x) if fmt == "onnx" else torch.export.load(str(out)).module()(x)
        check_close(got, want)
        assert sidecar["preprocessing"]["mean"] == [0.485, 0.456, 0.406]
        assert sidecar["extra"]["transform_input"] is True and sidecar["model"] == TINY
    # batch 1 through the dynamic axis too
    check_close(torch.export.load(str(tmp_path / "tiny.pt2")).module()(x[:1]), want[:1])


def test_export_bad_input_exit_2(monkeypatch, tmp_path, capsys):
    register_convbn(monkeypatch)
    garbage = tmp_path / "g.safetensors"
    garbage.write_bytes(b"\x00" * 100)
    for argv in (
        ["export", TINY, "--weights", str(garbage), "--format", "pt2", "--out", str(tmp_path / "a.pt2")],
        ["export", TINY, "--weights", str(tmp_path / "none"), "--format", "onnx", "--out", "x.onnx"],
    ):
        assert main(argv) == 2
        assert one_line(capsys.readouterr().err)


def test_sidecar_states_the_preprocessing_predict_applies(tmp_path):
    """A 32-px model's spec leaves resize_size None; the sidecar writes the size predict uses,
    and applying the sidecar's numbers literally gives predict's input tensor exactly."""
    from PIL import Image
    from torchvision.transforms import v2

    from convzoo.data.transforms import eval_transform_from_spec
    from convzoo.interop.export import sidecar_doc

    spec = WeightSpec(
        model="resnet20_cifar", num_classes=3, input_size=32, crop_size=32, mean=(0.5,) * 3, std=(0.25,) * 3
    )
    doc = sidecar_doc(spec, "onnx", 32)
    pre = doc["preprocessing"]
    assert None not in pre.values()
    assert pre["crop_size"] == pre["input_size"] == 32
    want = eval_transform_from_spec(spec)(Image.new("RGB", (1, 1)))  # just the shape
    assert want.shape == (3, 32, 32)
    torch.manual_seed(0)
    photo = Image.fromarray((torch.rand(45, 60, 3) * 255).to(torch.uint8).numpy())
    literal = v2.Compose(
        [
            v2.Resize(pre["resize_size"], interpolation=v2.InterpolationMode(pre["interpolation"])),
            v2.CenterCrop(pre["crop_size"]),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(pre["mean"], pre["std"]),
        ]
    )(photo)
    assert torch.allclose(literal, eval_transform_from_spec(spec)(photo), atol=1e-5)
    assert f"resize the shorter side to {pre['resize_size']}" in doc["input"]["resize"]
    # inputs of at most 64 px are taken whole (benchmarks/small_input_eval.py), larger ones crop/0.875
    assert pre["resize_size"] == 32
    assert sidecar_doc(spec, "onnx", 64)["preprocessing"]["resize_size"] == 64
    assert sidecar_doc(spec, "onnx", 224)["preprocessing"]["resize_size"] == 256
    assert sidecar_doc(spec, "onnx", 80)["preprocessing"]["crop_size"] == 80  # exported at another size


def test_preprocessing_says_what_eval_applies():
    """eval --json's `preprocessing`: small images at the network's own size as they are, ten
    crops and dense scales named, every size filled in."""
    from convzoo.data.transforms import describe_preprocessing as preprocessing

    small = WeightSpec(model="resnet20_cifar", num_classes=10, input_size=32)
    whole = preprocessing(small, native_size=32)
    assert whole["resize_size"] == 32 and "as it is" in whole["steps"][1] and whole["steps"][2] == "no crop"
    assert "pad 4 pixels, ten crops 32x32" in preprocessing(small, crop="ten", native_size=32)["steps"][2]
    big = WeightSpec(model="resnet50", num_classes=1000, input_size=224)
    assert preprocessing(big)["resize_size"] == 256
    assert preprocessing(big, crop="ten")["steps"][2].startswith("ten crops 224x224")
    assert preprocessing(big, input_size=288)["resize_size"] == round(288 / 0.875)
    dense = preprocessing(big, crop="dense", scales=[256, 384])
    assert dense["resize_size"] == [256, 384] and "each of [256, 384]" in dense["steps"][1]


def test_predict_says_the_preprocessing_it_applied(tmp_path, capsys):
    from PIL import Image

    spec = WeightSpec(model="resnet20_cifar", num_classes=3, labels=["a", "b", "c"], input_size=32)
    save_weights(str(tmp_path / "w.safetensors"), create_model("resnet20_cifar", num_classes=3), spec)
    Image.new("RGB", (40, 30), (200, 100, 50)).save(tmp_path / "photo.png")
    argv = [
        "predict",
        "resnet20_cifar",
        str(tmp_path / "photo.png"),
        "--weights",
        str(tmp_path / "w.safetensors"),
    ]
    assert main([*argv, "--backend", "torch", "--workers", "0", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)[0]["predictions"]  # stdout stays one JSON document
    assert (
        "preprocessing: resize the shorter side to 32 (bilinear, on the 8-bit image); centre crop 32x32"
        in err
    )
