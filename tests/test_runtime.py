"""The inference backends (inference/runtime.py): ONNX Runtime and OpenVINO run the exported graph of
convzoo's model. Each is an independent implementation of the forward pass, so their fp32 logits
must equal PyTorch's; int8 must stay close to fp32 on real images; graphs are cached under a key
of the weights; every wrong combination is one line and exit code 2."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

from convzoo.cli import main
from convzoo.errors import RunFailed, UserError
from convzoo.factory import create_model
from convzoo.inference import runtime
from convzoo.weights import WeightSpec, save_weights
from helpers import CIFAR10_SMALL, randomize_

pytest.importorskip("onnxruntime")
BACKENDS = ["onnxruntime"] + (["openvino"] if importlib.util.find_spec("openvino") else [])
NAME = "resnet20_cifar"
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
TEST_IMAGES = CIFAR10_SMALL / "test"


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    """One graph cache for the module (exports are the slow part), never the user's."""
    monkeypatch.setenv("CONVZOO_CACHE", str(tmp_path_factory.getbasetemp() / "runtime-cache"))


def weights_file(path: Path, seed: int = 0) -> str:
    torch.manual_seed(seed)
    model = randomize_(create_model(NAME), seed)
    spec = WeightSpec(
        NAME, 10, labels=[f"c{i}" for i in range(10)], input_size=32, mean=CIFAR_MEAN, std=CIFAR_STD
    )
    save_weights(str(path), model, spec)
    return str(path)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
    return weights_file(tmp_path_factory.mktemp("w") / "r20.safetensors")


@pytest.fixture(scope="module")
def other_weights(tmp_path_factory) -> str:
    return weights_file(tmp_path_factory.mktemp("w") / "r20b.safetensors", seed=1)


def real_batch(n: int = 64) -> torch.Tensor:
    from convzoo.data.datasets import load_image
    from convzoo.data.transforms import eval_transform_from_spec
    from convzoo.inference.predict import expand_paths

    spec = WeightSpec(NAME, 10, input_size=32, mean=CIFAR_MEAN, std=CIFAR_STD)
    t = eval_transform_from_spec(spec)
    return torch.stack([t(load_image(p)) for p in expand_paths([str(TEST_IMAGES)])[:n]])


def plain(weights: str):
    return create_model(NAME, weights=weights).eval()


@pytest.mark.parametrize("backend", BACKENDS)
def test_fp32_backend_computes_what_pytorch_computes(backend, weights):
    model = plain(weights)
    fast = runtime.runtime_model(model, NAME, backend, "fp32", 32)
    x = real_batch(16)
    with torch.no_grad():
        ref = model(x)
    got = fast(x)
    assert got.dtype == torch.float32 and got.shape == ref.shape
    assert (got - ref).abs().max() <= 1e-4 * max(1.0, float(ref.abs().max()))
    one = fast(x[:1])  # the batch axis is dynamic
    assert torch.allclose(one, ref[:1], atol=1e-4 * max(1.0, float(ref.abs().max())))


FIRST_IN_FLOAT = runtime.Int8Settings(nncf_first_layer_float_below=1.0)  # whatever its share


def nncf_float_layers(xml: str) -> list[str]:
    """Which of the first convolution, the middle ones and the last matmul of an OpenVINO int8 IR
    read a float input (no FakeQuantize in front of their data input)."""
    import openvino as ov

    ops = [
        op
        for op in ov.Core().read_model(xml).get_ordered_ops()
        if op.get_type_name() in ("Convolution", "GroupConvolution", "MatMul")
    ]

    def source(node):  # through the ops that only move or pick values (NNCF quantizes before them)
        while node.get_type_name() in ("Reshape", "Squeeze", "Unsqueeze", "Transpose", "MaxPool"):
            node = node.input_value(0).get_node()
        return node

    floats = [source(op.input_value(0).get_node()).get_type_name() != "FakeQuantize" for op in ops]
    return [
        where for where, f in (("first", floats[0]), ("middle", any(floats[1:-1])), ("last", floats[-1])) if f
    ]


