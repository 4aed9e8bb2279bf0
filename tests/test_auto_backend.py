"""`--backend auto` (inference/runtime.py `choose_backend`), the automatic `--workers` and predict's
decoding beside the forward pass. The decisions are tested with the installed runtimes, the CPU's
bf16 units and the network's work replaced where needed, so each rule is exercised on any
machine; nothing is timed."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch
from PIL import Image

from convzoo.cli import main
from convzoo.factory import create_model
from convzoo.inference import evaluate, runtime
from convzoo.weights import WeightSpec, save_weights

pytestmark = pytest.mark.usefixtures("tiny_models_one_thread")


@pytest.fixture
def machine(monkeypatch, tmp_path):
    """A CPU with bf16 units and both runtimes installed, a graph cache of its own."""
    monkeypatch.setenv("CONVZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(runtime, "installed_runtimes", lambda: ["openvino", "onnxruntime"])
    monkeypatch.setattr("convzoo.engine.accel.cpu_has_fast_bf16", lambda: True)
    # which runtime runs fp32 faster is measured on the graph (test_fp32_runtimes_are_timed_...)
    monkeypatch.setattr(runtime, "runtime_speeds", lambda *a: {"openvino": 1.0, "onnxruntime": 2.0})
    return monkeypatch


def choose(precision="bf16", images=None, device="cpu", needs_torch=None, name="tiny_test"):
    return runtime.choose_backend(create_model(name), name, 32, precision, device, images, needs_torch)


def test_pytorch_where_a_feature_or_the_device_needs_it(machine):
    assert choose(device="meta").backend == "torch"  # not a CPU
    c = choose(needs_torch="--cam (class activation maps)")
    assert (c.backend, c.precision) == ("torch", "bf16") and "--cam" in c.reason
    assert choose("fp16").backend == "torch"
    machine.setattr(runtime, "installed_runtimes", lambda: [])
    c = choose()
    assert c.backend == "torch" and "pip install 'convzoo[openvino]'" in c.reason


def test_a_small_job_does_not_wait_for_an_export(machine):
    c = choose(images=36)
    assert c.backend == "torch" and "less than making its graph" in c.reason and "36 images" in c.reason


def test_a_large_job_or_a_cached_graph_runs_the_fastest_runtime(machine):
    machine.setattr(runtime, "count_macs", lambda model, size: 4_100_000_000)  # ResNet-50's work
    c = choose(images=None)  # open-ended (a server): counted as OPEN_ENDED_IMAGES
    assert (c.backend, c.precision) == ("openvino", "bf16") and "repays itself" in c.reason
    assert choose(images=50).backend == "torch"
    model = create_model("tiny_test")
    path = Path(runtime.graph_path(model, "tiny_test", 32))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")  # the graph is there: nothing to repay
    c = runtime.choose_backend(model, "tiny_test", 32, "bf16", "cpu", 1, None)
    assert c.backend == "openvino" and "cached" in c.reason


def test_the_float_precision_decides_between_the_runtimes(machine):
    machine.setattr(runtime, "count_macs", lambda model, size: 4_100_000_000)
    machine.setattr("convzoo.engine.accel.cpu_has_fast_bf16", lambda: False)
    assert (choose("fp32").backend, choose("fp32").precision) == ("openvino", "fp32")
    assert choose("bf16").backend == "torch"  # bf16 asked for on a CPU without bf16 units
    machine.setattr(runtime, "installed_runtimes", lambda: ["onnxruntime"])
    assert choose("fp32").backend == "onnxruntime"
    machine.setattr("convzoo.engine.accel.cpu_has_fast_bf16", lambda: True)
    c = choose("bf16")  # ONNX Runtime's fp32 is slower than PyTorch's native bf16
    assert c.backend == "torch" and "no faster" in c.reason


@pytest.mark.skipif(
    len(runtime.installed_runtimes()) < 2, reason="needs both runtimes (convzoo[openvino], convzoo[onnx])"
)
def test_fp32_runtimes_are_timed_on_the_graph_once_and_the_faster_runs(monkeypatch, tmp_path):
    monkeypatch.setenv("CONVZOO_CACHE", str(tmp_path))  # the real runtimes, speeds and CPU
    monkeypatch.setattr(runtime, "count_macs", lambda model, size: 4_100_000_000)  # worth a graph
    monkeypatch.setattr("convzoo.engine.accel.cpu_has_fast_bf16", lambda: False)
    model = create_model("tiny_test")
    said: list[str] = []

    def pick():
        return runtime.choose_backend(model, "tiny_test", 32, "fp32", "cpu", None, None, log=said.append)

    c = pick()
    speeds = json.loads(Path(runtime.graph_path(model, "tiny_test", 32) + ".speed.json").read_text())
    (timed,) = speeds.values()  # one machine's measurement
    assert set(timed) == {"openvino", "onnxruntime"} and c.backend == min(timed, key=timed.get)
    assert "measured now" in c.reason and any("timing openvino and onnxruntime" in m for m in said)
    monkeypatch.setattr(runtime, "session", lambda *a: pytest.fail("timed again"))
    c2 = pick()  # the measurement is kept beside the graph
    assert c2.backend == c.backend and "measured once, cached" in c2.reason


def test_int8_only_when_asked(machine):
    machine.setattr(runtime, "count_macs", lambda model, size: 4_100_000_000)
    for precision in ("fp32", "bf16"):
        assert choose(precision).precision == precision  # never int8 by itself
    assert (choose("int8").backend, choose("int8").precision) == ("openvino", "int8")
    machine.setattr(runtime, "installed_runtimes", lambda: [])
    with pytest.raises(Exception, match="pip install"):
        choose("int8")


def test_count_macs_matches_the_profile():
    from convzoo.analysis.profile import profile

    model = create_model("resnet20_cifar")
    assert runtime.count_macs(model, 32) == profile(create_model("resnet20_cifar"), 32).macs
    assert model.training  # left as it was


def test_auto_workers_is_one_rule_for_eval_and_predict():
    assert evaluate.auto_workers(32, 32)[0] == 0  # one batch: nothing to overlap
    n, why = evaluate.auto_workers(1000, 32)
    assert 1 <= n <= evaluate.MAX_AUTO_WORKERS and "auto" in why
    assert evaluate.auto_workers(None, 32)[0] == n


def test_prefetch_keeps_order_and_a_bounded_lead():
    from concurrent.futures import ThreadPoolExecutor

    from convzoo.inference.predict import _prefetched

    started: list[int] = []
    lock = threading.Lock()

    def work(i):
        with lock:
            started.append(i)
        return i * i

    with ThreadPoolExecutor(2) as pool:
        got = []
        for value in _prefetched(pool, work, list(range(50)), ahead=4):
            got.append(value)
            assert len(started) <= len(got) + 4  # never more than `ahead` items beyond the consumer
    assert got == [i * i for i in range(50)]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    save_weights(str(path), create_model("tiny_test"), WeightSpec("tiny_test", 10, input_size=32))
    return str(path)


def test_predict_decodes_beside_the_network_at_reduced_size(weights, tmp_path, capsys, monkeypatch):
    import convzoo.inference.predict as predict_module

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(5):
        Image.new("RGB", (640, 480), (40 * i, 90, 200)).save(folder / f"p{i}.jpg")
    drafts, threads = [], set()
    real = predict_module.load_image

    def spy(path, draft_size=None, data=None):
        drafts.append(draft_size)
        threads.add(threading.current_thread().name)
        return real(path, draft_size=draft_size, data=data)

    monkeypatch.setattr(predict_module, "load_image", spy)
    argv = ["predict", "tiny_test", str(folder), "--weights", weights, "--batch-size", "2", "--json"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)) == 5
    from convzoo.data.transforms import eval_transform_from_spec

    needed = eval_transform_from_spec(WeightSpec("tiny_test", 10, input_size=32)).draft_size
    assert set(drafts) == {needed} and all(t.startswith("decode") for t in threads)
    err = captured.err
    assert (
        err.count("convzoo predict: backend torch bf16 (auto: ")
        + err.count("convzoo predict: backend torch fp32 (auto: ")
        == 1
    )  # said once, with why
    assert "decoding thread(s) (auto:" in err and "images/s end to end" in err
    assert main([*argv, "--workers", "0"]) == 0
    assert "decoding thread" not in capsys.readouterr().err  # as asked: nothing to say


def test_bf16_units_slower_than_fp32_send_the_runtime_to_fp32(machine):
    """The flags say bf16 instructions exist, not that they are fast: where bf16 matmuls measured
    slower than fp32, a default precision runs the graph runtime in fp32; PyTorch, where it runs,
    keeps the precision training used, and a bf16 the user asked for is kept."""
    machine.setattr(runtime, "count_macs", lambda model, size: 4_100_000_000)
    machine.setattr(
        "convzoo.engine.accel.bf16_measured_fast", lambda: (False, "bf16 matmuls measured 0.60x fp32")
    )
    model = create_model("tiny_test")
    c = runtime.choose_backend(model, "tiny_test", 32, "bf16", "cpu", None, None, precision_by_default=True)
    assert (c.backend, c.precision) == ("openvino", "fp32") and "0.60x" in c.reason
    c = runtime.choose_backend(model, "tiny_test", 32, "bf16", "cpu", 5, None, precision_by_default=True)
    assert (c.backend, c.precision) == ("torch", "bf16")  # a small job: PyTorch as training ran it
    assert choose("bf16").precision == "bf16"  # asked for


@pytest.mark.parametrize(
    "settings,words",
    [
        ({"topk": 0}, "--top-k and --batch-size must be at least 1"),
        ({"batch_size": 0}, "--top-k and --batch-size must be at least 1"),
        ({"workers": -1}, "--workers at least 0"),
        ({"calibration": "photos"}, "--calibration applies to --precision int8"),
    ],
)
def test_predict_settings_are_checked_when_its_job_is_built(settings, words, monkeypatch):
    """A bad value is one line when the PredictJob is built: no model is made, no image read."""
    from convzoo.errors import UserError
    from convzoo.inference.predict import PredictJob

    monkeypatch.setattr("convzoo.factory.create_model", lambda *a, **k: pytest.fail("work started"))
    with pytest.raises(UserError, match=words) as e:
        PredictJob("tiny_test", "w.safetensors", ("photos",), **settings)
    assert "\n" not in str(e.value)
    assert PredictJob("tiny_test", "w.safetensors", ("photos",), precision="int8", calibration="c").topk == 5
