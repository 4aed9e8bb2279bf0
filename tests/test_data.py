"""Datasets, SPECs, the robust image loader, the restricted CIFAR unpickler.

Every layout is generated under tmp_path by the test itself (tiny images whose colour encodes
the expected class), so labels can be checked against what the test wrote. Expected pixel
values of conversions are derived by hand in comments (e.g. 16-bit v -> round(v * 255 / 65535)).
"""

import gzip
import io
import os
import pickle
import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from convzoo.data import images as images_mod
from convzoo.data.datasets import (
    BadImage,
    BrokenImageWarning,
    DataSpec,
    build_dataset,
    collate_skip_broken,
    default_splits,
    load_image,
    resolve_spec,
)
from convzoo.data.labels import imagenet1k_wnids, load_labels, places365_indoor_outdoor
from convzoo.data.transforms import eval_transform
from convzoo.errors import UserError
from helpers import CIFAR10_SMALL

ZERO, ONE = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]


def write_png(path, colour=(255, 0, 0), size=(8, 6)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return str(path)


# ---------------------------------------------------------------------------------- synthetic


def test_synthetic_sizes_classes_and_determinism():
    train, val = build_dataset("synthetic", "train"), build_dataset("synthetic", "val")
    assert (len(train), len(val)) == (5000, 1000)
    assert train.num_classes == 10 and len(train.classes) == 10 and train.native_size == 32
    assert train.label_set == "synthetic"
    assert np.bincount(train.targets).tolist() == [500] * 10  # balanced
    img, label = train[3]
    assert img.size == (32, 32) and img.mode == "RGB" and label == train.targets[3]
    again = build_dataset("synthetic", "train", seed=0)
    other = build_dataset("synthetic", "train", seed=1)
    for i in (0, 1, 4999):
        assert np.array_equal(np.asarray(train[i][0]), np.asarray(again[i][0]))
    assert train.targets == again.targets and train.targets != other.targets
    assert not np.array_equal(np.asarray(train[0][0]), np.asarray(other[0][0]))
    assert not np.array_equal(np.asarray(train[0][0]), np.asarray(val[0][0]))  # splits differ
    assert len(build_dataset("synthetic", "val", size=37)) == 37


def test_synthetic_images_vary_and_shape_carries_the_class():
    """Within a class the pixels vary (position/colour/texture); the mask of 'foreground'
    differs between classes on average - a weak but real learnability check."""
    ds = build_dataset("synthetic", "val", size=200)
    arr = np.stack([np.asarray(ds[i][0], dtype=np.float32) for i in range(200)])
    t = np.array(ds.targets)
    assert arr[t == 0].std(0).mean() > 20  # not one image repeated
    # mean image per class: classes are distinguishable on average (not all equal)
    means = np.stack([arr[t == c].mean(0) for c in range(10)])
    assert np.abs(means[:, None] - means[None]).mean() > 1


# ---------------------------------------------------------------------------------- SPECs


def test_resolve_spec(tmp_path):
    assert resolve_spec("synthetic") == DataSpec("synthetic", None)
    assert resolve_spec(str(tmp_path)) == DataSpec("folder", str(tmp_path))
    assert resolve_spec(f"imagenet:{tmp_path}") == DataSpec("imagenet", str(tmp_path))
    assert default_splits("synthetic") == ("train", "val")
    assert default_splits(f"cifar10:{tmp_path}") == ("train", "test")
    assert default_splits(f"places365:{tmp_path}") == ("train", "val")


@pytest.mark.parametrize(
    "spec",
    [
        "nonsense",
        "mnist:/tmp",
        "imagenet:",
        "imagenet:/no/such/dir",
        "synthetic:/tmp",
        "/no/such/folder",
        "folder:/no/such/dir",
    ],
)
def test_bad_specs_are_user_errors(spec):
    with pytest.raises(UserError):
        resolve_spec(spec)


def test_bad_splits_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="train, val"):
        build_dataset("synthetic", "test")
    write_png(tmp_path / "train" / "a" / "1.png")
    with pytest.raises(UserError):
        build_dataset(str(tmp_path), "val")  # no val/ folder
    with pytest.raises(UserError, match="train, test"):
        build_dataset(f"cifar10:{tmp_path}", "val")


# ---------------------------------------------------------------------------------- folders


