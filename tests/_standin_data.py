"""THROWAWAY stand-in for convzoo.data (branch `data`) until it lands in main. Delete then."""

import os
import sys
import types

import torch
from PIL import Image, ImageDraw
from torchvision import transforms as T

from convzoo.errors import UserError


class BadImage(Exception):
    def __init__(self, path, reason):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def load_image(path):
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, ValueError) as e:
        raise BadImage(path, str(e)) from None


COLORS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
          (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 190)]


class Synthetic(torch.utils.data.Dataset):
    classes = [f"class{i}" for i in range(10)]
    num_classes, native_size, label_set = 10, 32, "synthetic"

    def __init__(self, split, transform, seed):
        self.n = 5000 if split == "train" else 1000
        self.transform, self.seed = transform, seed * 7919 + (0 if split == "train" else 1)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        label = i % 10
        r = torch.randint(0, 256, (3,), generator=g)
        im = Image.new("RGB", (32, 32), tuple(int(v) // 3 for v in r))
        x, y, s = (int(v) for v in torch.randint(0, 16, (3,), generator=g))
        ImageDraw.Draw(im).rectangle([x, y, x + 8 + s // 2, y + 8 + s // 2], fill=COLORS[label])
        return (self.transform(im) if self.transform else im), label


class Folder(torch.utils.data.Dataset):
    native_size, label_set = None, "folder"

    def __init__(self, root, transform):
        if not os.path.isdir(root):
            raise UserError(f"no such folder {root}")
        self.classes = sorted(os.listdir(root))
        self.num_classes = len(self.classes)
        self.samples = [(os.path.join(root, c, f), i) for i, c in enumerate(self.classes)
                        for f in sorted(os.listdir(os.path.join(root, c)))]
        self.transform = transform

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        try:
            im = load_image(path)
        except BadImage:
            return None
        return (self.transform(im) if self.transform else im), label


def _kind_path(spec):
    if spec == "synthetic":
        return "synthetic", None
    if ":" in spec:
        kind, path = spec.split(":", 1)
    else:
        kind, path = "folder", spec
    if kind not in ("imagenet", "places365", "cifar10", "fashion-mnist", "folder") or not os.path.isdir(path):
        raise UserError(f"bad data spec {spec!r}")
    return kind, path


def default_splits(spec):
    kind, _ = _kind_path(spec)
    return ("train", "test") if kind in ("cifar10", "fashion-mnist") else ("train", "val")


def build_dataset(spec, split, transform=None, seed=0):
    kind, path = _kind_path(spec)
    if kind == "synthetic":
        return Synthetic(split, transform, seed)
    ds = Folder(os.path.join(path, split), transform)
    if kind == "cifar10":
        ds.native_size, ds.label_set = 32, "cifar10"
    return ds


def collate_skip_broken(batch):
    good = [b for b in batch if b is not None]
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), len(batch)
    return (torch.stack([b[0] for b in good]), torch.tensor([b[1] for b in good]), len(batch) - len(good))


def train_transform(preset, input_size, mean, std):
    norm = [T.ToTensor(), T.Normalize(mean, std)]
    if preset == "cifar":
        return T.Compose([T.RandomCrop(input_size, padding=4), T.RandomHorizontalFlip(), *norm])
    return T.Compose([T.RandomResizedCrop(input_size), T.RandomHorizontalFlip(), *norm])


def eval_transform(input_size, mean, std, resize_size=None, interpolation="bilinear", crop="center",
                   native_size=None):
    norm = T.Compose([T.ToTensor(), T.Normalize(mean, std)])
    native = native_size is not None and native_size <= 64 and input_size == native_size
    if crop == "ten":
        pre = [T.Pad(4)] if native else [T.Resize(resize_size or round(input_size / 0.875))]
        ten = T.TenCrop(input_size)
        return T.Compose([*pre, ten, T.Lambda(lambda cs: torch.stack([norm(c) for c in cs]))])
    if native:
        return norm
    return T.Compose([T.Resize(resize_size or round(input_size / 0.875)), T.CenterCrop(input_size), norm])


def eval_transform_from_spec(spec, crop="center", native_size=None):
    return eval_transform(spec.input_size, spec.mean, spec.std, spec.resize_size, spec.interpolation, crop,
                          native_size)


def load_labels(name):
    if os.path.isfile(name):
        return [l.strip() for l in open(name) if l.strip()]
    raise UserError(f"unknown labels {name!r}")


def install():
    try:
        import convzoo.data.datasets  # noqa: F401
        return  # the real data layer is here
    except ImportError:
        pass
    pkg = types.ModuleType("convzoo.data")
    pkg.__path__ = []
    mods = {"datasets": ["BadImage", "load_image", "default_splits", "build_dataset", "collate_skip_broken"],
            "transforms": ["train_transform", "eval_transform", "eval_transform_from_spec"],
            "labels": ["load_labels"]}
    sys.modules["convzoo.data"] = pkg
    for name, attrs in mods.items():
        m = types.ModuleType(f"convzoo.data.{name}")
        for a in attrs:
            setattr(m, a, globals()[a])
        sys.modules[f"convzoo.data.{name}"] = m
        setattr(pkg, name, m)
