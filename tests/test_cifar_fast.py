"""The `cifar_fast` pieces: in-memory data (same pixels and labels as the file pipeline, cached),
batched crop + flip (checked against its definition: a crop of the zero-padded image at offsets
0..2*padding, mirrored or not), the one-cycle `linear` schedule (values worked out by hand), the
time budget (a fake clock: it stops the loader and stretches the schedule), the recipe, and a
1-epoch in-memory run that must learn."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import tiny_models
from convzoo.data.datasets import build_dataset
from convzoo.data.memory import InMemoryLoader, crop_flip, decode_split, progressive_size, random_crop_flip
from convzoo.data.transforms import eval_transform
from convzoo.errors import UserError
from convzoo.recipes import resolve
from convzoo.training import budget as budget_mod
from convzoo.training.budget import BudgetLoader, BudgetSchedule, TimeBudget
from convzoo.training.optim import LRSchedule

MEAN, STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]


@pytest.fixture(autouse=True)
def one_thread(monkeypatch, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("CONVZOO_CACHE", str(tmp_path / "cache"))
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_cifar(tmp_path) -> Path:
    """cifar10-layout folder of random 32x32 PNGs (lossless, so pixels compare exactly) + one broken file."""
    rng = np.random.default_rng(0)
    root = tmp_path / "cifar10"
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("airplane", "cat", "truck"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d / f"{i:04d}.png")
    (root / "train" / "cat" / "9999.png").write_bytes(b"not a png")
    return root


def test_in_memory_matches_folder_dataset(tiny_cifar):
    ds = build_dataset(f"cifar10:{tiny_cifar}", "train")
    with pytest.warns(UserWarning, match="9999.png"):
        images, labels, skipped = decode_split(ds, 32)
    assert skipped == 1 and images.shape == (9, 3, 32, 32) and images.dtype == torch.uint8
    tf = eval_transform(32, MEAN, STD, native_size=32)
    expected = [(tf(item[0]), item[1]) for item in (ds[i] for i in range(len(ds))) if item is not None]
    loader = InMemoryLoader(images, labels, 4, MEAN, STD, train=False)
    got = [(x, y) for xb, yb, _ in loader for x, y in zip(xb, yb.tolist())]
    assert [y for _, y in got] == [y for _, y in expected]
    assert all(torch.allclose(a, b, atol=1e-6) for (a, _), (b, _) in zip(got, expected))
    # second call: from the cache, identical; a changed file is decoded again
    again = decode_split(ds, 32)
    assert torch.equal(again[0], images) and torch.equal(again[1], labels)
    assert len(list((Path(tiny_cifar).parent / "cache").iterdir())) == 1
    first = Path(ds.samples[0][0])
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(first)
    with pytest.warns(UserWarning):
        changed = decode_split(build_dataset(f"cifar10:{tiny_cifar}", "train"), 32)
    assert changed[0][0].sum() == 0 and len(list((Path(tiny_cifar).parent / "cache").iterdir())) == 2


def test_test_flip_pairs_each_image_with_its_mirror():
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    loader = InMemoryLoader(images, torch.arange(5), 4, MEAN, STD, train=False, test_flip=True)
    x, y, _ = next(iter(loader))
    assert x.shape == (4, 2, 3, 32, 32) and torch.equal(x[:, 1], x[:, 0].flip(3))


def _crop_by_definition(img, padding, dy, dx, flip):
    c, h, w = img.shape
    padded = torch.zeros(c, h + 2 * padding, w + 2 * padding, dtype=img.dtype)
    padded[:, padding : padding + h, padding : padding + w] = img
    crop = padded[:, dy : dy + h, dx : dx + w]
    return crop.flip(2) if flip else crop


def test_crop_flip_matches_definition():
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    offsets = torch.tensor([[0, 0], [4, 4], [8, 8], [0, 8], [3, 1], [8, 0]])
    flips = torch.tensor([False, True, False, True, True, False])
    out = crop_flip(images, 4, offsets, flips)
    for b in range(6):
        assert torch.equal(out[b], _crop_by_definition(images[b], 4, *offsets[b].tolist(), bool(flips[b])))


def test_crop_flip_reflect_fill_mirrors_the_border():
    """fill=reflect: a crop moved by (dy, dx) - padding shows the image mirrored at its edge
    (without repeating the edge pixel), written out here index by index."""
    images = torch.randint(0, 256, (3, 3, 6, 6), dtype=torch.uint8)
    offsets = torch.tensor([[0, 0], [4, 1], [2, 4]])
    flips = torch.tensor([False, True, False])
    out = crop_flip(images, 2, offsets, flips, fill="reflect")

    def reflect(i: int, n: int) -> int:
        return -i if i < 0 else 2 * (n - 1) - i if i >= n else i

    for b in range(3):
        dy, dx = offsets[b].tolist()
        want = torch.empty(3, 6, 6, dtype=torch.uint8)
        for y in range(6):
            for x in range(6):
                want[:, y, x] = images[b, :, reflect(y + dy - 2, 6), reflect(x + dx - 2, 6)]
        assert torch.equal(out[b], want.flip(2) if flips[b] else want)
    assert not torch.equal(out, crop_flip(images, 2, offsets, flips))  # zero fill differs


def test_random_crop_flip_offsets_within_padding():
    """Each output is one of the (2p+1)^2 x 2 crops of its padded image; over 64 images both
    flips and the extreme offsets occur."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(1, 256, (64, 3, 6, 6), dtype=torch.uint8)  # no zeros: padding is visible
    out = random_crop_flip(images, 2, g)
    seen = set()
    for b in range(64):
        hits = [
            (dy, dx, f)
            for dy in range(5)
            for dx in range(5)
            for f in (False, True)
            if torch.equal(out[b], _crop_by_definition(images[b], 2, dy, dx, f))
        ]
        assert hits, f"image {b} is not a crop within the padding"
        seen.update(hits)
    assert {f for _, _, f in seen} == {False, True}
    assert {dy for dy, _, _ in seen} >= {0, 4} and {dx for _, dx, _ in seen} >= {0, 4}