def test_folder_layout(tmp_path):
    for split, n in (("train", 3), ("val", 2)):
        for c, name in enumerate(["cat", "ant", "bee"]):
            if split == "val" and name == "bee":
                continue  # a class missing from val
            for i in range(n):
                write_png(tmp_path / split / name / f"{i}.png", COLOURS[c])
    (tmp_path / "train" / "ant" / "notes.txt").write_text("not an image")
    write_png(tmp_path / "train" / "ant" / "deeper" / "z.png", COLOURS[1])  # nested files count
    ds = build_dataset(str(tmp_path), "train", transform=eval_transform(8, ZERO, ONE, 8, native_size=8))
    assert ds.classes == ["ant", "bee", "cat"] and ds.num_classes == 3 and ds.native_size is None
    assert [os.path.relpath(p, tmp_path) for p, _ in ds.samples][:4] == [
        "train/ant/0.png",
        "train/ant/1.png",
        "train/ant/2.png",
        "train/ant/deeper/z.png",
    ]
    assert len(ds) == 10 and ds.targets == [0] * 4 + [1] * 3 + [2] * 3
    x, y = ds[0]
    assert x.shape == (3, 8, 8) and y == 0 and torch.allclose(x[:, 0, 0], torch.tensor([0.0, 1.0, 0.0]))
    val = build_dataset(f"folder:{tmp_path}", "val")
    assert val.classes == ds.classes and sorted(set(val.targets)) == [0, 2]  # labels agree across splits


def test_imagenet_class_folders_and_flat_val_with_devkit_ground_truth(tmp_path):
    wnids = imagenet1k_wnids()
    w0, w1 = wnids[0], wnids[1]  # sorted-wnid index 0 and 1
    write_png(tmp_path / "train" / w0 / f"{w0}_1.JPEG", COLOURS[0])
    write_png(tmp_path / "train" / w1 / f"{w1}_1.JPEG", COLOURS[1])
    for i in range(1, 4):
        write_png(tmp_path / "val" / f"ILSVRC2012_val_{i:08d}.JPEG")
    train = build_dataset(f"imagenet:{tmp_path}", "train")
    assert (
        train.targets == [0, 1]
        and train.num_classes == 1000
        and train.classes[0] == load_labels("imagenet1k")[0]
    )
    with pytest.raises(UserError, match="ground truth"):
        build_dataset(f"imagenet:{tmp_path}", "val")
    devkit = tmp_path / "ILSVRC2012_devkit_t12" / "data"
    devkit.mkdir(parents=True)
    # devkit ids are NOT the sorted order: here id 1 -> w1, id 2 -> w0
    (devkit / "ILSVRC2012_validation_ground_truth.txt").write_text("2\n1\n1\n")
    with pytest.raises(UserError, match="meta.mat"):
        build_dataset(f"imagenet:{tmp_path}", "val")
    (devkit / "map_clsloc.txt").write_text(f"{w1} 1 goldfish\n{w0} 2 tench\n")
    val = build_dataset(f"imagenet:{tmp_path}", "val")
    assert val.targets == [0, 1, 1] and val.label_set == "imagenet1k"


def test_imagenet_flat_val_with_kaggle_solution_and_unknown_wnid(tmp_path):
    w = imagenet1k_wnids()
    for i in (1, 2):
        write_png(tmp_path / "val" / f"ILSVRC2012_val_{i:08d}.JPEG")
    (tmp_path / "LOC_val_solution.csv").write_text(
        f"ImageId,PredictionString\nILSVRC2012_val_00000002,{w[5]} 1 2 3 4\n"
        f"ILSVRC2012_val_00000001,{w[999]} 1 2 3 4\n"
    )
    assert build_dataset(f"imagenet:{tmp_path}", "val").targets == [999, 5]
    write_png(tmp_path / "train" / "n00000000" / "x.JPEG")
    with pytest.raises(UserError, match="n00000000"):
        build_dataset(f"imagenet:{tmp_path}", "train")


