"""The pictures a user reads: a CAM drawn over the original photo, a confusion matrix with its
numbers in the cells, and the user's own run on the accuracy-vs-cost chart."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from convzoo.weights import WeightSpec


def _photo(w: int = 120, h: int = 90) -> Image.Image:
    """A grey photo with a white square in its top-left corner, outside a 32-px model's crop."""
    a = np.full((h, w, 3), 128, dtype=np.uint8)
    a[:10, :10] = 255
    return Image.fromarray(a)


def test_crop_box_is_the_region_the_network_sees():
    from convzoo.analysis.cam import crop_box

    # shorter side 90 -> 37 (x 37/90), centre 32: 32 * 90/37 = 77.8 photo pixels on each side
    left, top, right, bottom = crop_box(120, 90, 37, 32)
    assert right - left == pytest.approx(32 * 90 / 37) == bottom - top
    assert left == pytest.approx((120 - 32 * 90 / 37) / 2) and top == pytest.approx((90 - 32 * 90 / 37) / 2)
    assert crop_box(40, 30, 40, 40, "squash") == (0, 0, 40, 30)  # squash: the whole photo


def test_cam_is_drawn_over_the_whole_photo_with_a_transparent_map(tmp_path):
    from convzoo.analysis.cam import save_photo_overlay

    spec = WeightSpec(model="resnet20_cifar", num_classes=3, input_size=32, resize_size=37)
    cam = torch.zeros(32, 32)
    cam[20:, 20:] = 1.0  # evidence in the crop's bottom-right corner only
    path = tmp_path / "cam.png"
    save_photo_overlay(_photo(), cam, spec, str(path))
    img = np.asarray(Image.open(path).convert("RGB")).astype(int)
    h, w = img.shape[:2]
    assert (w, h) == (299, 224)  # the photo's 4:3, its short side scaled up to 224: not the 32-px crop
    scale = 224 / 90
    # outside the crop: the photo, dimmed, no colour (its white corner still white-ish grey)
    corner = img[round(3 * scale), round(3 * scale)]
    assert corner.max() - corner.min() <= 2 and 120 < corner[0] < 255
    # inside the crop where the map is 0: the photo itself (the map is transparent there)
    cx, cy = round(w / 2 - 25 * scale / 2), round(h / 2 - 25 * scale / 2)
    assert np.abs(img[cy, cx] - 128).max() <= 2
    # where the evidence is: coloured, photo still mixed in (not an opaque colour map)
    hot = img[round(h / 2 + 30 * scale / 2), round(w / 2 + 30 * scale / 2)]
    assert hot.max() - hot.min() > 60 and hot.max() < 250


def test_confusion_png_has_counts_in_cells_and_readable_labels(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    from convzoo.inference.report import plot_confusion

    texts, ticks = [], []
    real_text, real_xticks = Axes.text, Axes.set_xticks
    monkeypatch.setattr(
        Axes, "text", lambda self, x, y, s, **kw: texts.append(s) or real_text(self, x, y, s, **kw)
    )
    monkeypatch.setattr(
        Axes,
        "set_xticks",
        lambda self, t, labels=None, **kw: ticks.append(kw) or real_xticks(self, t, labels, **kw),
    )
    path = tmp_path / "confusion.png"
    plot_confusion(torch.tensor([[40, 5, 5], [3, 45, 2], [10, 8, 32]]), ["cat", "dog", "fox"], str(path))
    assert texts == [
        f"{n}\n{p}"
        for n, p in zip(
            [40, 5, 5, 3, 45, 2, 10, 8, 32], ["80%", "10%", "10%", "6%", "90%", "4%", "20%", "16%", "64%"]
        )
    ]
    assert ticks[0]["fontsize"] >= 12
    assert Image.open(path).size[0] >= 600


def test_chart_places_a_run_beside_the_papers(tmp_path, capsys):
    from convzoo.analysis.chart import plot_accuracy_vs_macs, run_point
    from convzoo.analysis.profile import profile
    from convzoo.cli import main
    from convzoo.factory import create_model

    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(
        json.dumps(
            {
                "model": "resnet20_cifar",
                "data": "photos",
                "top1": 80.0,
                "best_top1": 83.3,
                "top5": None,
                "num_classes": 3,
                "input_size": 32,
            }
        )
    )
    point = run_point(str(run))
    with torch.device("meta"):
        want = profile(create_model("resnet20_cifar", num_classes=3), 32)
    assert (point.macs, point.params, point.accuracy, point.num_classes) == (want.macs, want.params, 83.3, 3)
    out = tmp_path / "chart.png"
    plot_accuracy_vs_macs([], str(out), runs=[point])  # the papers' points are tested in test_classic
    assert Image.open(out).size == (1100, 700)
    # refused in one line before the papers' models are profiled
    assert main(["chart", "--run", str(run), "--metric", "top5", "--out", str(tmp_path / "c.png")]) == 2
    assert "no top-5 (3 classes)" in capsys.readouterr().err
    assert main(["chart", "--run", str(tmp_path), "--out", str(tmp_path / "c.png")]) == 2
    assert "no summary.json" in capsys.readouterr().err
    assert main(["chart", "--kind", "depth", "--run", str(run), "--out", str(tmp_path / "d.png")]) == 2
    assert "use it with --kind cost" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "summary.json").write_text(
        json.dumps({"model": "resnet20_cifar", "best_top1": 50.0, "input_size": "big"})
    )
    assert main(["chart", "--run", str(bad), "--out", str(tmp_path / "b.png")]) == 2
    assert "bad input_size or num_classes" in capsys.readouterr().err