def test_linear_schedule_is_the_one_cycle_triangle():
    """base lr 1, 10 epochs, warmup 2 from 0.1: 0.1 at 0, 0.55 at 1, 1 at 2, 0.5 at 6, 0 at 10."""
    schedule = dataclasses.replace(
        resolve("resnet20_cifar", "cifar_fast").schedule, warmup_epochs=2, warmup_factor=0.1, min_lr=0.0
    )
    s = LRSchedule(None, schedule, 1.0, 10)
    assert [round(s.lr_at(e), 6) for e in (0, 1, 2, 6, 10)] == [0.1, 0.55, 1.0, 0.5, 0.0]


def test_cifar_fast_recipe_parses():
    cfg = resolve("resnet20_cifar", "cifar_fast")
    assert cfg.data.in_memory and cfg.data.test_flip and cfg.data.augment == "cifar"
    assert cfg.time_limit_minutes == 10 and cfg.schedule.name == "linear"
    assert resolve("resnet20_cifar", "resnet_cifar").time_limit_minutes is None


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_time_budget_stops_loader_and_stretches_schedule():
    """Budget 30 s, each batch takes 10 s: batches start at 0, 10, 20 s -> 3 of 10 are trained;
    halfway through the budget a 10-epoch schedule is read at epoch 5."""
    clock = FakeClock()
    budget = TimeBudget(0.5, clock=clock)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    lrs = LRSchedule(
        opt, dataclasses.replace(resolve("resnet20_cifar", "cifar_fast").schedule, warmup_epochs=0), 1.0, 10
    )
    sched = BudgetSchedule(lrs, budget, 10)
    loader = BudgetLoader(list(range(10)), budget)
    seen, lr_mid = [], None
    for batch in loader:
        seen.append(batch)
        if clock.t == 10.0:
            clock.t = 15.0
            lr_mid = sched.step(0.1)  # real epoch 0.1, but half the budget is spent
            clock.t = 10.0
        clock.t += 10.0
    assert seen == [0, 1, 2] and budget.exhausted and len(loader) == 10
    assert lr_mid == pytest.approx(lrs.lr_at(5.0)) and lr_mid == pytest.approx(0.5)
    assert list(loader) == []  # spent: the next epoch trains nothing


