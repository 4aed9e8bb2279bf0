"""The command line as one consistent tool: one data model for every command, progress and quiet
third-party noise, train's number == eval's number, flags that mean one thing everywhere. Tiny
models and a few 32 px images: each test runs in seconds."""

import json
import sys
from pathlib import Path

import pytest

from convzoo.cli import main
from convzoo.errors import UserError
from helpers import image_folders, one_line, run, subparsers, synthetic_images

pytestmark = pytest.mark.usefixtures("tiny_models_one_thread")
CATDOG = {"cat": 4, "dog": 4}  # images per class
FEW = ["--workers", "0", "--batch-size", "16", "--recipe", "demo", "--epochs", "1"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_models_one_thread):
    """A one-epoch run on a folder whose validation split is called `validation/`."""
    data = image_folders(tmp_path_factory.mktemp("photos"), CATDOG, splits=("train", "validation"))
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "tiny_test", "--data", str(data), "--out", str(out), *FEW]) == 0
    return data, out


# ---- 1. one data model --------------------------------------------------------------------------
def test_folder_validation_split_names(tmp_path):
    from convzoo.data.source import open_source

    root = image_folders(tmp_path / "a", CATDOG, splits=("train", "validation", "test"))
    src = open_source(str(root))
    assert (src.layout, src.train_split, src.val_split) == ("splits", "train", "validation")
    assert open_source(str(root), val_split_name="test").val_split == "test"
    assert len(src.dataset()) == 8 and src.dataset().classes == ["cat", "dog"]
    with pytest.raises(UserError, match="not a folder"):
        open_source(str(root), val_split_name="holdout")
    only_train = image_folders(tmp_path / "b", CATDOG, splits=("train",))
    with pytest.raises(UserError, match="--val-split-name"):
        open_source(str(only_train)).dataset()
    only_val = image_folders(tmp_path / "c", CATDOG, splits=("val",))  # evaluation data, nothing to train on
    assert open_source(str(only_val)).splits == ("val",) and len(open_source(str(only_val)).dataset()) == 8
    with pytest.raises(UserError, match="no train/"):
        open_source(str(only_val)).train_val()


def test_train_records_the_validation_split_and_eval_uses_it(tiny_run, capsys):
    from convzoo.weights import read_spec

    data, out = tiny_run
    assert read_spec(str(out / "best.safetensors")).extra["val_split_name"] == "validation"
    rc, stdout, _ = run(
        capsys,
        "eval",
        "tiny_test",
        "--weights",
        out / "best.safetensors",
        "--data",
        data,
        "--workers",
        "0",
        "--json",
    )
    assert rc == 0 and json.loads(stdout)["split"] == "validation" and json.loads(stdout)["images"] == 8


def test_pack_accepts_the_single_tree_train_accepts(tmp_path, capsys):
    """The split pack writes is the split train uses (same fraction, same seed)."""
    from convzoo.data.source import open_source

    tree = image_folders(tmp_path / "tree", {"cat": 5, "dog": 5})
    rc, out, _ = run(capsys, "pack", tree, "--out", tmp_path / "shards", "--val-split", "0.4", "--seed", "3")
    assert rc == 0, out
    meta = json.loads((tmp_path / "shards" / "convzoo-shards.json").read_text())
    src = open_source(str(tree), val_fraction=0.4, seed=3)
    assert meta["splits"]["val"]["count"] == len(src.dataset("val")) == 4
    assert meta["splits"]["train"]["count"] == len(src.dataset("train")) == 6


def test_features_accepts_a_flat_folder_of_photos_eval_explains(tiny_run, tmp_path, capsys):
    import numpy as np

    _, out = tiny_run
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, img in enumerate(synthetic_images(3)):
        img.save(photos / f"holiday{i}.png")
    rc, _, err = run(
        capsys,
        "features",
        "tiny_test",
        "--weights",
        out / "best.safetensors",
        "--data",
        photos,
        "--layer",
        "features",
        "--out",
        tmp_path / "f.npy",
        "--workers",
        "0",
    )
    assert rc == 0, err
    assert np.load(tmp_path / "f.npy").shape[0] == 3
    rc, _, err = run(
        capsys, "eval", "tiny_test", "--weights", out / "best.safetensors", "--data", photos, "--workers", "0"
    )
    assert rc == 2 and "sub-folder" in err


