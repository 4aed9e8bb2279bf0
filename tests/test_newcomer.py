"""The newcomer's path (issue 15) and consistent flags (issue 13): one data model for every
command, progress and quiet third-party noise, train's number == eval's number, flags that mean
one thing everywhere. Tiny models and a few 32 px images: each test runs in seconds."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from convzoo.cli import main  # noqa: E402
from convzoo.errors import UserError  # noqa: E402

pytestmark = pytest.mark.usefixtures("tiny_models_one_thread")
FEW = ["--workers", "0", "--batch-size", "16", "--recipe", "demo", "--epochs", "1"]


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _images(n: int):
    from convzoo.data.datasets import build_dataset
    ds = build_dataset("synthetic", "val", size=max(n, 8))
    return [ds[i][0] for i in range(n)]


def make_tree(root: Path, splits=("train", "val"), classes=("cat", "dog"), per_class=4) -> Path:
    """root/<split>/<class>/<i>.png for each split ('' = a single class-folder tree)."""
    imgs = _images(per_class * len(classes))
    for split in splits:
        for c, name in enumerate(classes):
            d = root / split / name if split else root / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                imgs[c * per_class + i].save(d / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_models_one_thread):
    """A one-epoch run on a folder whose validation split is called `validation/`."""
    data = make_tree(tmp_path_factory.mktemp("photos"), splits=("train", "validation"))
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "tiny_test", "--data", str(data), "--out", str(out), *FEW]) == 0
    return data, out


# ---- 1. one data model --------------------------------------------------------------------------
def test_folder_validation_split_names(tmp_path):
    from convzoo.data.source import open_source
    root = make_tree(tmp_path / "a", splits=("train", "validation", "test"))
    src = open_source(str(root))
    assert (src.layout, src.train_split, src.val_split) == ("splits", "train", "validation")
    assert open_source(str(root), val_split_name="test").val_split == "test"
    assert len(src.dataset()) == 8 and src.dataset().classes == ["cat", "dog"]
    with pytest.raises(UserError, match="not a folder"):
        open_source(str(root), val_split_name="holdout")
    only_train = make_tree(tmp_path / "b", splits=("train",))
    with pytest.raises(UserError, match="--val-split-name"):
        open_source(str(only_train)).dataset()


def test_train_records_the_validation_split_and_eval_uses_it(tiny_run, capsys):
    from convzoo.weights import read_spec
    data, out = tiny_run
    assert read_spec(str(out / "best.safetensors")).extra["val_split_name"] == "validation"
    rc, stdout, _ = run(capsys, "eval", "tiny_test", "--weights", out / "best.safetensors", "--data", data,
                        "--workers", "0", "--json")
    assert rc == 0 and json.loads(stdout)["split"] == "validation" and json.loads(stdout)["images"] == 8


def test_pack_accepts_the_single_tree_train_accepts(tmp_path, capsys):
    """The split pack writes is the split train uses (same fraction, same seed)."""
    from convzoo.data.source import open_source
    tree = make_tree(tmp_path / "tree", splits=("",), per_class=5)
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
    for i, img in enumerate(_images(3)):
        img.save(photos / f"holiday{i}.png")
    rc, _, err = run(capsys, "features", "tiny_test", "--weights", out / "best.safetensors", "--data", photos,
                     "--layer", "features", "--out", tmp_path / "f.npy", "--workers", "0")
    assert rc == 0, err
    assert np.load(tmp_path / "f.npy").shape[0] == 3
    rc, _, err = run(capsys, "eval", "tiny_test", "--weights", out / "best.safetensors", "--data", photos,
                     "--workers", "0")
    assert rc == 2 and "sub-folder" in err


# ---- 2. progress, and no third-party noise -------------------------------------------------------
def test_progress_bar_only_on_a_terminal(monkeypatch):
    import io

    from convzoo.engine.evaluate import progress_bar

    class Tty(io.StringIO):
        def isatty(self):
            return True
    monkeypatch.setattr(sys, "stderr", Tty())
    assert list(progress_bar(range(3), "eval")) == [0, 1, 2]
    assert "eval:" in sys.stderr.getvalue() and "0/3" in sys.stderr.getvalue()
    monkeypatch.setattr(sys, "stderr", io.StringIO())           # redirected: no bar at all
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
    data = make_tree(tmp_path / "d", per_class=12, classes=("a", "b", "c"))
    out = tmp_path / "run"
    rc, _, err = run(capsys, "train", "small_test", "--data", data, "--out", out, "--precision", precision,
                     "--workers", "0", "--batch-size", "12", "--recipe", "demo", "--epochs", "1")
    assert rc == 0, err
    summary = json.loads((out / "summary.json").read_text())
    rc, stdout, _ = run(capsys, "eval", "small_test", "--weights", out / "best.safetensors", "--data", data,
                        "--precision", precision, "--batch-size", "12", "--workers", "0", "--json")
    r = json.loads(stdout)
    assert rc == 0 and r["images"] == summary["val_images"] == 36 and r["precision"] == precision
    assert summary["best_epoch"] == 1              # so the summary's loss is the best weights' loss too
    assert r["top1"] == pytest.approx(summary["best_top1"], abs=1e-9)
    assert r["loss"] == pytest.approx(summary["loss"], rel=1e-9)   # the same model, not merely close


# ---- 4. flags that say what they do -------------------------------------------------------------
def test_train_limit_flags(tmp_path, capsys):
    rc, stdout, err = run(capsys, "train", "tiny_test", "--data", "synthetic", "--out", tmp_path, *FEW,
                          "--limit-train", "20", "--limit-val", "10", "--json")
    assert rc == 0, err
    summary = json.loads(stdout)                      # --json: the summary, one document on stdout
    assert (summary["train_images"], summary["val_images"]) == (20, 10)
    assert json.loads((tmp_path / "summary.json").read_text())["val_images"] == 10
    rc, _, err = run(capsys, "train", "tiny_test", "--data", "synthetic", "--out", tmp_path / "x", *FEW,
                     "--limit-train", "0")
    assert rc == 2 and "--limit-train" in err


def test_resume_needs_neither_model_nor_data(tiny_run, capsys):
    data, out = tiny_run
    rc, _, err = run(capsys, "train", "--resume", "--out", out, "--data", "synthetic")
    assert rc == 2 and "drop the option" in err                  # and dropping it is now possible:
    rc, _, err = run(capsys, "train", "--resume", "--out", out, "--epochs", "2", "--workers", "0")
    assert rc == 0, err
    assert json.loads((out / "summary.json").read_text())["epochs"] == 2
    rc, _, err = run(capsys, "train", "--out", out)
    assert rc == 2 and "--resume" in err


def test_freeze_without_weights_is_refused(tmp_path, capsys):
    rc, _, err = run(capsys, "train", "tiny_test", "--data", "synthetic", "--out", tmp_path, "--freeze", "features")
    assert rc == 2 and "--weights" in err and err.count("\n") == 1


def test_scales_without_dense_is_refused(tiny_run, capsys):
    data, out = tiny_run
    rc, _, err = run(capsys, "eval", "tiny_test", "--weights", out / "best.safetensors", "--data", data,
                     "--scales", "256,384")
    assert rc == 2 and "--crop dense" in err


def test_bench_precision_auto_and_device_auto(monkeypatch, capsys):
    import convzoo.engine.bench as engine_bench
    seen = {}

    def fake_bench(model, **kw):
        seen.update(kw)
        raise UserError("stop here")
    monkeypatch.setattr(engine_bench, "bench", fake_bench)
    rc, _, err = run(capsys, "bench", "tiny_test", "--precision", "auto")
    assert rc == 2 and "stop here" in err and seen["precision"] is None   # auto = the default choice
    from convzoo.engine.distributed import resolve_device
    assert seen["device"] == str(resolve_device("auto"))
    with pytest.raises(SystemExit) as e:
        run(capsys, "bench", "tiny_test", "--precision", "int4")
    assert e.value.code == 2


# ---- issue 13: one meaning per flag --------------------------------------------------------------
def _subparsers():
    from convzoo.cli import build_parser
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return sub.choices


def test_flags_mean_one_thing_everywhere():
    from convzoo.commands._common import DEVICE_HELP, WORKERS_HELP
    for name, p in _subparsers().items():
        opts = {o: a for a in p._actions for o in a.option_strings}
        if "--device" in opts:
            assert opts["--device"].default in ("auto", None) and opts["--device"].help == DEVICE_HELP, name
        if "--workers" in opts:
            assert opts["--workers"].help.startswith(WORKERS_HELP), name
    for name in ("train", "eval", "features", "predict", "convert", "export", "pack", "chart", "bench", "list"):
        p = _subparsers()[name]
        assert "--json" in {o for a in p._actions for o in a.option_strings}, name


def test_top_k_canonical_topk_alias():
    p = _subparsers()["predict"]
    assert p.parse_args(["m", "x.png", "--weights", "w", "--top-k", "3"]).topk == 3
    assert p.parse_args(["m", "x.png", "--weights", "w", "--topk", "2"]).topk == 2


def test_convert_takes_the_model_positionally_and_as_option(tmp_path, capsys):
    import torch

    from convzoo.registry import create_model
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