def _small_cfg(data_spec="synthetic", sets=(), **over):
    return resolve(
        "tiny_test",
        "cifar_fast",
        {"epochs": 3, "batch_size": 16, "precision": "fp32", "channels_last": False, **over},
        [
            "data.max_train_images=512",
            "data.max_val_images=200",
            "optim.lr=0.2",
            "data.mean=[0.5,0.5,0.5]",
            "data.std=[0.25,0.25,0.25]",
            "schedule.warmup_epochs=0",
            *sets,
        ],
        data_spec=data_spec,
    )


def test_time_limit_ends_fit(tmp_path, monkeypatch):
    """A budget clock that advances 1 s per reading, limit 3 s: readings at 0 (start), 1 (check:
    train the first batch), 2 (its lr), 3 (check: spent) -> 1 batch, and 1 of 3 epochs runs."""
    from convzoo.training.train import fit

    ticks = iter(range(10**6))
    monkeypatch.setattr(budget_mod, "CLOCK", lambda: float(next(ticks)))
    with tiny_models.registered():
        s = fit(_small_cfg(time_limit_minutes=0.05), str(tmp_path))
    assert s["epochs"] == 1 and s["epochs_planned"] == 3 and s["train_images"] == 512


def test_resumed_budget_counts_the_epochs_done():
    class Data:
        train = [1, 2, 3]

    cfg = _small_cfg(time_limit_minutes=0.5, epochs=10)
    budget, _ = budget_mod.time_budget(cfg, Data, None, [{"train_seconds": 20.0}, {"train_seconds": 10.0}])
    assert budget.exhausted and list(Data.train) == []
    budget, _ = budget_mod.time_budget(cfg, Data, None, [{"train_seconds": 20.0}])
    assert not budget.exhausted
    unlimited = _small_cfg(sets=["time_limit_minutes=null"])
    assert budget_mod.time_budget(unlimited, Data, "s", []) == (None, "s")
    with pytest.raises(
        UserError, match="^time_limit_minutes must be null or a number of minutes > 0, got -1$"
    ):
        _small_cfg(time_limit_minutes=-1)


def test_one_epoch_in_memory_learns(tmp_path):
    """3 classes told apart by their dominant colour channel (plus noise), 64 train images each:
    1 epoch through the in-memory path must beat chance (33%) by far."""
    from convzoo.training.train import fit

    rng = np.random.default_rng(1)
    root = tmp_path / "cifar10"
    for split, n in (("train", 64), ("test", 20)):
        for c, cls in enumerate(("airplane", "cat", "truck")):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                a = rng.integers(0, 120, (32, 32, 3))
                a[..., c] += 120
                Image.fromarray(a.astype(np.uint8)).save(root / split / cls / f"{i:04d}.png")
    with tiny_models.registered():
        s = fit(_small_cfg(f"cifar10:{root}", epochs=1, time_limit_minutes=None), str(tmp_path / "run"))
    assert s["train_images"] == 192 and s["val_images"] == 60
    assert s["top1"] > 60.0, s
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["epochs"] == 1