def test_places365_lists(tmp_path):
    names = load_labels("places365")
    # official list format: "/a/airfield/00000001.jpg 0" under data_256/,
    # "Places365_val_00000001.jpg 2" under val_256/
    write_png(tmp_path / "data_256" / "a" / "airfield" / "00000001.jpg")
    write_png(tmp_path / "data_256" / "a" / "apartment_building" / "outdoor" / "00000001.jpg")
    (tmp_path / "places365_train_standard.txt").write_text(
        "/a/airfield/00000001.jpg 0\n/a/apartment_building/outdoor/00000001.jpg 8\n"
    )
    train = build_dataset(f"places365:{tmp_path}", "train")
    assert train.targets == [0, 8] and names[8] == "apartment_building/outdoor" and train.num_classes == 365
    # easy-format list without labels: the label comes from the category folder in the path
    write_png(tmp_path / "val" / "apartment_building-outdoor" / "1.jpg")
    write_png(tmp_path / "val" / "airfield" / "2.jpg")
    (tmp_path / "val.txt").write_text("val/apartment_building-outdoor/1.jpg\nval/airfield/2.jpg\n")
    assert build_dataset(f"places365:{tmp_path}", "val").targets == [8, 0]
    io_flags = places365_indoor_outdoor()
    assert (
        len(io_flags) == 365 and io_flags[0] == 2 and io_flags[1] == 1
    )  # airfield outdoor, airplane_cabin indoor


def test_cifar10_class_folders(tmp_path):
    for c, name in enumerate(["airplane", "cat"]):
        write_png(tmp_path / "cifar10" / "test" / name / "0000.png", COLOURS[c], (32, 32))
    ds = build_dataset(f"cifar10:{tmp_path}", "test")
    assert ds.targets == [0, 3] and ds.classes == load_labels("cifar10") and ds.native_size == 32
    write_png(tmp_path / "cifar10" / "test" / "zebra" / "0.png")
    with pytest.raises(UserError, match="zebra"):
        build_dataset(f"cifar10:{tmp_path}", "test")


def _write_batch(path, labels, protocol=4):
    n = len(labels)
    data = np.zeros((n, 3072), np.uint8)
    data[:, :1024] = 255  # red plane full: every pixel (255, 0, 0) ...
    data[:, 2048 + 33] = 7  # ... except blue 7 at row 1, column 1 (1024 * 2 + 32 * 1 + 1)
    with open(path, "wb") as f:
        pickle.dump(
            {
                b"batch_label": b"x",
                b"labels": labels,
                b"data": data,
                b"filenames": [b"f%d.png" % i for i in range(n)],
            },
            f,
            protocol=protocol,
        )


def test_cifar10_python_batches_restricted_unpickler(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    for i in range(1, 6):
        _write_batch(d / f"data_batch_{i}", [i, 9])
    _write_batch(d / "test_batch", [3, 4, 5], protocol=5)
    train = build_dataset(f"cifar10:{tmp_path}", "train")
    assert len(train) == 10 and train.targets[:4] == [1, 9, 2, 9] and train.native_size == 32
    img, _ = train[0]
    assert (
        img.size == (32, 32) and img.getpixel((0, 0)) == (255, 0, 0) and img.getpixel((1, 1)) == (255, 0, 7)
    )
    assert build_dataset(f"cifar10:{tmp_path}", "test").targets == [3, 4, 5]


def test_cifar_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    with open(d / "test_batch", "wb") as f:
        pickle.dump({b"labels": [1], b"data": Evil()}, f)
    with pytest.raises(UserError, match="refusing"):
        build_dataset(f"cifar10:{tmp_path}", "test")
    assert not marker.exists()
    _write_batch(d / "test_batch", [1], protocol=2)  # protocol 2 bytes need _codecs.encode: refused too
    with pytest.raises(UserError, match="_codecs"):
        build_dataset(f"cifar10:{tmp_path}", "test")


def _idx(array: np.ndarray) -> bytes:
    return (
        bytes([0, 0, 8, array.ndim]) + b"".join(struct.pack(">I", s) for s in array.shape) + array.tobytes()
    )


def test_fashion_mnist_idx_files(tmp_path):
    images = np.arange(3 * 28 * 28, dtype=np.int64).reshape(3, 28, 28).astype(np.uint8)
    labels = np.array([9, 0, 3], np.uint8)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(images)))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx(labels))  # raw works too
    ds = build_dataset(f"fashion-mnist:{tmp_path}", "train")
    assert ds.targets == [9, 0, 3] and ds.native_size == 28 and ds.classes[9] == "Ankle boot"
    img, _ = ds[1]
    v = int(images[1, 2, 5])
    assert img.mode == "RGB" and img.size == (28, 28) and img.getpixel((5, 2)) == (v, v, v)
    with pytest.raises(UserError, match="t10k"):
        build_dataset(f"fashion-mnist:{tmp_path}", "test")
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + struct.pack(">III", 5, 28, 28))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx(labels))
    with pytest.raises(UserError, match="idx header"):
        build_dataset(f"fashion-mnist:{tmp_path}", "test")


