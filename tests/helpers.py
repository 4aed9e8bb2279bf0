"""Helpers the test files share: running the CLI in-process, the one-line error check, models on the
meta device, weights with non-trivial BatchNorm statistics, a relative error, class-folder datasets
of real PNGs, a free TCP port."""

import json
import socket
from importlib import resources
from pathlib import Path

import torch
import torch.nn as nn

from convzoo.cli import main

# A few hundred real CIFAR-10 JPEGs shipped with the tests (see its README.md): every clone can
# check that training learns on real images, without ../shared.
CIFAR10_SMALL = Path(__file__).resolve().parent / "fixtures" / "cifar10-small"


def load_paper_numbers() -> dict:
    """The published figures the package ships (src/convzoo/data/reference/paper_numbers.json,
    each with its paper and table); read at collection time for parametrisation."""
    return json.loads(resources.files("convzoo.data").joinpath("reference", "paper_numbers.json").read_text())


def run(capsys, *argv):
    """`convzoo *argv` in this process -> (exit code, stdout, stderr); arguments may be paths."""
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line(e) -> bool:
    """An error message of one line (what a user sees instead of a traceback): an exception's
    message, or what a command wrote on stderr (a string: its final newline aside)."""
    text = e.strip() if isinstance(e, str) else str(e)
    return bool(text) and "\n" not in text


def meta_model(name: str, **kwargs) -> nn.Module:
    """`create_model(name, **kwargs)` on the meta device: shapes and counts, no memory."""
    from convzoo import create_model

    with torch.device("meta"):
        return create_model(name, **kwargs)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (for a process group or a server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def subparsers() -> dict:
    """`convzoo`'s commands: name -> its argparse parser."""
    import argparse

    from convzoo.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and non-trivial BatchNorm statistics (a fresh BN is the identity in eval,
    which would hide a swapped running_mean/running_var)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.num_batches_tracked.fill_(7)
    return model


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| over max |b|: one number for "same logits up to rounding"."""
    return ((a - b).abs().max() / b.abs().max()).item()


def synthetic_folder(root, per_class: int = 4, classes=("a", "b")):
    """`root`/{train,val}/<class>/<i>.png from the built-in synthetic images (the same images in
    both splits: tests here check plumbing, not generalisation)."""
    from convzoo.data.datasets import build_dataset

    src = build_dataset("synthetic", "val")
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                src[i][0].save(root / split / c / f"{i}.png")
    return root


def synthetic_images(n: int) -> list:
    """`n` distinct PIL images from the built-in synthetic data set (32 px)."""
    from convzoo.data.datasets import build_dataset

    ds = build_dataset("synthetic", "val", size=max(n, 8))
    return [ds[i][0] for i in range(n)]


def image_folders(root: Path, counts: dict[str, int], splits=("",)) -> Path:
    """root/<split>/<class>/<i>.png, `counts[class]` distinct images per class (the same ones in
    every split); split '' is a single class-folder tree, root/<class>/<i>.png."""
    imgs = iter(synthetic_images(sum(counts.values())))
    per_class = {name: [next(imgs) for _ in range(n)] for name, n in counts.items()}
    for split in splits:
        for name, images in per_class.items():
            d = root / split / name if split else root / name
            d.mkdir(parents=True, exist_ok=True)
            for i, img in enumerate(images):
                img.save(d / f"{i}.png")
    return root