# ---- 2. progress, and no third-party noise -------------------------------------------------------
def test_progress_bar_only_on_a_terminal(monkeypatch):
    import io

    from convzoo.inference.evaluate import progress_bar

    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", Tty())
    assert list(progress_bar(range(3), "eval")) == [0, 1, 2]
    assert "eval:" in sys.stderr.getvalue() and "0/3" in sys.stderr.getvalue()
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # redirected: no bar at all
    assert list(progress_bar(range(3), "eval")) == [0, 1, 2] and sys.stderr.getvalue() == ""


def test_cuda_home_warning_is_filtered(caplog):
    import logging

    import convzoo.engine.accel  # noqa: F401  (installs the filter)

    logger = logging.getLogger("torch.utils.cpp_extension")
    with caplog.at_level(logging.WARNING):
        logger.warning("No CUDA runtime is found, using CUDA_HOME='%s'", "/usr/local/cuda")
        logger.warning("something the user should see")
    assert [r.getMessage() for r in caplog.records] == ["something the user should see"]


# ---- 3. the number train reports for its best weights is the number eval gives -----------------
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_eval_of_best_weights_reproduces_train(tmp_path, capsys, precision):
    data = image_folders(tmp_path / "d", dict.fromkeys("abc", 12), splits=("train", "val"))
    out = tmp_path / "run"
    rc, _, err = run(
        capsys,
        "train",
        "small_test",
        "--data",
        data,
        "--out",
        out,
        "--precision",
        precision,
        "--workers",
        "0",
        "--batch-size",
        "12",
        "--recipe",
        "demo",
        "--epochs",
        "1",
    )
    assert rc == 0, err
    summary = json.loads((out / "summary.json").read_text())
    rc, stdout, _ = run(
        capsys,
        "eval",
        "small_test",
        "--weights",
        out / "best.safetensors",
        "--data",
        data,
        "--precision",
        precision,
        "--batch-size",
        "12",
        "--workers",
        "0",
        "--json",
    )
    r = json.loads(stdout)
    assert rc == 0 and r["images"] == summary["val_images"] == 36 and r["precision"] == precision
    assert summary["best_epoch"] == 1  # so the summary's loss is the best weights' loss too
    assert r["top1"] == pytest.approx(summary["best_top1"], abs=1e-9)
    assert r["loss"] == pytest.approx(summary["loss"], rel=1e-9)  # the same model, not merely close


# ---- 4. flags that say what they do -------------------------------------------------------------
def test_train_limit_flags(tmp_path, capsys):
    rc, stdout, err = run(
        capsys,
        "train",
        "tiny_test",
        "--data",
        "synthetic",
        "--out",
        tmp_path,
        *FEW,
        "--limit-train",
        "20",
        "--limit-val",
        "10",
        "--json",
    )
    assert rc == 0, err
    summary = json.loads(stdout)  # --json: the summary, one document on stdout
    assert (summary["train_images"], summary["val_images"]) == (20, 10)
    assert json.loads((tmp_path / "summary.json").read_text())["val_images"] == 10
    rc, _, err = run(
        capsys,
        "train",
        "tiny_test",
        "--data",
        "synthetic",
        "--out",
        tmp_path / "x",
        *FEW,
        "--limit-train",
        "0",
    )
    assert rc == 2 and "--limit-train" in err


def test_resume_needs_neither_model_nor_data(tiny_run, capsys):
    data, out = tiny_run
    rc, _, err = run(capsys, "train", "--resume", "--out", out, "--data", "synthetic")
    assert rc == 2 and "drop --data" in err  # and dropping it is now possible:
    rc, _, err = run(capsys, "train", "--resume", "--out", out, "--epochs", "2", "--workers", "0")
    assert rc == 0, err
    assert json.loads((out / "summary.json").read_text())["epochs"] == 2
    rc, _, err = run(capsys, "train", "--out", out)
    assert rc == 2 and "--resume" in err


def test_freeze_without_weights_is_refused(tmp_path, capsys):
    rc, _, err = run(
        capsys, "train", "tiny_test", "--data", "synthetic", "--out", tmp_path, "--freeze", "features"
    )
    assert rc == 2 and "--weights" in err and one_line(err), err


def test_scales_without_dense_is_refused(tiny_run, capsys):
    data, out = tiny_run
    rc, _, err = run(
        capsys,
        "eval",
        "tiny_test",
        "--weights",
        out / "best.safetensors",
        "--data",
        data,
        "--scales",
        "256,384",
    )
    assert rc == 2 and "--crop dense" in err


