"""`convzoo eval`: top-1/top-5 accuracy of a weights file on a split (center or ten-crop)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from ..errors import UserError
from ._common import (
    DATA_HELP,
    JSON_HELP,
    MODEL_HELP,
    SPLIT_HELP,
    WEIGHTS_HELP,
    add_inference_options,
    int_list,
    print_json,
)

HELP = "top-1/top-5 accuracy of a weights file on a split (center or ten-crop)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--weights", required=True, help=WEIGHTS_HELP)
    p.add_argument("--data", required=True, metavar="SPEC", help=DATA_HELP)
    p.add_argument("--split", default=None, metavar="NAME", help=SPLIT_HELP)
    p.add_argument(
        "--crop",
        choices=["center", "ten", "dense"],
        default="center",
        help="dense: VGG's fully-convolutional multi-scale evaluation (VGG, AlexNet)",
    )
    p.add_argument(
        "--scales", default=None, help="--crop dense: test scales Q, e.g. 256,384,512 (default: 256,384,512)"
    )
    p.add_argument(
        "--input-size",
        type=int,
        default=None,
        help="evaluate at this crop size (default: the weights' input size)",
    )
    p.add_argument(
        "--report",
        default=None,
        metavar="DIR",
        help="write per-class accuracy, confusion matrix (CSV, PNG), misclassified images (default: none)",
    )
    p.add_argument(
        "--misclassified",
        type=int,
        default=100,
        metavar="N",
        help="--report: list the N most confident mistakes in misclassified.csv (0: all; default 100)",
    )
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        metavar="N",
        help="evaluate a seeded random subset of N images (default: all)",
    )
    add_inference_options(p, batch_size=64, workers=None, compile=True)
    p.add_argument("--json", action="store_true", help=JSON_HELP)


def run(args: argparse.Namespace) -> None:
    if args.batch_size < 1 or (args.workers is not None and args.workers < 0):
        raise UserError("--batch-size must be >= 1 and --workers >= 0")
    if args.scales and args.crop != "dense":
        raise UserError(f"--scales applies to --crop dense only (this is --crop {args.crop})")
    from ..engine.distributed import cleanup, is_main

    scales = int_list(args.scales, "--scales") if args.scales else None
    r = evaluate_weights(
        args.model,
        args.weights,
        args.data,
        args.split,
        args.crop,
        args.batch_size,
        args.workers,
        args.device,
        args.precision,
        limit=args.limit,
        input_size=args.input_size,
        report=args.report,
        scales=scales,
        compile=args.compile,
        misclassified=args.misclassified,
        backend=args.backend,
        calibration=args.calibration,
    )
    report = is_main()  # under torchrun, rank 0 reports
    cleanup()
    if not report:
        return
    if args.json:
        return print_json(r)
    top5 = (
        f"top-5 {r['top5']:.2f}% (error {r['top5_error']:.2f}%)"
        if r["top5"] is not None
        else f"no top-5 ({r['num_classes']} classes)"
    )
    print(
        f"{r['model']} on {r['data']} ({r['split']}, {r['images']} images, {r['crop']} crop): "
        f"top-1 {r['top1']:.2f}% (error {r['top1_error']:.2f}%), {top5}"
        + (f", {r['skipped']} unreadable skipped" if r["skipped"] else "")
    )
    print("preprocessing: " + "; ".join(r["preprocessing"]["steps"][1:3]))
    if "train_top1" in r:
        print(
            f"training measured top-1 {r['train_top1']:.2f}% on this split with PyTorch; "
            f"{r['backend']} {r['precision']} gives {r['top1']:.2f}% ({r['top1'] - r['train_top1']:+.2f} "
            f"points; the runtimes differ in rounding: --backend torch reproduces training's figure)"
        )
    if args.report:
        print(
            f"report: {args.report}/per_class.csv, confusion.csv, confusion.png, misclassified.csv "
            f"({r['misclassified_rows']} of {r['misclassified']} mistakes, the most confident first"
            + ("; --misclassified 0 lists all" if r["misclassified_rows"] < r["misclassified"] else "")
            + ")"
        )


def evaluate_weights(
    model_name: str,
    weights: str,
    data_spec: str,
    split: str | None = None,
    crop: str = "center",
    batch_size: int = 64,
    workers: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    channels_last: bool | None = None,
    limit: int | None = None,
    input_size: int | None = None,
    report: str | None = None,
    scales: list[int] | None = None,
    compile: bool | None = None,
    misclassified: int = 100,
    backend: str = "auto",
    calibration: str | None = None,
) -> dict:
    """A weights file on a split, preprocessing from the weights' WeightSpec.

    `input_size` replaces the spec's crop size (resize = size / 0.875); `crop="dense"` is VGG's
    dense multi-scale evaluation over `scales` (inference/dense.py); `report` a folder for per-class
    accuracy, the confusion matrix and the most confidently misclassified images (inference/report.py).
    fp32/bf16 run the fast inference model (`accel.fast_inference`: BN folded, weights cast once,
    channels_last; torch.compile when `compile` is True, or None and the run repays it);
    `backend` onnxruntime/openvino run the exported graph instead (inference/runtime.py), int8
    calibrated on `calibration` (a folder or file) or on 128 images of the evaluated split; auto
    (`runtime.choose_backend`) the fastest for the job. Where the backend run is not PyTorch and
    the weights carry training's top-1 on this very split, `train_top1` gives it beside `top1`.
    `workers` None: `evaluate.auto_workers`, said on stderr.
    """
    from ..engine.accel import resolve_auto
    from ..engine.distributed import init_distributed
    from ..engine.loaders import check_limit
    from ..inference.runtime import check_calibration_path, resolve_backend
    from ..outputs import output_dir

    if crop not in ("center", "ten", "dense"):
        raise UserError(f"--crop must be center, ten or dense, got {crop!r}")
    check_limit(limit)
    if input_size is not None and (not isinstance(input_size, int) or input_size < 1):
        raise UserError(f"--input-size must be a positive integer, got {input_size!r}")
    from ..engine.loaders import check_input_memory, check_workers

    if input_size is not None:
        check_input_memory(batch_size, input_size, 10 if crop == "ten" else 1)
    if workers is not None:
        check_workers(workers)
    if report is not None:
        output_dir(report, "--report")  # before any work: read-only, a file, empty
    if backend not in ("torch", "auto") and crop == "dense":
        raise UserError("--crop dense slides the PyTorch classifier over the image: use --backend torch")
    world = init_distributed(device)  # under torchrun: each rank evaluates its share, sums all-reduced
    requested_precision = precision
    precision = resolve_backend(backend, precision, world.device)
    run_precision, run_channels_last = resolve_auto(precision, channels_last, world.device)
    if compile and backend not in ("torch", "auto"):
        raise UserError(f"--compile is torch.compile: it applies to --backend torch, not {backend}")
    if calibration is not None and precision != "int8":
        raise UserError("--calibration applies to --precision int8")
    calibration_files = check_calibration_path(calibration) if calibration is not None else None
    job = _Job(
        model_name,
        weights,
        data_spec,
        split,
        crop,
        batch_size,
        workers,
        run_precision,
        run_channels_last,
        limit,
        report,
        scales,
        compile,
        world,
        misclassified,
        backend,
        calibration_files,
    )
    job.precision_by_default = requested_precision in (None, "auto")
    job.load(input_size)
    r, fast = job.detailed() if crop == "dense" or report else job.streamed()
    classes = job.spec.num_classes
    trained = job.training_top1(limit, input_size)
    top5 = r["top5"] if classes > 5 else None  # top-5 of at most 5 classes is always 100 %
    return {
        "model": job.model_name,
        "weights": weights,
        "data": data_spec,
        "split": job.split,
        "crop": crop,
        "num_classes": classes,
        "top1": r["top1"],
        "top5": top5,
        "top1_error": 100.0 - r["top1"],
        "top5_error": None if top5 is None else 100.0 - top5,
        "loss": r["loss"],
        "images": r["images"],
        "skipped": r["skipped"],
        "precision": job.precision,
        "backend": backend,
        **(
            {"train_top1": trained} if trained is not None and fast.get("backend", backend) != "torch" else {}
        ),
        "input_size": job.spec.crop_size or job.spec.input_size,
        "preprocessing": _preprocessing(job, crop),
        **({"scales": job.scales} if crop == "dense" else {}),
        **(
            {
                "report": report,
                "misclassified": r["misclassified"],
                "misclassified_rows": r["misclassified_rows"],
            }
            if report
            else {}
        ),
        **fast,
    }


def _preprocessing(job, crop: str) -> dict:
    """What this evaluation fed the network, sizes filled in (interop/export.py `preprocessing`)."""
    from ..interop.export import preprocessing

    native = getattr(job.dataset, "native_size", None)
    return preprocessing(job.spec, crop=crop, native_size=native, scales=job.scales)


@dataclasses.dataclass
class _Job:
    """One evaluation: the settings, then the model, spec, split and dataset once loaded."""

    model_name: str
    weights: str
    data_spec: str
    split: str | None
    crop: str
    batch_size: int
    workers: int | None  # None: `evaluate.auto_workers`, resolved when the job's size is known
    precision: str
    channels_last: bool
    limit: int | None
    report: str | None
    scales: list[int] | None
    compile: bool | None
    world: Any  # engine.distributed.DistInfo
    misclassified: int = 100
    backend: str = "auto"
    calibration_files: list[str] | None = None  # --calibration's images (None: the split's own)
    model: Any = None
    spec: Any = None  # WeightSpec
    dataset: Any = None
    val_split: str | None = None  # the split training validated on (the source's)
    workers_note: str | None = None  # the automatic --workers choice, said once
    precision_by_default: bool = False  # --precision auto (the runtime may pick its own)

    def load(self, input_size: int | None) -> None:
        from ..data.source import source_from_record
        from ..factory import create_model

        self.model = create_model(self.model_name, weights=self.weights)
        self.model_name, self.spec = self.model.model_name, self.model.weight_spec
        if input_size is not None:
            if input_size < 1:
                raise UserError(f"--input-size must be positive, got {input_size}")
            self.spec = dataclasses.replace(
                self.spec, input_size=input_size, crop_size=input_size, resize_size=None
            )
        source = source_from_record(self.data_spec, self.spec.extra)  # the run's own val split
        self.split, self.val_split = self.split or source.val_split, source.val_split
        self.dataset = source.dataset(self.split)
        if self.dataset.num_classes != self.spec.num_classes:
            raise UserError(
                f"{self.data_spec} ({self.split}) has {self.dataset.num_classes} classes, the "
                f"weights {self.weights} predict {self.spec.num_classes}"
            )

    def training_top1(self, limit: int | None, input_size: int | None) -> float | None:
        """The top-1 training measured for these weights on this very evaluation (its validation
        split, all of it, center crop at the weights' size), from the weights' metadata; else None."""
        metrics = self.spec.metrics or {}
        same = (
            metrics.get("data") == self.data_spec
            and self.split == self.val_split
            and limit is None
            and input_size is None
            and self.crop == "center"
        )
        top1 = metrics.get("top1")
        return float(top1) if same and isinstance(top1, (int, float)) else None

    def resolve_workers(self, images: int | None) -> int:
        """--workers, or the automatic choice (said once, by the reporting process)."""
        from ..inference.evaluate import auto_workers

        if self.workers is None:
            self.workers, why = auto_workers(images, self.batch_size)
            # said with the model's choices, once the run is past its checks (errors stay one line)
            self.workers_note = (
                f"convzoo eval: {self.workers} data loader worker(s) ({why}; --workers N sets it)"
            )
        return self.workers

    def fast_model(self, model, num_batches: int | None, images: int | None = None):
        """The model the batches run through (inference/runtime.py's fast_model for the backend);
        `images`: forward passes of one image the job makes (ten-crop: ten per image)."""
        from ..engine.distributed import launched_by_torchrun
        from ..inference.runtime import fast_model

        built = fast_model(
            model,
            self.model_name,
            self.backend,
            self.precision,
            self.channels_last,
            self.world.device,
            self.spec.crop_size or self.spec.input_size,
            self.compile,
            num_batches,
            self.calibration,
            "convzoo eval",
            images=images,
            needs_torch="evaluation under torchrun" if launched_by_torchrun() else None,
            precision_by_default=self.precision_by_default,
        )
        if self.workers_note and self.world.is_main:
            print(self.workers_note, file=sys.stderr)
        return built

    def calibration(self):
        """int8's calibration images: --calibration's, else a seeded 128 of the evaluated split."""
        import hashlib

        import torch

        from ..data.transforms import eval_transform_from_spec
        from ..engine.loaders import Mapped, subset_indices
        from ..inference.runtime import CALIBRATION_IMAGES, calibration_from_files, calibration_from_items

        transform = eval_transform_from_spec(self.spec, crop="center", native_size=self.dataset.native_size)
        if self.calibration_files is not None:
            return calibration_from_files(self.calibration_files, transform, "--calibration")
        if isinstance(self.dataset, torch.utils.data.IterableDataset):
            raise UserError(
                "--precision int8 on a shards:DIR dataset needs --calibration DIR (a folder of images)"
            )
        indices = subset_indices(len(self.dataset), CALIBRATION_IMAGES, seed=0) or range(len(self.dataset))
        # up to as many other images of the split check int8's agreement with fp32
        rest = sorted(set(range(len(self.dataset))) - set(indices))
        others = [rest[i] for i in subset_indices(len(rest), CALIBRATION_IMAGES, seed=1) or range(len(rest))]
        items = Mapped(self.dataset, transform, indices)
        key = hashlib.sha256(f"{self.data_spec}\0{self.split}\0{len(self.dataset)}\0{list(indices)}".encode())
        source = f"the evaluated split ({self.split}; --calibration DIR takes them from elsewhere)"
        return calibration_from_items(
            items, len(items), source, key.hexdigest(), Mapped(self.dataset, transform, others)
        )

    def detailed(self) -> tuple[dict, dict]:
        """Per-image evaluation in one process: dense multi-scale and/or a report folder."""
        import torch

        from ..data.transforms import eval_transform_from_spec
        from ..engine.distributed import launched_by_torchrun
        from ..engine.loaders import make_loader, subset_indices
        from ..inference.dense import DenseHead, DenseTransform
        from ..inference.report import Positions, evaluate_detailed

        if isinstance(self.dataset, torch.utils.data.IterableDataset) or launched_by_torchrun():
            raise UserError(
                "--report and --crop dense read a folder-style dataset in one process "
                "(not shards:DIR, not under torchrun)"
            )
        dev, model, dense, run_precision = self.world.device, self.model, None, self.precision
        fast: dict = {}
        if self.crop == "dense":
            # DenseHead re-reads the model's avgpool/classifier/forward_features, which a folded
            # (traced) copy no longer has: dense evaluation keeps the plain model under autocast.
            model = model.to(dev)
            self.scales = self.scales or [256, 384, 512]
            dense = DenseHead(model).eval()
            transform = DenseTransform(
                self.scales,
                self.spec.mean,
                self.spec.std,
                self.spec.interpolation,
                min_size=self.spec.crop_size or self.spec.input_size,
                channel_order=self.spec.channel_order,
                pixel_scale=self.spec.pixel_scale,
            )
        else:
            transform = eval_transform_from_spec(
                self.spec, crop=self.crop, native_size=self.dataset.native_size
            )
        positions = Positions(self.dataset, transform, subset_indices(len(self.dataset), self.limit, 0))
        loader = make_loader(
            positions,
            1 if dense is not None else self.batch_size,
            self.resolve_workers(len(positions)),
            shuffle=False,
        )
        if dense is None:
            crops = 10 if self.crop == "ten" else 1
            model, run_precision, fast = self.fast_model(model, len(loader), len(positions) * crops)
        r = evaluate_detailed(
            model,
            positions,
            loader,
            dev,
            run_precision,
            list(self.dataset.classes),
            self.report,
            dense,
            self.misclassified,
        )
        return r, fast

    def streamed(self) -> tuple[dict, dict]:
        """Batches through a DataLoader (each torchrun rank its share); only counts are kept."""
        import torch

        from ..data.shards import ShardDataset
        from ..data.transforms import eval_transform_from_spec
        from ..engine.accel import FAST_INFERENCE_PRECISIONS
        from ..engine.distributed import EvalSampler, launched_by_torchrun
        from ..engine.loaders import Mapped, make_loader, subset_indices
        from ..inference.evaluate import evaluate

        dev, dataset = self.world.device, self.dataset
        transform = eval_transform_from_spec(self.spec, crop=self.crop, native_size=dataset.native_size)
        images: int | None = None
        if isinstance(dataset, ShardDataset):  # shards:DIR streams its own share
            dataset.take(self.limit)
            dataset.transform, dataset.batch_size = transform, self.batch_size
            loader = make_loader(dataset, self.batch_size, self.resolve_workers(None), shuffle=False)
        else:
            mapped = Mapped(dataset, transform, subset_indices(len(dataset), self.limit, 0))
            sampler = (
                EvalSampler(len(mapped), self.world.rank, self.world.world_size)
                if launched_by_torchrun()
                else None
            )
            images = len(mapped) if sampler is None else len(sampler)
            loader = make_loader(
                mapped, self.batch_size, self.resolve_workers(images), shuffle=False, sampler=sampler
            )
        try:
            num_batches = len(loader)
        except TypeError:  # a stream of unknown length: compile only when asked
            num_batches = None
        # Under torchrun each rank runs its own copy (no DDP wrapper: inference needs no gradient sync).
        crops = 10 if self.crop == "ten" else 1
        model, run_precision, fast = self.fast_model(
            self.model.to(dev), num_batches, None if images is None else images * crops
        )
        channels_last = self.channels_last
        if run_precision not in FAST_INFERENCE_PRECISIONS and channels_last:  # fp16: plain model
            model = model.to(memory_format=torch.channels_last)
        else:
            channels_last = False  # the inference model converts its input itself
        return evaluate(model, loader, dev, run_precision, channels_last, progress=self.world.is_main), fast
