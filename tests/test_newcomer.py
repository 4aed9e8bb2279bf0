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