def test_bench_precision_auto_and_device_auto(monkeypatch, capsys):
    import convzoo.inference.bench as engine_bench

    seen = {}

    def fake_bench(model, **kw):
        seen.update(kw)
        raise UserError("stop here")

    monkeypatch.setattr(engine_bench, "bench", fake_bench)
    rc, _, err = run(capsys, "bench", "tiny_test", "--precision", "auto")
    assert rc == 2 and "stop here" in err and seen["precision"] is None  # auto = the default choice
    from convzoo.engine.distributed import resolve_device

    assert seen["device"] == str(resolve_device("auto"))
    monkeypatch.undo()
    rc, _, err = run(capsys, "bench", "tiny_test", "--precision", "int4")
    assert rc == 2 and "int4" in err


# ---- one meaning per flag --------------------------------------------------------------
def test_flags_mean_one_thing_everywhere():
    from convzoo.commands._common import DEVICE_HELP, WORKERS_HELP

    for name, p in subparsers().items():
        opts = {o: a for a in p._actions for o in a.option_strings}
        if "--device" in opts:
            assert opts["--device"].default in ("auto", None) and opts["--device"].help == DEVICE_HELP, name
        if "--workers" in opts:
            assert opts["--workers"].help.startswith(WORKERS_HELP), name
    for name in (
        "train",
        "eval",
        "features",
        "predict",
        "convert",
        "export",
        "pack",
        "chart",
        "bench",
        "list",
    ):
        p = subparsers()[name]
        assert "--json" in {o for a in p._actions for o in a.option_strings}, name
    from convzoo.commands._common import BACKEND_HELP

    for name in ("eval", "predict", "serve"):  # the commands that classify: one --backend
        opts = {o: a for a in subparsers()[name]._actions for o in a.option_strings}
        assert opts["--backend"].help == BACKEND_HELP and opts["--backend"].default == "auto", name
        assert "int8" in opts["--precision"].choices and "--calibration" in opts, name


def test_top_k_canonical_topk_alias():
    p = subparsers()["predict"]
    assert p.parse_args(["m", "x.png", "--weights", "w", "--top-k", "3"]).topk == 3
    assert p.parse_args(["m", "x.png", "--weights", "w", "--topk", "2"]).topk == 2


def test_convert_takes_the_model_positionally_and_as_option(tmp_path, capsys):
    import torch

    from convzoo.factory import create_model

    src = tmp_path / "tiny.pt"
    torch.save(create_model("tiny_test").state_dict(), src)
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    rc, stdout, err = run(capsys, "convert", "tiny_test", src, "--from", "remap", "--out", a, "--json")
    assert rc == 0, err
    assert json.loads(stdout)["spec"]["model"] == "tiny_test"
    rc, _, err = run(capsys, "convert", "--from", "remap", src, "--model", "tiny_test", "--out", b)
    assert rc == 0, err
    assert a.read_bytes() == b.read_bytes()
    rc, _, err = run(capsys, "convert", "--from", "remap", src, "--out", b)
    assert rc == 2 and "MODEL SRC" in err


# ---- 8. export: dynamic height and width where the network allows it ---------------------------
class _FixedFC(__import__("convzoo.layers", fromlist=["ZooModel"]).ZooModel):
    """A classifier on a flattened 8x8 map (AlexNet/VGG-style): one input size only."""

    def __init__(self, num_classes=10):
        from torch import nn

        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.ReLU())
        self.fc = nn.Linear(4 * 8 * 8, num_classes)

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))

    def reset_classifier(self, num_classes):
        self.fc = type(self.fc)(self.fc.in_features, num_classes)


def _weights(name, path, size=16):
    import torch

    from convzoo.factory import create_model
    from convzoo.weights import WeightSpec, save_weights

    torch.manual_seed(0)
    save_weights(
        str(path),
        create_model(name, num_classes=10),
        WeightSpec(model=name, num_classes=10, input_size=size, labels=[f"class{i}" for i in range(10)]),
    )
    return create_model(name, weights=str(path)).eval()