def test_fashion_mnist_installed():
    root = "/usr/share/datasets/fashion-mnist"
    if not os.path.isdir(root):
        pytest.skip(f"{root} not installed (Debian package dataset-fashion-mnist)")
    test = build_dataset("fashion-mnist:", "test")  # the default path
    assert len(test) == 10000 and np.bincount(test.targets).tolist() == [1000] * 10
    img, _ = test[0]
    assert img.size == (28, 28) and img.mode == "RGB"


def test_real_cifar10_jpegs():
    """The real CIFAR-10 JPEGs of tests/fixtures/cifar10-small through the `cifar10:` kind: class
    folders in the label file's order, 10 test images each, decoded at the native 32 px."""
    ds = build_dataset(
        f"cifar10:{CIFAR10_SMALL}", "test", transform=eval_transform(32, ZERO, ONE, native_size=32)
    )
    assert ds.classes[:2] == ["airplane", "automobile"] and ds.targets == [
        c for c in range(10) for _ in range(10)
    ]
    x, _ = ds[0]
    assert x.shape == (3, 32, 32) and 0 <= x.min() and x.max() <= 1 and x.std() > 0


# ----------------------------------------------------------------------------- robust images


def _jpeg_bytes(img, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", **kw)
    return buf.getvalue()


def test_broken_files_raise_bad_image(tmp_path):
    good = _jpeg_bytes(Image.new("RGB", (64, 64), (0, 128, 255)), quality=95)
    cases = {
        "truncated.jpg": good[: len(good) // 2],
        "empty.png": b"",
        "random.jpg": np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes(),
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(BadImage) as e:
            load_image(tmp_path / name)
        assert name in str(e.value) and isinstance(e.value, UserError)
    with pytest.raises(BadImage, match="not found"):
        load_image(tmp_path / "missing.png")


def _convert(tmp_path, img, name, **save):
    path = tmp_path / name
    img.save(path, **save)
    return load_image(path)


def test_mode_conversions(tmp_path):
    assert images_mod.ALPHA_BACKGROUND == (255, 255, 255)  # documented: alpha over white
    # grayscale
    assert _convert(tmp_path, Image.new("L", (4, 4), 77), "g.png").getpixel((0, 0)) == (77, 77, 77)
    # CMYK (TIFF, lossless): no ink = white, full cyan = (0, 255, 255), full black = (0, 0, 0)
    cmyk = Image.new("CMYK", (3, 1))
    cmyk.putdata([(0, 0, 0, 0), (255, 0, 0, 0), (0, 0, 0, 255)])
    out = _convert(tmp_path, cmyk, "c.tif")
    assert out.mode == "RGB" and [out.getpixel((i, 0)) for i in range(3)] == [
        (255, 255, 255),
        (0, 255, 255),
        (0, 0, 0),
    ]
    # CMYK JPEG (lossy): no ink stays near white
    assert all(
        v > 245
        for v in _convert(tmp_path, Image.new("CMYK", (16, 16), (0, 0, 0, 0)), "c.jpg").getpixel((8, 8))
    )
    # RGBA: transparent -> background; opaque -> itself; half: 10*128/255 + 255*127/255 = 132.0
    rgba = Image.new("RGBA", (3, 1))
    rgba.putdata([(10, 20, 30, 0), (10, 20, 30, 255), (10, 10, 10, 128)])
    out = _convert(tmp_path, rgba, "a.png")
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((1, 0)) == (10, 20, 30)
    assert all(abs(v - 132) <= 1 for v in out.getpixel((2, 0)))
    # grayscale + alpha
    la = Image.new("LA", (2, 1))
    la.putdata([(100, 0), (100, 255)])
    out = _convert(tmp_path, la, "la.png")
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((1, 0)) == (100, 100, 100)
    # palette with a transparent index
    p = Image.new("P", (2, 1))
    p.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    p.putdata([0, 1])
    out = _convert(tmp_path, p, "p.png", transparency=0)
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((1, 0)) == (0, 255, 0)
    # palette without transparency keeps its colours
    out = _convert(tmp_path, p, "p2.png")
    assert out.getpixel((0, 0)) == (255, 0, 0)


def test_16bit_png_is_scaled_not_saturated(tmp_path):
    # round(v * 255 / 65535): 65535 -> 255, 32768 -> 127.502 -> 128, 257 -> 1, 0 -> 0
    a = np.array([[65535, 32768, 257, 0]], np.uint16)
    out = _convert(tmp_path, Image.fromarray(a), "16.png")
    assert [out.getpixel((i, 0)) for i in range(4)] == [(255,) * 3, (128,) * 3, (1,) * 3, (0,) * 3]
    with pytest.raises(BadImage, match="float"):
        _convert(tmp_path, Image.fromarray(np.ones((2, 2), np.float32)), "f.tif")


def test_exif_rotated_jpeg_is_upright(tmp_path):
    stored = Image.new("RGB", (40, 20), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 20, 20))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation 6: display rotated 90 deg clockwise
    out = _convert(tmp_path, stored, "r.jpg", exif=exif, quality=95)
    # rotating clockwise puts the left half on top: 20 wide, 40 high, red above blue
    assert out.size == (20, 40)
    top, bottom = out.getpixel((10, 5)), out.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"\x00" * 8) + chunk(b"IEND", b"")


def test_decompression_bomb_refused_from_header(tmp_path, monkeypatch):
    # 12000 x 10000 = 1.2e8 pixels > PIL's 89.5M limit (PIL alone would only warn below 2x)
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(12000, 10000))
    with pytest.raises(BadImage, match="decompression-bomb limit") as e:
        load_image(path)
    assert "bomb.png" in str(e.value)
    # far above 2x the limit: PIL refuses in open(); still a BadImage
    path.write_bytes(_png_header_only(100000, 100000))
    with pytest.raises(BadImage, match="decompression bomb"):
        load_image(path)
    # a real small image over a lowered limit is refused too, before load()
    small = write_png(tmp_path / "big.png", size=(40, 30))
    monkeypatch.setattr(images_mod, "MAX_PIXELS", 1000)
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded a refused image"))
    with pytest.raises(BadImage, match="limit of 1000"):
        load_image(small)