def test_progressive_size_grows_in_steps_of_4_to_full():
    """[16, 0.5] on 32 px: the size is 16 + 16 * progress / 0.5 rounded down to a multiple of 4,
    32 from half-way on (hand-computed)."""
    sizes = [progressive_size(32, 16, 0.5, p) for p in (0.0, 0.1, 0.124, 0.125, 0.3, 0.49, 0.5, 0.9, 1.0)]
    assert sizes == [16, 16, 16, 20, 24, 28, 32, 32, 32]
    assert progressive_size(32, 24, 1.0, 0.99) == 28 and progressive_size(32, 24, 1.0, 1.0) == 32
    assert progressive_size(28, 32, 0.6, 0.0) == 28  # images smaller than min_size: full size


def test_progressive_loader_trains_small_and_validates_full():
    """Training batches are the same crops, antialiased down to the size for that progress; the
    validation loader never resizes."""
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    plain = InMemoryLoader(images, torch.arange(6), 6, MEAN, STD, train=True)
    small = InMemoryLoader(images, torch.arange(6), 6, MEAN, STD, train=True, progressive=[16, 0.5])
    assert small.set_progress(0.0) == 16 and plain.set_progress(0.0) == 32
    for loader in (plain, small):
        loader.generator.manual_seed(3)
    (full, y, _), (x, y2, _) = next(iter(plain)), next(iter(small))
    assert x.shape == (6, 3, 16, 16) and torch.equal(y, y2)
    expected = torch.nn.functional.interpolate(full, size=(16, 16), mode="bilinear", antialias=True)
    assert torch.allclose(x, expected, atol=1e-6)
    # antialiased: each output pixel is close to the mean of its 2x2 block, not one sample of it
    assert (x - torch.nn.functional.avg_pool2d(full, 2)).abs().mean() < 0.5 * (
        x - full[..., ::2, ::2]
    ).abs().mean()
    assert small.set_progress(0.6) == 32 and next(iter(small))[0].shape == (6, 3, 32, 32)
    val = InMemoryLoader(images, torch.arange(6), 6, MEAN, STD, train=False, progressive=[16, 0.5])
    assert val.set_progress(0.0) == 32 and next(iter(val))[0].shape == (6, 3, 32, 32)


def test_progressive_setting_is_checked():
    assert _small_cfg(sets=["data.progressive=[24, 0.5]"]).data.progressive == (24, 0.5)
    for bad in ("[4, 0.5]", "[24, 0]", "[24, 1.5]", "[24]", "'24'", "[24.5, 0.5]"):
        with pytest.raises(UserError, match="^data.progressive must be"):
            _small_cfg(sets=[f"data.progressive={bad}"])


def test_fit_with_progressive_logs_the_sizes(tmp_path, capsys):
    """2 epochs with [16, 0.5]: epoch 1 (progress 0) trains at 16 px, epoch 2 (0.5) at full size."""
    from convzoo.training.train import fit

    rng = np.random.default_rng(2)
    root = tmp_path / "cifar10"
    for split in ("train", "test"):
        for cls in ("airplane", "cat"):
            (root / split / cls).mkdir(parents=True)
            for i in range(8):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                    root / split / cls / f"{i}.png"
                )
    with tiny_models.registered():
        cfg = _small_cfg(f"cifar10:{root}", epochs=2, time_limit_minutes=None)
        data = dataclasses.replace(
            cfg.data, progressive=[16, 0.5], max_train_images=None, max_val_images=None
        )
        s = fit(dataclasses.replace(cfg, data=data), str(tmp_path / "run"))
    err = capsys.readouterr().err
    assert "epoch 1: training at 16px" in err and "epoch 2: training at" not in err
    assert s["epochs"] == 2 and s["train_images"] == 16