def test_export_dynamic_height_width(monkeypatch, tmp_path, capsys):
    import torch

    from tiny_models import register_convbn

    name = register_convbn(monkeypatch)
    model = _weights(name, tmp_path / "w.safetensors")
    x = torch.randn(2, 3, 48, 40)
    with torch.no_grad():
        want = model(x)
    rc, stdout, err = run(
        capsys,
        "export",
        name,
        "--weights",
        tmp_path / "w.safetensors",
        "--format",
        "pt2",
        "--out",
        tmp_path / "m.pt2",
        "--json",
    )
    assert rc == 0, err
    assert json.loads(stdout)["input_shape"] == ["batch", 3, "height", "width"]
    got = torch.export.load(str(tmp_path / "m.pt2")).module()(x)
    assert torch.allclose(got, want, atol=1e-5)
    ort = pytest.importorskip("onnxruntime")
    rc, _, err = run(
        capsys,
        "export",
        name,
        "--weights",
        tmp_path / "w.safetensors",
        "--format",
        "onnx",
        "--out",
        tmp_path / "m.onnx",
        "--opset",
        "18",
    )
    assert rc == 0, err
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert abs(got - want.numpy()).max() < 1e-4
    rc, _, err = run(
        capsys,
        "export",
        name,
        "--weights",
        tmp_path / "w.safetensors",
        "--format",
        "pt2",
        "--out",
        tmp_path / "x.pt2",
        "--opset",
        "18",
    )
    assert rc == 2 and "--opset" in err


def test_export_fixed_size_network_says_so(monkeypatch, tmp_path, capsys):
    from convzoo import registry

    registry._ensure_loaded()
    monkeypatch.setitem(
        registry._MODELS,
        "fixed_fc_test",
        registry.ModelInfo(
            "fixed_fc_test",
            lambda num_classes=10, **kw: _FixedFC(num_classes),
            "test only",
            input_size=16,
            min_input_size=16,
        ),
    )
    _weights("fixed_fc_test", tmp_path / "w.safetensors")
    rc, stdout, err = run(
        capsys,
        "export",
        "fixed_fc_test",
        "--weights",
        tmp_path / "w.safetensors",
        "--format",
        "pt2",
        "--out",
        tmp_path / "m.pt2",
    )
    assert rc == 0, err
    assert "['batch', 3, 16, 16]" in stdout and "spatial size fixed at 16x16" in err
    sidecar = json.loads((tmp_path / "m.pt2.json").read_text())
    assert sidecar["input"]["shape"] == ["batch", 3, 16, 16]
    assert "classifier" in sidecar["input"]["fixed_size"]


# ---- 7. bench: a peak that bounds the model, and the CPU it ran on ---------------------------------
def test_cpu_isa_reads_model_and_flags():
    from convzoo.inference.bench import cpu_isa

    text = (
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
        "flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
        "processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu\n"
    )
    assert cpu_isa(text) == {
        "model": "Intel(R) Xeon(R) Platinum 8480+",
        "isa": ["avx2", "avx512f", "avx512_bf16", "amx_bf16"],
    }


def test_matmul_peak_is_the_best_of_several_sizes_and_rounds(monkeypatch):
    import convzoo.engine.timing as b

    calls = []

    def fake(precision, device, n, reps, budget_s):
        calls.append(n)
        return {1024: 100e9, 2048: 250e9}[n] + len(calls)

    monkeypatch.setattr(b, "_matmul_flops", fake)
    assert b.matmul_peak("fp32", "cpu") == 250e9 + 4 and sorted(calls) == [1024, 1024, 2048, 2048]
    calls.clear()  # a slow device (one 1024 matmul > the budget): no 2048 round
    monkeypatch.setattr(b, "_matmul_flops", lambda p, d, n, r, s: calls.append(n) or 1e9)
    assert b.matmul_peak("bf16", "cpu") == 1e9 and calls == [1024]


def test_bench_peak_measured_before_and_after(monkeypatch):
    import convzoo.inference.bench as b

    peaks = iter([1e9, 5e9])  # the machine was busy at the start
    monkeypatch.setattr(b, "matmul_peak", lambda *a, **k: next(peaks))
    r = b.bench("tiny_test", batch_size=2, steps=1, warmup=0, precision="fp32", device="cpu")
    assert r["peak_flops_per_second"] == 5e9 and "before and after" in r["peak"]
    assert b.cpu_isa()["model"] in r["peak"]


# ---- 9. `convzoo list` answers from the cached counts, and the cache matches the models -----------
def test_list_uses_cached_counts(monkeypatch, capsys):
    import convzoo.commands.list as list_cmd

    def no_counting(name):
        raise AssertionError(f"{name} was counted: models/counts.json is missing it")

    monkeypatch.setattr(list_cmd, "count", no_counting)
    rc, stdout, _ = run(capsys, "list", "resnet*", "--json")
    rows = json.loads(stdout)
    assert rc == 0 and rows and all(r["macs"] > 0 for r in rows)