def test_jpeg_draft_mode(tmp_path):
    path = tmp_path / "large.jpg"
    path.write_bytes(_jpeg_bytes(Image.new("RGB", (1600, 1200), (200, 100, 50))))
    assert load_image(path).size == (1600, 1200)
    # min(1600 // 200, 1200 // 200) = 6 -> largest power of two <= 6 is 4 -> 400 x 300
    assert load_image(path, draft_size=200).size == (400, 300)
    assert load_image(path, draft_size=1000).size == (1600, 1200)  # never below what is needed


def test_broken_items_skipped_with_warning_and_counted(tmp_path):
    for i in range(3):
        write_png(tmp_path / "train" / "a" / f"{i}.png", COLOURS[0])
    (tmp_path / "train" / "a" / "3.png").write_bytes(b"garbage")
    (tmp_path / "train" / "a" / "4.jpg").write_bytes(b"")
    ds = build_dataset(str(tmp_path), "train", transform=eval_transform(8, ZERO, ONE, 8, native_size=8))
    with pytest.warns(BrokenImageWarning, match="3.png"):
        assert ds[3] is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ds[3] is None  # warned once per file only
    with pytest.warns(BrokenImageWarning):
        loader = torch.utils.data.DataLoader(ds, batch_size=5, collate_fn=collate_skip_broken)
        ((x, y, skipped),) = list(loader)
    assert x.shape == (3, 3, 8, 8) and y.tolist() == [0, 0, 0] and skipped == 2
    empty = collate_skip_broken([None, None])
    assert empty[0].numel() == 0 and empty[1].numel() == 0 and empty[2] == 2


def test_broken_items_do_not_kill_a_worker(tmp_path):
    write_png(tmp_path / "train" / "a" / "0.png")
    (tmp_path / "train" / "a" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    ds = build_dataset(str(tmp_path), "train", transform=eval_transform(8, ZERO, ONE, 8, native_size=8))
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1, collate_fn=collate_skip_broken)
    ((x, y, skipped),) = list(loader)
    assert x.shape == (1, 3, 8, 8) and skipped == 1


# ------------------------------------------------------------------ ImageNet devkit meta.mat

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