@pytest.mark.skipif("openvino" not in BACKENDS, reason="openvino is not installed (convzoo[openvino])")
@pytest.mark.parametrize("name", [NAME, "vgg8_cifar"])
def test_layer_macs_from_openvino_shapes_equal_torch_hooks(name, tmp_path):
    """The int8 placement rule weighs layers by OpenVINO's shapes; PyTorch's hooks
    (engine/flops.py) count the same network independently."""
    import openvino as ov

    from convzoo.engine.flops import count_macs
    from convzoo.interop.export import write_onnx

    model = create_model(name).eval()
    write_onnx(model, 32, str(tmp_path / "m.onnx"))
    layers = runtime.layer_macs(ov.Core().read_model(str(tmp_path / "m.onnx")))
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert sum(m for _, m in layers) == count_macs(model, 32)
    assert layers[0][1] == count_macs(torch.nn.Sequential(first), 32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_int8_stays_close_to_fp32_on_real_images(backend, weights):
    model = plain(weights)
    files = runtime.check_calibration_path(str(CIFAR10_SMALL / "train"))
    from convzoo.data.transforms import eval_transform_from_spec

    cal = runtime.calibration_from_files(files, eval_transform_from_spec(model.weight_spec), "train")
    q = runtime.runtime_model(model, NAME, backend, "int8", 32, cal)
    assert "-int8-" in q.graph
    # measured when the graph was made, on training images it was not calibrated on
    assert q.agreement is not None and q.agreement["images"] > 0 and "held-out" in q.agreement["where"]
    if runtime.uses_nncf(backend):  # OpenVINO's own quantizer, its IR cached beside the ONNX graph
        assert q.agreement["quantizer"] == "NNCF" and q.graph.endswith(".xml")
        # ResNet-20's first convolution is 1.09 % of its multiply-adds, over the 1 % rule: every
        # layer int8 (NNCF's placement); a rule that takes it leaves just that layer in float
        assert nncf_float_layers(q.graph) == []
        said: list[str] = []
        fp32_graph = q.graph.split("-int8-")[0] + ".onnx"
        first = runtime.nncf_int8_graph(fp32_graph, cal, said.append, FIRST_IN_FLOAT)
        assert nncf_float_layers(first) == ["first"]
        assert "the first convolution in float (1.1 % of the multiply-adds)" in said[0]
    x = real_batch(64)
    with torch.no_grad():
        ref = model(x)
    got = q(x)
    cos = torch.nn.functional.cosine_similarity(
        got - got.mean(1, keepdim=True), ref - ref.mean(1, keepdim=True)
    )
    assert float(cos.median()) > 0.97, f"int8 logits far from fp32 (median cosine {float(cos.median()):.3f})"
    assert (got.argmax(1) == ref.argmax(1)).float().mean() >= 0.8


def test_graph_cached_and_keyed_by_the_weights(weights, other_weights, capsys):
    model = plain(weights)
    first = runtime.runtime_model(model, NAME, "onnxruntime", "fp32", 32, command="t")
    capsys.readouterr()
    stamp = os.stat(first.graph).st_mtime_ns
    again = runtime.runtime_model(plain(weights), NAME, "onnxruntime", "fp32", 32, command="t")
    assert again.graph == first.graph and os.stat(again.graph).st_mtime_ns == stamp
    assert "exporting" not in capsys.readouterr().err  # the cached graph was used
    other = runtime.runtime_model(plain(other_weights), NAME, "onnxruntime", "fp32", 32)
    assert other.graph != first.graph
    assert runtime.model_key(model, 32) != runtime.model_key(model, 40)


def test_a_graph_that_disagrees_is_removed_and_the_run_stops(weights, other_weights, monkeypatch, tmp_path):
    """An exporter that wrote the wrong network (here: the graph of other weights) is caught."""
    import shutil

    wrong, _ = runtime.onnx_graph(plain(other_weights), NAME, 32, print)
    monkeypatch.setenv("CONVZOO_CACHE", str(tmp_path))
    monkeypatch.setattr(runtime, "write_onnx", lambda m, size, out: shutil.copy(wrong, out))
    with pytest.raises(RunFailed, match="disagrees with PyTorch"):
        runtime.runtime_model(plain(weights), NAME, "onnxruntime", "fp32", 32)
    assert not [p for p in Path(tmp_path, "graphs").glob("*.onnx")]


def test_eval_and_predict_through_a_backend_agree_with_torch(weights, capsys):
    data = f"cifar10:{CIFAR10_SMALL}"
    runs = {}
    for backend in ("torch", "onnxruntime"):
        assert main(["eval", NAME, "--weights", weights, "--data", data, "--backend", backend, "--json"]) == 0
        runs[backend] = json.loads(capsys.readouterr().out)
    assert runs["onnxruntime"]["backend"] == "onnxruntime" and runs["torch"]["backend"] == "torch"
    assert runs["onnxruntime"]["top1"] == runs["torch"]["top1"]
    assert abs(runs["onnxruntime"]["loss"] - runs["torch"]["loss"]) < 1e-4
    images = str(TEST_IMAGES / "cat")
    predictions = {}
    for backend in ("torch", "onnxruntime"):
        assert main(["predict", NAME, images, "--weights", weights, "--backend", backend, "--json"]) == 0
        predictions[backend] = [r["predictions"][0]["index"] for r in json.loads(capsys.readouterr().out)]
    assert predictions["onnxruntime"] == predictions["torch"] and predictions["torch"]


def test_eval_through_a_backend_prints_trainings_top1_beside_its_own(weights, tmp_path, capsys):
    """Weights whose metadata carries training's top-1 on the split (train writes it, from the
    PyTorch model `eval --backend torch` runs) are evaluated by a graph runtime: both figures are
    printed, and an fp32 graph stays within one image of PyTorch's count."""
    from convzoo.weights import read_spec

    data = f"cifar10:{CIFAR10_SMALL}"
    argv = ["eval", NAME, "--data", data, "--workers", "0", "--json"]
    assert main([*argv, "--weights", weights, "--backend", "torch"]) == 0
    torch_run = json.loads(capsys.readouterr().out)
    assert "train_top1" not in torch_run  # nothing recorded in these weights, and PyTorch ran
    spec = read_spec(weights)
    spec = dataclasses.replace(spec, metrics={"top1": torch_run["top1"], "data": data, "epoch": 1})
    trained = str(tmp_path / "trained.safetensors")
    save_weights(trained, plain(weights), spec)
    assert main([*argv, "--weights", trained, "--backend", "onnxruntime", "--precision", "fp32"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["train_top1"] == torch_run["top1"] and r["backend"] == "onnxruntime"
    assert abs(r["top1"] - r["train_top1"]) <= 100 / r["images"]  # tolerance: one image
    assert main(argv[:-1] + ["--weights", trained, "--backend", "onnxruntime", "--precision", "fp32"]) == 0
    out = capsys.readouterr().out
    assert f"training measured top-1 {torch_run['top1']:.2f}%" in out and "onnxruntime fp32 gives" in out
    assert main([*argv, "--weights", trained, "--backend", "onnxruntime", "--limit", "10"]) == 0
    assert "train_top1" not in json.loads(capsys.readouterr().out)  # another evaluation: not compared


def test_eval_int8_calibrates_on_the_split_once(weights, capsys):
    data = f"cifar10:{CIFAR10_SMALL}"
    argv = [
        "eval",
        NAME,
        "--weights",
        weights,
        "--data",
        data,
        "--backend",
        "onnxruntime",
        "--precision",
        "int8",
    ]
    assert main([*argv, "--json"]) == 0
    out = capsys.readouterr()
    assert (
        json.loads(out.out)["precision"] == "int8"
        and "calibrating int8 on 100 images of the evaluated split (test" in out.err
    )
    assert main([*argv, "--json"]) == 0
    out = capsys.readouterr()
    assert "calibrating" not in out.err  # the int8 graph came from the cache
    # the agreement measured when the graph was made is said whenever it runs, and kept in --json
    assert out.err.count("top-1 agreement with fp32") == 1
    assert json.loads(out.out)["int8_agreement"]["quantizer"] == "ONNX Runtime"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--backend", "onnxruntime", "--precision", "bf16"], "runs fp32 or int8"),
        (["--backend", "torch", "--precision", "int8"], "--backend onnxruntime or openvino"),
        (["--backend", "onnxruntime", "--calibration", "x"], "applies to --precision int8"),
        (
            ["--backend", "onnxruntime", "--precision", "int8", "--calibration", "/nonexistent"],
            "no such file",
        ),
        (["--backend", "onnxruntime", "--compile"], "applies to --backend torch"),
        (["--backend", "onnxruntime", "--crop", "dense"], "use --backend torch"),
    ],
)
def test_wrong_combinations_are_one_line(weights, extra, message, capsys):
    argv = ["eval", NAME, "--weights", weights, "--data", f"cifar10:{CIFAR10_SMALL}", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_a_missing_runtime_names_the_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "openvino" else real(n, *a))
    with pytest.raises(UserError, match=r"pip install 'convzoo\[openvino\]'"):
        runtime.resolve_backend("openvino", "auto", "cpu")


def test_serve_runs_a_backend_and_says_which(weights):
    pytest.importorskip("fastapi")
    from convzoo.serve.model import Job, ServedModel

    served = {b: ServedModel(NAME, weights, device="cpu", backend=b) for b in ("torch", "onnxruntime")}
    assert served["onnxruntime"].describe_model()["backend"] == "onnxruntime"
    # auto is resolved: the page and /v1/models name the backend that runs, not "auto"
    auto = ServedModel(NAME, weights, device="cpu", backend="auto")
    assert auto.describe_model()["backend"] == getattr(auto.fast, "backend", "torch") != "auto"
    jobs = [Job(t, 3, False) for t in real_batch(4)]
    tops = {b: [r["predictions"][0]["index"] for r in m.run_batch(jobs)] for b, m in served.items()}
    assert tops["onnxruntime"] == tops["torch"]
    with pytest.raises(UserError, match="applies to --backend torch"):
        ServedModel(NAME, weights, device="cpu", backend="onnxruntime", compile=True)


def test_serve_int8_needs_calibration_images(weights, capsys):
    pytest.importorskip("fastapi")
    assert main(["serve", NAME, "--weights", weights, "--backend", "onnxruntime", "--precision", "int8"]) == 2
    assert "needs --calibration DIR" in capsys.readouterr().err


def test_bench_times_a_backend_and_refuses_training(capsys):
    """In a process of its own, as a user runs it: after several int8 graphs were made and run in
    this test process (ONNX Runtime and OpenVINO sessions), ONNX Runtime's quantizer was seen to
    crash it (segmentation fault) - a fault of one long process, not of one command."""
    import subprocess
    import sys

    argv = ["bench", NAME, "--backend", "onnxruntime", "--precision", "int8", "--batch-size", "4"]
    done = subprocess.run(
        [sys.executable, "-m", "convzoo", *argv, "--steps", "2", "--warmup", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout)
    assert r["backend"] == "onnxruntime" and r["precision"] == "int8" and r["images_per_second"] > 0
    assert "top-1 agreement with fp32" in done.stderr and r["int8_agreement"]["images"] > 0
    assert main([*argv, "--mode", "train"]) == 2
    assert "runs inference" in capsys.readouterr().err