def test_cached_counts_match_the_models():
    """Every model is in counts.json at its input size with its inference parameter count (meta
    device, cheap); MACs recounted for two small models. `scripts/model_counts.py --check` recounts all."""
    from convzoo.commands._common import meta_model
    from convzoo.commands.list import cached_counts, count
    from convzoo.registry import list_models, model_info

    cache = cached_counts()
    names = [n for n in list_models("*") if not n.endswith("_test")]
    assert sorted(cache) == sorted(names), "run scripts/model_counts.py"
    for name in names:
        assert cache[name]["input_size"] == model_info(name).input_size, name
        inference = sum(p.numel() for n, p in meta_model(name).named_parameters() if "aux" not in n.lower())
        assert cache[name]["params"] == inference, name  # (auxiliary heads do not count)
    for name in ("nin", "resnet20_cifar"):
        if name in cache:
            assert count(name) == cache[name], name


# ---- 6. honest metadata -------------------------------------------------------------------------
def test_convert_spec_claims_no_published_accuracy():
    pytest.importorskip("torchvision")
    from convzoo.interop import torchvision as tv

    spec = tv.weight_spec("resnet50", 1000, "my_random_resnet50.pth", lambda s: None)
    assert "reported" not in spec.extra and spec.metrics in (None, {})
    assert "69.758" not in json.dumps(spec.extra) and "76.13" not in json.dumps(spec.extra)


def test_remap_prints_the_effective_resize_and_crop(tmp_path, capsys):
    import torch

    from convzoo.factory import create_model

    torch.save(create_model("tiny_test").state_dict(), tmp_path / "t.pt")
    rc, stdout, err = run(
        capsys,
        "convert",
        "tiny_test",
        tmp_path / "t.pt",
        "--from",
        "remap",
        "--out",
        tmp_path / "t.safetensors",
    )
    assert rc == 0, err
    assert "None" not in stdout and "resize 32, crop 32" in stdout  # <= 64 px: the whole image


# ---- 5. pictures and reports a newcomer can read --------------------------------------------------
def test_cam_overlays_are_legible_and_announced(tiny_run, tmp_path, capsys, monkeypatch):
    from PIL import Image

    from tiny_models import register_convbn

    data, _ = tiny_run
    name = register_convbn(monkeypatch)  # global pooling + one linear layer: CAM-able
    _weights(name, tmp_path / "w.safetensors", size=32)
    rc, _, err = run(
        capsys,
        "predict",
        name,
        "--weights",
        tmp_path / "w.safetensors",
        data / "validation" / "cat",
        "--cam",
        tmp_path / "cams",
    )
    assert rc == 0 and f"to {tmp_path / 'cams'}/" in err
    pngs = sorted((tmp_path / "cams").glob("*_cam.png"))
    assert len(pngs) == 4
    img = Image.open(pngs[0]).convert("RGB")
    assert min(img.size) >= 224  # not the network's 32x32 input
    strip = [img.getpixel((x, 1)) for x in range(img.width)]
    assert (0, 0, 0) in strip and any(
        min(p) > 200 for p in (img.getpixel((x, y)) for x in range(img.width) for y in range(20))
    )


def test_chart_labels_do_not_overprint():
    from convzoo.analysis.chart import _box, _overlap, spread_labels

    anchors = [(100.0, 200.0), (103.0, 202.0), (104.0, 199.0), (300.0, 50.0)]  # ResNet/ResNeXt crowd
    texts = ["resnet50", "resnext50_32x4d", "wide_resnet50", "alexnet"]
    offsets = spread_labels(anchors, texts)
    boxes = [_box(a, o, t, 7) for a, o, t in zip(anchors, offsets, texts)]
    assert not any(_overlap(boxes[i], boxes[j]) for i in range(4) for j in range(i + 1, 4))
    assert offsets[3] == (4, 4)  # a lone point keeps the plain spot