@pytest.mark.parametrize("name", ["meta_compressed.mat", "meta_plain.mat"])
def test_imagenet_devkit_meta_mat(tmp_path, name):
    """tests/fixtures/meta_*.mat were written by scipy.io.savemat 1.17.1 (an independent MAT-5
    writer; compressed and plain) in the devkit's layout: a struct array `synsets` with
    ILSVRC2012_ID 1 -> wnid index 1 (goldfish), 2 -> index 0 (tench), 3 -> index 2, and a parent
    synset with id 1001 (not a class)."""
    import shutil

    from convzoo.data.matfile import read_ilsvrc_meta

    w = imagenet1k_wnids()
    assert read_ilsvrc_meta(os.path.join(FIXTURES, name)) == {1: w[1], 2: w[0], 3: w[2]}
    for i in range(1, 5):
        write_png(tmp_path / "val" / f"ILSVRC2012_val_{i:08d}.JPEG")
    devkit = tmp_path / "ILSVRC2012_devkit_t12" / "data"
    devkit.mkdir(parents=True)
    shutil.copy(os.path.join(FIXTURES, name), devkit / "meta.mat")
    (devkit / "ILSVRC2012_validation_ground_truth.txt").write_text("1\n2\n3\n2\n")
    assert build_dataset(f"imagenet:{tmp_path}", "val").targets == [1, 0, 2, 0]
    (devkit / "meta.mat").write_bytes(
        b"MATLAB 5.0 MAT-file" + b" " * 105 + b"\x00\x01IM" + b"\x0f\x00\x00\x00\xff\x00\x00\x00junk"
    )
    with pytest.raises(UserError, match="meta.mat"):
        build_dataset(f"imagenet:{tmp_path}", "val")


def test_scanning_opens_no_image(tmp_path, monkeypatch):
    for c in ("a", "b"):
        for i in range(3):
            write_png(tmp_path / "train" / c / f"{i}.png")
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("scanning opened an image"))
    assert len(build_dataset(str(tmp_path), "train")) == 6


def test_thin_sliver_refused_from_header(tmp_path):
    """A 20000 x 2 PNG (under 200 bytes) would become 2,560,000 x 256 px in the resize before the
    centre crop (10 GB); every reader refuses it from the header, and a normal panorama passes."""
    from PIL import Image

    from convzoo.data.images import BadImage, load_image

    path = tmp_path / "thin.png"
    Image.new("RGB", (20000, 2), (90, 140, 200)).save(path)
    assert path.stat().st_size < 1000
    with pytest.raises(BadImage, match="aspect ratio above 20:1"):
        load_image(path)
    Image.new("RGB", (1000, 100)).save(tmp_path / "panorama.png")
    assert load_image(tmp_path / "panorama.png").size == (1000, 100)


def test_predict_skips_a_thin_sliver(tmp_path, capsys):
    """`predict` reports the sliver in one line and classifies the other image."""
    from PIL import Image

    from convzoo.factory import create_model
    from convzoo.inference.predict import PredictJob, predict
    from convzoo.weights import WeightSpec, save_weights

    weights = str(tmp_path / "w.safetensors")
    save_weights(
        weights,
        create_model("resnet20_cifar", num_classes=10),
        WeightSpec(model="resnet20_cifar", num_classes=10, input_size=32),
    )
    Image.new("RGB", (20000, 2)).save(tmp_path / "thin.png")
    Image.new("RGB", (40, 40)).save(tmp_path / "ok.png")
    results = predict(
        PredictJob(
            "resnet20_cifar",
            weights,
            (str(tmp_path / "thin.png"), str(tmp_path / "ok.png")),
            device="cpu",
            precision="fp32",
        )
    )
    assert "aspect ratio" in results[0]["error"] and len(results[1]["predictions"]) == 5


def test_folders_and_predict_take_the_same_image_names(tmp_path):
    """One list of image names: a dataset folder's walk and predict's folder expansion take the
    same files, and each of those formats decodes to RGB."""
    from convzoo.data.folders import image_files
    from convzoo.data.images import IMAGE_EXTENSIONS, expand_paths, load_image

    folder = tmp_path / "photos"
    folder.mkdir()
    for ext in IMAGE_EXTENSIONS:
        kind = "1" if ext == ".pbm" else "L" if ext == ".pgm" else "RGB"
        fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".ppm": "PPM", ".pgm": "PPM", ".pbm": "PPM"}
        Image.new(kind, (12, 10)).save(folder / f"x{ext}", format=fmt.get(ext))
    (folder / "notes.txt").write_text("not an image")
    walked = image_files(str(folder))
    assert sorted(walked) == expand_paths([str(folder)])
    assert len(walked) == len(IMAGE_EXTENSIONS) and ".pbm" in IMAGE_EXTENSIONS
    assert all(load_image(p).mode == "RGB" and load_image(p).size == (12, 10) for p in walked)
