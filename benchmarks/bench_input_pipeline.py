"""Input pipeline at ImageNet resolution: decode + random-resized-crop(224) + flip (+ the
batch as a normalised float tensor), images/s per core, on the 1,000 photos of
imagenet-samples.tar.

  plain    torchvision.datasets.ImageFolder (PIL decode) + RandomResizedCrop + RandomHorizontalFlip
           + ToTensor + Normalize, DataLoader(batch_size=32, num_workers=0)
  convzoo  convzoo.data.fast_decode.RandomResizedCropDecode (PIL draft-mode DCT-scaled decode
           when the crop allows it, else torchvision.io libjpeg-turbo decode + uint8
           antialiased resize), uint8 batches, normalize_batch once per batch

Both run in this one process on one thread (torch.set_num_threads(1), no workers), so
images/s is per core; passes alternate (plain, convzoo, plain, ...) and medians are kept.
Goal: convzoo >= 1.5x plain.

    CONVZOO_SHARED=/path/to/shared PYTHONPATH=src python benchmarks/bench_input_pipeline.py
"""

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from _common import MEAN, STD, sample_files, setup_threads, write_result


def image_folder(files):
    """ImageFolder wants class sub-folders: a tree of symlinks <wnid>/<file> in /tmp."""
    root = Path(tempfile.gettempdir()) / "convzoo-imagenet-folder"
    for f in files:
        link = root / Path(f).name.split("_")[0] / Path(f).name
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(f, link)
    return root


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=320, help="images per pass (of the 1,000)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    setup_threads(1)

    import torch
    import torchvision.transforms as T
    from torch.utils.data import DataLoader, Dataset, Subset
    from torchvision.datasets import ImageFolder

    from convzoo.data.fast_decode import RandomResizedCropDecode, normalize_batch

    files = sample_files()
    plain_ds = ImageFolder(
        str(image_folder(files)),
        T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)]),
    )

    class Fast(Dataset):
        def __init__(self, samples):
            self.samples, self.tf = samples, RandomResizedCropDecode(224)

        def __len__(self):
            return len(self.samples)

        def __getitem__(self, i):
            path, label = self.samples[i]
            return self.tf(path), label

    fast_ds = Fast(plain_ds.samples)
    torch.manual_seed(0)
    order = torch.randperm(len(files)).tolist()
    rates = {"plain": [], "convzoo": []}
    for r in range(args.rounds):
        idx = [order[(r * args.images + k) % len(order)] for k in range(args.images)]
        for name in rates:
            ds = Subset(plain_ds if name == "plain" else fast_ds, idx)
            t0 = time.perf_counter()
            for x, _ in DataLoader(ds, batch_size=args.batch_size, num_workers=0):
                if name == "convzoo":
                    x = normalize_batch(x, MEAN, STD)
                assert x.shape[1:] == (3, 224, 224) and x.dtype == torch.float32
            rates[name].append(args.images / (time.perf_counter() - t0))
    med = {k: statistics.median(v) for k, v in rates.items()}
    write_result(
        "input_pipeline",
        "data",
        "rrc224",
        {
            "settings": {
                "images_per_pass": args.images,
                "rounds": args.rounds,
                "threads": 1,
                "workers": 0,
                "batch_size": args.batch_size,
                "crop": 224,
            },
            "images_per_second_per_core": med,
            "speedup": med["convzoo"] / med["plain"],
            "runs": rates,
        },
    )


if __name__ == "__main__":
    main()