def test_short_runs_get_integer_epoch_ticks(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from convzoo.analysis.curves import plot_curves

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    rows = [
        {"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.1 / e, "train_top1": 10 * e, "val_top1": 9 * e}
        for e in (1, 2, 3)
    ]
    plot_curves(rows, str(tmp_path))
    for fig in figures:
        ax = fig.axes[0]
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks)


def test_report_says_how_many_mistakes_and_no_top5_below_six_classes(tiny_run, tmp_path, capsys):
    import csv

    data, out = tiny_run
    args = [
        "eval",
        "tiny_test",
        "--weights",
        out / "best.safetensors",
        "--data",
        data,
        "--workers",
        "0",
        "--report",
        tmp_path / "rep",
        "--misclassified",
        "1",
    ]
    rc, stdout, _ = run(capsys, *args, "--json")
    r = json.loads(stdout)
    assert rc == 0 and r["num_classes"] == 2 and r["top5"] is None and r["top5_error"] is None
    rows = list(csv.DictReader((tmp_path / "rep" / "misclassified.csv").open()))
    assert len(rows) == r["misclassified_rows"] == min(1, r["misclassified"])
    rc, stdout, _ = run(capsys, *args)
    assert "no top-5 (2 classes)" in stdout and f"of {r['misclassified']} mistakes" in stdout


# ---- 10. the README's examples are re-run by a script, with shipped models only -------------------
def test_readme_example_script_commands_parse():
    """Every convzoo command of scripts/readme_examples.py parses with today's CLI and names a
    shipped model (tiny_test & co. are test-only); running them is the script's job."""
    import importlib.util

    from convzoo.cli import build_parser
    from convzoo.registry import _MODELS

    path = Path(__file__).resolve().parents[1] / "scripts" / "readme_examples.py"
    spec = importlib.util.spec_from_file_location("readme_examples", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    argvs = [a for _, cmds in mod.EXAMPLES.values() for c in cmds if (a := mod.convzoo_argv(c))]
    assert len(argvs) >= 8
    for argv in argvs:
        args = build_parser().parse_args(argv)
        model = getattr(args, "model", None)
        assert model is None or (model in _MODELS and not model.endswith("_test")), argv
    assert mod.clean("a\rb 50%\rb 100%\n\x1b[2Kdone\n") == "b 100%\ndone"


def test_eval_settings_are_checked_when_the_job_is_built(capsys):
    """eval's flags become one frozen EvalJob; a bad value is one line (exit 2) before any file is
    read (the weights named here do not exist)."""
    import dataclasses

    from convzoo.inference.evaluation import EvalJob

    base = ["eval", "tiny_test", "--weights", "absent.safetensors", "--data", "synthetic"]
    for flags, words in [
        (["--misclassified", "-1"], "--misclassified must be 0 (all) or more"),
        (["--scales", "256"], "--scales applies to --crop dense only"),
        (["--crop", "dense", "--backend", "onnxruntime"], "use --backend torch"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
        (["--limit", "0"], "--limit must be a positive number"),
    ]:
        rc, out, err = run(capsys, *base, *flags)
        assert rc == 2 and words in err and one_line(err) and out == "", flags
    job = EvalJob("tiny_test", "w.safetensors", "synthetic", crop="dense", scales=(256, 384))
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.crop = "center"  # type: ignore[misc]


def test_features_settings_are_checked_when_the_job_is_built(capsys, tmp_path):
    """features' flags become one frozen FeaturesJob; a bad value is one line (exit 2) before any
    file is read or written (the weights named here do not exist)."""
    import dataclasses

    from convzoo.inference.features import FeaturesJob

    base = ["features", "tiny_test", "--weights", "absent.safetensors", "--data", "synthetic"]
    npy = ["--layer", "features", "--out", str(tmp_path / "f.npy")]
    for flags, words in [
        (["--layer", "features", "--out", str(tmp_path / "f.csv")], "--out must be a .npy file"),
        ([*npy, "--batch-size", "0"], "--batch-size must be >= 1"),
        ([*npy, "--workers", "-1"], "--workers >= 0"),
        ([*npy, "--limit", "0"], "--limit must be a positive number"),
    ]:
        rc, out, err = run(capsys, *base, *flags)
        assert rc == 2 and words in err and one_line(err) and out == "", flags
    assert not list(tmp_path.iterdir())
    with pytest.raises(UserError, match="--precision must be one of auto, fp32, bf16, fp16") as e:
        FeaturesJob("tiny_test", "w.safetensors", "synthetic", "features", "f.npy", precision="int8")
    assert one_line(e.value)
    job = FeaturesJob("tiny_test", "w.safetensors", "synthetic", "features", "f.npy")
    assert job.image_list == "f.txt"
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.layer = "conv4_x"  # type: ignore[misc]
