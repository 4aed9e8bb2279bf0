"""A weights file evaluated on a data split: what `convzoo eval` runs.

`EvalJob` says what to evaluate and how (checked when it is built); `evaluate_weights(job)`
loads the model with its WeightSpec, reads the split, runs it through the fast inference model
of the chosen backend and returns the result document `eval --json` prints. The arithmetic
(top-k over a loader, ten-crop averaging) is evaluate.py's; VGG's dense multi-scale evaluation
is dense.py's; per-image reports are report.py's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..data.shards import ShardDataset
from ..data.source import source_from_record
from ..data.transforms import describe_preprocessing, eval_transform_from_spec
from ..engine.accel import FAST_INFERENCE_PRECISIONS, resolve_auto
from ..engine.distributed import DistInfo, EvalSampler, init_distributed, launched_by_torchrun
from ..engine.loaders import (
    Mapped,
    check_input_memory,
    check_limit,
    check_workers,
    make_loader,
    subset_indices,
)
from ..errors import UserError
from ..factory import create_model
from ..outputs import output_dir
from ..weights import WeightSpec
from .dense import DenseHead, DenseTransform
from .evaluate import auto_workers, evaluate
from .report import MISCLASSIFIED_ROWS, Positions, evaluate_detailed
from .runtime import (
    CALIBRATION_IMAGES,
    Calibration,
    calibration_from_files,
    calibration_from_items,
    check_calibration_path,
    fast_model,
    resolve_backend,
)

CROPS = ("center", "ten", "dense")
DENSE_SCALES = (256, 384, 512)  # VGG's test scales Q (Simonyan & Zisserman 2014, Sec. 4.2)


@dataclass(frozen=True)
class EvalJob:
    """One evaluation's settings, as `convzoo eval` takes them; their values are checked here
    (one-line UserErrors), what depends on the machine in `evaluate_weights`, before any work.

    `input_size` replaces the WeightSpec's crop size (resize = size / 0.875); `crop` "dense" is
    VGG's dense multi-scale evaluation over `scales` (default DENSE_SCALES); `report` a folder for
    per-class accuracy, the confusion matrix and the `misclassified` most confident mistakes (0:
    all); `backend` onnxruntime/openvino run the exported graph (runtime.py), int8 calibrated on
    `calibration` (a folder or file) or on 128 images of the split; `workers` None:
    `evaluate.auto_workers`, said on stderr; `compile` None: torch.compile where the run repays it."""

    model: str
    weights: str
    data: str
    split: str | None = None  # None: the dataset's validation split (the run's own, if recorded)
    crop: str = "center"
    batch_size: int = 64
    workers: int | None = None
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool | None = None  # None: with reduced precision (accel.resolve_auto)
    limit: int | None = None  # a seeded random subset of this many images
    input_size: int | None = None
    report: str | None = None
    scales: tuple[int, ...] | None = None
    compile: bool | None = None
    misclassified: int = MISCLASSIFIED_ROWS
    backend: str = "auto"
    calibration: str | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1 or (self.workers is not None and self.workers < 0):
            raise UserError("--batch-size must be >= 1 and --workers >= 0")
        if self.scales is not None and self.crop != "dense":
            raise UserError(f"--scales applies to --crop dense only (this is --crop {self.crop})")
        if self.crop not in CROPS:
            raise UserError(f"--crop must be center, ten or dense, got {self.crop!r}")
        check_limit(self.limit)
        size = self.input_size
        if size is not None and (not isinstance(size, int) or size < 1):
            raise UserError(f"--input-size must be a positive integer, got {size!r}")
        if self.misclassified < 0:
            raise UserError(f"--misclassified must be 0 (all) or more, got {self.misclassified}")
        if self.backend not in ("torch", "auto") and self.crop == "dense":
            raise UserError("--crop dense slides the PyTorch classifier over the image: use --backend torch")

    @property
    def crops(self) -> int:
        """Forward passes per image."""
        return 10 if self.crop == "ten" else 1


def evaluate_weights(job: EvalJob) -> dict:
    """`job`'s weights on its split, preprocessing from the weights' WeightSpec: the result
    document of `eval --json` (model, top1, top5, images, crop, preprocessing, ...).

    fp32/bf16 run the fast inference model (`accel.fast_inference`: BN folded, weights cast once,
    channels_last; torch.compile when asked, or when the run repays it); `backend` auto
    (`runtime.choose_backend`) picks the fastest for the job. Where the backend that ran is not
    PyTorch and the weights carry training's top-1 on this very split, `train_top1` gives it
    beside `top1`. Under torchrun each rank evaluates its share and the sums are all-reduced."""
    if job.input_size is not None:
        check_input_memory(job.batch_size, job.input_size, job.crops)
    if job.workers is not None:
        check_workers(job.workers)
    if job.report is not None:
        output_dir(job.report, "--report")  # before any work: read-only, a file, empty
    world = init_distributed(job.device)
    precision = resolve_backend(job.backend, job.precision, world.device)
    run_precision, channels_last = resolve_auto(precision, job.channels_last, world.device)
    if job.compile and job.backend not in ("torch", "auto"):
        raise UserError(f"--compile is torch.compile: it applies to --backend torch, not {job.backend}")
    if job.calibration is not None and precision != "int8":
        raise UserError("--calibration applies to --precision int8")
    files = check_calibration_path(job.calibration) if job.calibration is not None else None
    run = EvalRun(job, world, run_precision, channels_last, files)
    r, fast = run.detailed() if job.crop == "dense" or job.report else run.streamed()
    return run.result(r, fast)


class EvalRun:
    """One evaluation under way: the job, the settings resolved for this machine, and the
    model, WeightSpec and dataset, loaded when it is made."""

    def __init__(
        self,
        job: EvalJob,
        world: DistInfo,
        precision: str,
        channels_last: bool,
        calibration_files: list[str] | None,
    ):
        self.job, self.world = job, world
        self.precision, self.channels_last = precision, channels_last
        self.calibration_files = calibration_files  # --calibration's images (None: the split's own)
        self.workers = job.workers  # None until `resolve_workers` knows the job's size
        self.workers_note: str | None = None  # the automatic --workers choice, said once
        self.scales = list(job.scales or DENSE_SCALES) if job.crop == "dense" else None
        self.model = create_model(job.model, weights=job.weights)
        self.model_name: str = str(self.model.model_name)
        spec: WeightSpec = self.model.weight_spec  # type: ignore[assignment]  # set by create_model
        if job.input_size is not None:
            size = job.input_size
            spec = dataclasses.replace(spec, input_size=size, crop_size=size, resize_size=None)
        self.spec = spec
        source = source_from_record(job.data, spec.extra)  # the run's own val split
        self.split, self.val_split = job.split or source.val_split, source.val_split
        self.dataset = source.dataset(self.split)
        if self.dataset.num_classes != spec.num_classes:
            raise UserError(
                f"{job.data} ({self.split}) has {self.dataset.num_classes} classes, the "
                f"weights {job.weights} predict {spec.num_classes}"
            )

    def result(self, r: dict, fast: dict) -> dict:
        """The result document from the counts `r` and the fast model's facts `fast`."""
        job, classes = self.job, self.spec.num_classes
        trained = self.training_top1()
        top5 = r["top5"] if classes > 5 else None  # top-5 of at most 5 classes is always 100 %
        native = getattr(self.dataset, "native_size", None)
        return {
            "model": self.model_name,
            "weights": job.weights,
            "data": job.data,
            "split": self.split,
            "crop": job.crop,
            "num_classes": classes,
            "top1": r["top1"],
            "top5": top5,
            "top1_error": 100.0 - r["top1"],
            "top5_error": None if top5 is None else 100.0 - top5,
            "loss": r["loss"],
            "images": r["images"],
            "skipped": r["skipped"],
            "precision": self.precision,
            "backend": job.backend,
            **(
                {"train_top1": trained}
                if trained is not None and fast.get("backend", job.backend) != "torch"
                else {}
            ),
            "input_size": self.spec.crop_size or self.spec.input_size,
            # what this evaluation fed the network, sizes filled in
            "preprocessing": describe_preprocessing(
                self.spec, crop=job.crop, native_size=native, scales=self.scales
            ),
            **({"scales": self.scales} if job.crop == "dense" else {}),
            **(
                {
                    "report": job.report,
                    "misclassified": r["misclassified"],
                    "misclassified_rows": r["misclassified_rows"],
                }
                if job.report
                else {}
            ),
            **fast,
        }

    def training_top1(self) -> float | None:
        """The top-1 training measured for these weights on this very evaluation (its validation
        split, all of it, center crop at the weights' size), from the weights' metadata; else None."""
        job, metrics = self.job, self.spec.metrics or {}
        same = (
            metrics.get("data") == job.data
            and self.split == self.val_split
            and job.limit is None
            and job.input_size is None
            and job.crop == "center"
        )
        top1 = metrics.get("top1")
        return float(top1) if same and isinstance(top1, (int, float)) else None

    def resolve_workers(self, images: int | None) -> int:
        """--workers, or the automatic choice (said once, by the reporting process)."""
        if self.workers is None:
            self.workers, why = auto_workers(images, self.job.batch_size)
            # said with the model's choices, once the run is past its checks (errors stay one line)
            self.workers_note = (
                f"convzoo eval: {self.workers} data loader worker(s) ({why}; --workers N sets it)"
            )
        return self.workers

    def fast_model(self, model: nn.Module, num_batches: int | None, images: int | None = None):
        """The model the batches run through (runtime.py's fast_model for the backend);
        `images`: forward passes of one image the job makes (ten-crop: ten per image)."""
        built = fast_model(
            model,
            self.model_name,
            self.job.backend,
            self.precision,
            self.channels_last,
            self.world.device,
            self.spec.crop_size or self.spec.input_size,
            self.job.compile,
            num_batches,
            self.calibration,
            "convzoo eval",
            images=images,
            needs_torch="evaluation under torchrun" if launched_by_torchrun() else None,
            precision_by_default=self.job.precision in (None, "auto"),  # the runtime may pick its own
        )
        if self.workers_note and self.world.is_main:
            print(self.workers_note, file=sys.stderr)
        return built

    def calibration(self) -> Calibration:
        """int8's calibration images: --calibration's, else a seeded 128 of the evaluated split."""
        dataset = self.dataset
        transform = eval_transform_from_spec(self.spec, crop="center", native_size=dataset.native_size)
        if self.calibration_files is not None:
            return calibration_from_files(self.calibration_files, transform, "--calibration")
        if isinstance(dataset, torch.utils.data.IterableDataset):
            raise UserError(
                "--precision int8 on a shards:DIR dataset needs --calibration DIR (a folder of images)"
            )
        indices = subset_indices(len(dataset), CALIBRATION_IMAGES, seed=0) or range(len(dataset))
        # up to as many other images of the split check int8's agreement with fp32
        rest = sorted(set(range(len(dataset))) - set(indices))
        others = [rest[i] for i in subset_indices(len(rest), CALIBRATION_IMAGES, seed=1) or range(len(rest))]
        items = Mapped(dataset, transform, indices)
        key = hashlib.sha256(f"{self.job.data}\0{self.split}\0{len(dataset)}\0{list(indices)}".encode())
        source = f"the evaluated split ({self.split}; --calibration DIR takes them from elsewhere)"
        return calibration_from_items(
            items, len(items), source, key.hexdigest(), Mapped(dataset, transform, others)
        )

    def detailed(self) -> tuple[dict, dict]:
        """Per-image evaluation in one process: dense multi-scale and/or a report folder."""
        job, spec = self.job, self.spec
        if isinstance(self.dataset, torch.utils.data.IterableDataset) or launched_by_torchrun():
            raise UserError(
                "--report and --crop dense read a folder-style dataset in one process "
                "(not shards:DIR, not under torchrun)"
            )
        dev, model, dense, run_precision = self.world.device, self.model, None, self.precision
        fast: dict = {}
        if self.scales is not None:  # --crop dense
            # DenseHead re-reads the model's avgpool/classifier/forward_features, which a folded
            # (traced) copy no longer has: dense evaluation keeps the plain model under autocast.
            model = model.to(dev)
            dense = DenseHead(model).eval()
            transform = DenseTransform(
                self.scales,
                spec.mean,
                spec.std,
                spec.interpolation,
                min_size=spec.crop_size or spec.input_size,
                channel_order=spec.channel_order,
                pixel_scale=spec.pixel_scale,
            )
        else:
            transform = eval_transform_from_spec(spec, crop=job.crop, native_size=self.dataset.native_size)
        positions = Positions(self.dataset, transform, subset_indices(len(self.dataset), job.limit, 0))
        batch_size = 1 if dense is not None else job.batch_size
        loader = make_loader(positions, batch_size, self.resolve_workers(len(positions)), shuffle=False)
        if dense is None:
            model, run_precision, fast = self.fast_model(model, len(loader), len(positions) * job.crops)
        classes = list(self.dataset.classes)
        r = evaluate_detailed(
            model, positions, loader, dev, run_precision, classes, job.report, dense, job.misclassified
        )
        return r, fast

    def streamed(self) -> tuple[dict, dict]:
        """Batches through a DataLoader (each torchrun rank its share); only counts are kept."""
        job, dev, dataset = self.job, self.world.device, self.dataset
        transform = eval_transform_from_spec(self.spec, crop=job.crop, native_size=dataset.native_size)
        images: int | None = None
        if isinstance(dataset, ShardDataset):  # shards:DIR streams its own share
            dataset.take(job.limit)
            dataset.transform, dataset.batch_size = transform, job.batch_size
            loader = make_loader(dataset, job.batch_size, self.resolve_workers(None), shuffle=False)
        else:
            mapped = Mapped(dataset, transform, subset_indices(len(dataset), job.limit, 0))
            sampler = (
                EvalSampler(len(mapped), self.world.rank, self.world.world_size)
                if launched_by_torchrun()
                else None
            )
            images = len(mapped) if sampler is None else len(sampler)
            workers = self.resolve_workers(images)
            loader = make_loader(mapped, job.batch_size, workers, shuffle=False, sampler=sampler)
        try:
            num_batches = len(loader)
        except TypeError:  # a stream of unknown length: compile only when asked
            num_batches = None
        # Under torchrun each rank runs its own copy (no DDP wrapper: inference needs no gradient sync).
        model, run_precision, fast = self.fast_model(
            self.model.to(dev), num_batches, None if images is None else images * job.crops
        )
        channels_last = self.channels_last
        if run_precision not in FAST_INFERENCE_PRECISIONS and channels_last:  # fp16: plain model
            model = model.to(memory_format=torch.channels_last)
        else:
            channels_last = False  # the inference model converts its input itself
        return evaluate(model, loader, dev, run_precision, channels_last, progress=self.world.is_main), fast