def test_eval_views_shift_and_mirror():
    """test_shift=1: views are the image, it moved 1 px down-right and 1 px up-left (reflect
    padding), then the mirror of each - checked pixel by pixel against hand-written indexing."""
    from convzoo.data.memory import eval_views

    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).view(2, 3, 5, 5)
    v = eval_views(x, flip=True, shift=1)
    assert len(v) == 6 and torch.equal(v[0], x) and all(torch.equal(v[3 + i], v[i].flip(3)) for i in range(3))
    down_right, up_left = v[1], v[2]
    assert torch.equal(down_right[..., 1:, 1:], x[..., :-1, :-1])  # content moved by +1, +1
    assert torch.equal(down_right[..., 0, 1:], x[..., 1, :-1])  # reflected row: row 1 of x
    assert torch.equal(up_left[..., :-1, :-1], x[..., 1:, 1:])
    assert torch.equal(up_left[..., -1, :-1], x[..., -2, 1:])
    assert len(eval_views(x, flip=False, shift=0)) == 1 and len(eval_views(x, flip=True, shift=0)) == 2
    loader = InMemoryLoader(
        torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8),
        torch.arange(3),
        3,
        MEAN,
        STD,
        train=False,
        test_flip=True,
        test_shift=2,
    )
    assert next(iter(loader))[0].shape == (3, 6, 3, 8, 8)
    with pytest.raises(UserError, match="^data.test_shift must be an integer 0..4, got 9$"):
        _small_cfg(sets=["data.test_shift=9"])


def test_alternate_flips_mirror_every_image_once_per_two_epochs():
    """flip=alternate: epoch 1 mirrors exactly the images epoch 0 did not, epoch 2 repeats epoch 0;
    about half are mirrored; the coins follow the seed. Checked on the loader's batches with no
    crop padding, where each training image is the stored image or its mirror."""
    from convzoo.data.memory import alternate_flips

    e0, e1, e2 = (alternate_flips(1000, seed=3, epoch=e) for e in (0, 1, 2))
    assert torch.equal(e1, ~e0) and torch.equal(e2, e0) and 400 < int(e0.sum()) < 600
    assert not torch.equal(alternate_flips(1000, seed=4, epoch=0), e0)
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    loader = InMemoryLoader(
        images, torch.arange(16), 5, [0.0] * 3, [1 / 255] * 3, train=True, padding=0, flip="alternate", seed=3
    )
    mirrored = {}
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        for x, y, _ in loader:
            for img, i in zip(x, y.tolist()):
                same, mirror = (
                    torch.allclose(img, v.float(), atol=1e-3) for v in (images[i], images[i].flip(2))
                )
                assert same != mirror
                mirrored.setdefault(i, []).append(mirror)
    assert sorted(mirrored) == list(range(16)) and all(sorted(v) == [False, True] for v in mirrored.values())
    assert [mirrored[i][0] for i in range(16)] == alternate_flips(16, seed=3, epoch=0).tolist()


def test_crop_padding_and_flip_settings():
    """crop_padding sets the crop's padding (null: 4 at 32 px, 2 at 16 px); bad values are one-line errors."""
    from convzoo.data.memory import in_memory_loaders

    for bad in ("crop_padding=-1", "crop_padding=1.5", "flip=sometimes", "crop_fill=wrap"):
        with pytest.raises(UserError, match="^data.crop_padding|^data.flip|^data.crop_fill"):
            _small_cfg(sets=[f"data.{bad}"])
    data = _small_cfg().data
    with pytest.raises(UserError, match=r"^data.crop_padding must be an integer 0..16 \(pixels\)"):
        in_memory_loaders(None, None, dataclasses.replace(data, crop_padding=17), 4, 0, 32, None, None)
    ds = _ArrayDataset(torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8).numpy())
    for padding, size, expected in ((None, 32, 4), (None, 16, 2), (2, 32, 2), (0, 32, 0)):
        settings = dataclasses.replace(data, crop_padding=padding)
        train, _ = in_memory_loaders(ds, ds, settings, 4, 0, size, None, None)
        assert train.padding == expected


class _ArrayDataset:
    """Images as PIL without files (nothing to cache), labels 0..n-1: what decode_split reads."""

    transform = None

    def __init__(self, arrays):
        self.arrays = arrays

    def __len__(self):
        return len(self.arrays)

    def __getitem__(self, i):
        return Image.fromarray(self.arrays[i]), i
