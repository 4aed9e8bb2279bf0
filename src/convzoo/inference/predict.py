"""`convzoo predict`: top-k labels with probabilities for image files and folders.

`PredictJob` says which weights classify which images, and how (checked when it is built);
`predict(job)` loads the model, decodes the images beside the forward pass and returns the
result list `predict --json` prints. `inference_model`, `describe` and `resolve_labels` are
shared with `convzoo serve`, so a served answer equals predict's.

Preprocessing comes from the weights' WeightSpec (the same center-crop preset `eval` uses).
Labels default to the weights' own; `--labels imagenet1k|places365|FILE` replaces them (the
count must match the classifier). With Places365 labels, the indoor/outdoor vote of the
Places365 demo is added: the mean of the top-10 classes' IO flags (0 indoor, 1 outdoor),
indoor below 0.5.

Unreadable files: each is reported (one line on stderr, and in --json as an entry with an
`error` and no predictions) and the others continue. Exit code 0 when at least one image was
classified, 2 (UserError) when none could be.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..analysis.cam import class_activation_map, save_photo_overlay
from ..data.images import BadImage, expand_paths, load_image
from ..data.labels import load_labels, places365_indoor_outdoor
from ..data.transforms import describe_preprocessing, eval_transform_from_spec, to_display
from ..engine.accel import resolve_auto
from ..engine.distributed import resolve_device
from ..errors import UserError
from ..factory import create_model
from ..hub import resolve_weights
from ..outputs import disk_errors, output_dir
from ..registry import canonical_name
from ..weights import WeightSpec, read_spec
from .evaluate import auto_workers, autocast
from .runtime import calibration_from_files, check_calibration_path, fast_model, resolve_backend


def resolve_labels(labels: str | None, spec) -> tuple[list[str], bool]:
    """(class names, whether they are the Places365 classes)."""
    if labels is None:
        names = spec.labels or [str(i) for i in range(spec.num_classes)]
        is_places = is_places365(spec)
    else:
        names = load_labels(labels)
        is_places = labels == "places365"
    if len(names) != spec.num_classes:
        raise UserError(f"--labels {labels}: {len(names)} names for a {spec.num_classes}-class classifier")
    return list(names), is_places


def is_places365(spec) -> bool:
    """Whether the weights declare the Places365 classes: training records the data's `label_set`,
    the converters and the catalog the `dataset` (Places365's PyTorch and Caffe releases)."""
    return "places365" in (spec.extra.get("label_set"), spec.extra.get("dataset"), spec.source)


def indoor_outdoor(probs: torch.Tensor) -> dict:
    """Places365 demo's vote: mean IO flag (0 indoor, 1 outdoor) of the 10 most probable classes."""
    flags = torch.tensor(places365_indoor_outdoor(), dtype=torch.float32) - 1  # file: 1 indoor, 2 outdoor
    score = float(flags[probs.topk(10).indices].mean())
    return {"vote": "indoor" if score < 0.5 else "outdoor", "outdoor_score": score}


def describe(probs: torch.Tensor, names: list[str], k: int, is_places: bool) -> dict:
    """One image's result from its class probabilities: the top-k `predictions` and, for the
    365 Places classes, the `indoor_outdoor` vote (shared by `predict` and `convzoo serve`)."""
    top = probs.topk(k)
    out: dict = {
        "predictions": [
            {"label": names[i], "index": int(i), "probability": float(v)}
            for v, i in zip(top.values, top.indices)
        ]
    }
    if is_places and len(names) == 365:
        out["indoor_outdoor"] = indoor_outdoor(probs)
    return out


def inference_model(
    model_name: str,
    weights: str,
    device: str = "auto",
    precision: str = "auto",
    compile: bool | None = None,
    num_batches: int | None = None,
    command: str = "convzoo predict",
    backend: str = "auto",
    calibration=None,
    images: int | None = None,
    needs_torch: str | None = None,
):
    """(plain model, fast model, autocast precision to run the fast one under, device): the
    models `predict` and `convzoo serve` classify with, built the same way for both.
    `backend`, `calibration`: inference/runtime.py's `fast_model` (a Calibration, or a function of
    the WeightSpec making one, for --precision int8); `images` the job's size for `--backend auto`
    and the compile decision (None: open-ended, a server), `needs_torch` what needs PyTorch.

    The CAMs need the plain model (forward_features and the final Linear, which the folded,
    traced copy no longer has as methods): it is kept beside the fast one and run in fp32 for
    the class the fast model ranked first, so map and top-1 label agree."""
    dev = resolve_device(device)
    requested = precision
    precision = resolve_backend(backend, precision, dev)
    run_precision, channels_last = resolve_auto(precision, None, dev)
    model = create_model(model_name, weights=weights).to(dev).eval()
    spec: WeightSpec = model.weight_spec  # type: ignore[assignment]  # set by create_model
    make_calibration = (lambda: calibration(spec)) if callable(calibration) else calibration
    fast, run_precision, _ = fast_model(
        model,
        str(model.model_name),
        backend,
        run_precision,
        channels_last,
        dev,
        spec.crop_size or spec.input_size,
        compile,
        num_batches,
        make_calibration,
        command,
        images=images,
        needs_torch=needs_torch,
        precision_by_default=requested in (None, "auto"),
    )
    return model, fast, run_precision, dev


@dataclass(frozen=True)
class PredictJob:
    """One prediction's settings, as `convzoo predict` takes them; their values are checked here
    (one-line UserErrors), the model, weights, images and --cam folder in `predict`, before any
    image is decoded.

    `paths` are image files or folders (read recursively); `labels` imagenet1k, places365 or a
    file (None: the weights' own); `workers` decoding threads (None: `evaluate.auto_workers`, said
    on stderr; 0: in turn with the network); `cam_dir` a folder for class-activation-map overlays;
    `compile` None: torch.compile where the job repays it; `backend` inference/runtime.py's, int8
    calibrated on `calibration` (a folder or file; None: the images given)."""

    model: str
    weights: str
    paths: tuple[str, ...]
    labels: str | None = None
    topk: int = 5
    device: str = "auto"
    batch_size: int = 32
    workers: int | None = None
    precision: str = "auto"
    cam_dir: str | None = None
    compile: bool | None = None
    backend: str = "auto"
    calibration: str | None = None

    def __post_init__(self) -> None:
        if self.topk < 1 or self.batch_size < 1 or (self.workers is not None and self.workers < 0):
            raise UserError("--top-k and --batch-size must be at least 1, --workers at least 0")
        check_calibration(self.precision, self.calibration)


def check_calibration(precision: str, calibration: str | None) -> None:
    """--calibration goes with --precision int8 only (predict's and serve's rule)."""
    if calibration is not None and precision != "int8":
        raise UserError("--calibration applies to --precision int8")


@torch.no_grad()
def predict(job: PredictJob, stats: dict | None = None) -> list[dict]:
    """The top-k of every image `job.paths` names, in order; an unreadable one is an entry with
    an `error` and no predictions (and one line on stderr). JPEGs are decoded at reduced size
    where the resize allows (PIL's draft mode: libjpeg's DCT scaling), by `job.workers` threads
    beside the forward pass; `job.cam_dir` receives a class-activation-map overlay of the top-1
    class for each image (analysis/cam.py; global-average-pooling networks).

    fp32/bf16 predictions come from the fast inference model (`accel.fast_inference`: BN
    folded, weights cast once, channels_last; torch.compile when asked, or when the job repays
    it). `stats`, a dict, receives the images, seconds and images/s end to end (model ready to
    last result). The preprocessing every image went through is said on stderr with the timing."""
    if job.cam_dir is not None:
        output_dir(job.cam_dir, "--cam")  # before any work: read-only, a file, empty
    canonical_name(job.model)  # a wrong model or weights are reported before the images
    read_spec(resolve_weights(job.weights))
    files = expand_paths(list(job.paths))
    classifier = Classifier(job, *job_models(job, files))
    transform = eval_transform_from_spec(classifier.spec, crop="center")
    draft = getattr(transform, "draft_size", None)

    def load(path):
        try:
            return transform(load_image(path, draft_size=draft))
        except (BadImage, OSError) as e:
            return e

    workers = job.workers
    if workers is None:
        workers, why = auto_workers(len(files), job.batch_size)
        print(f"convzoo predict: {workers} decoding thread(s) ({why}; --workers N sets it)", file=sys.stderr)
    started = time.perf_counter()
    pool = ThreadPoolExecutor(workers, thread_name_prefix="decode") if workers else None
    loaded = _prefetched(pool, load, files, ahead=2 * job.batch_size) if pool else map(load, files)
    for path, tensor in zip(files, loaded):
        classifier.add(path, tensor)
    classifier.flush()
    if pool is not None:
        pool.shutdown()
    seconds = time.perf_counter() - started
    summarize(job, classifier, seconds, workers, stats)
    return classifier.results


def job_models(job: PredictJob, files: list[str]):
    """`inference_model` for `job` classifying `files`: (plain model, fast model, autocast
    precision, device); int8 calibrated on --calibration, else on `files`."""
    calibration_images = check_calibration_path(job.calibration) if job.calibration else files
    return inference_model(
        job.model,
        job.weights,
        job.device,
        job.precision,
        job.compile,
        -(-len(files) // job.batch_size),
        "convzoo predict",
        job.backend,
        lambda spec: calibration_from_files(
            calibration_images,
            eval_transform_from_spec(spec, crop="center"),
            job.calibration or "the images given",
        ),
        images=len(files),
        needs_torch="--cam (class activation maps)" if job.cam_dir else None,
    )


class Classifier:
    """A predict job's images classified a batch at a time: `add` each image (a tensor, or the
    error that kept it from being read) in order; `results` holds one entry per image."""

    def __init__(
        self, job: PredictJob, model: nn.Module, fast: nn.Module, run_precision: str, dev: torch.device
    ):
        self.job, self.fast, self.run_precision, self.dev = job, fast, run_precision, dev
        self.spec: WeightSpec = model.weight_spec  # type: ignore[assignment]  # set by create_model
        # only the CAMs need the plain copy: without them its weights are freed
        self.model = model if job.cam_dir or fast is model else None
        self.names, self.is_places = resolve_labels(job.labels, self.spec)
        self.k = min(job.topk, self.spec.num_classes)
        self.results: list[dict] = []
        self.batch: list[tuple[int, torch.Tensor]] = []
        self.used_names: set[str] = set()  # CAM file names written
        if job.cam_dir:
            os.makedirs(job.cam_dir, exist_ok=True)

    def add(self, path: str, tensor: torch.Tensor | Exception) -> None:
        self.results.append({"image": path, "predictions": []})
        if isinstance(tensor, Exception):
            reason = getattr(tensor, "reason", None) or str(tensor).splitlines()[0]
            self.results[-1]["error"] = reason
            print(f"convzoo predict: cannot read {path}: {reason}", file=sys.stderr)
            return
        self.batch.append((len(self.results) - 1, tensor))
        if len(self.batch) == self.job.batch_size:
            self.flush()

    def flush(self) -> None:
        """Classify the images waiting (and draw their CAMs)."""
        if not self.batch:
            return
        x = torch.stack([t for _, t in self.batch]).to(self.dev)
        with autocast(self.dev, self.run_precision):
            probs = torch.softmax(self.fast(x).float(), dim=1).cpu()
        if self.job.cam_dir:
            top1 = probs.argmax(1)
            with disk_errors(self.job.cam_dir):
                save_cams(
                    self.model,
                    x,
                    self.spec,
                    [self.results[slot]["image"] for slot, _ in self.batch],
                    self.job.cam_dir,
                    self.used_names,
                    classes=top1.to(x.device),
                    labels=[f"{self.names[i]} {float(p[i]):.0%}" for i, p in zip(top1, probs)],
                )
        for (slot, _), p in zip(self.batch, probs):
            self.results[slot].update(describe(p, self.names, self.k, self.is_places))
        self.batch.clear()


def summarize(
    job: PredictJob, classifier: Classifier, seconds: float, workers: int, stats: dict | None
) -> None:
    """The job's timing, CAMs and preprocessing on stderr (and the timing into `stats`); a
    UserError when no image could be read."""
    results = classifier.results
    done = sum("error" not in r for r in results)
    rate = done / seconds if seconds > 0 else 0.0
    print(
        f"convzoo predict: {done} images in {seconds:.1f} s, {rate:.1f} images/s end to end", file=sys.stderr
    )
    if stats is not None:
        stats.update(images=done, seconds=seconds, images_per_second=rate, workers=workers)
    if job.cam_dir and classifier.used_names:
        print(
            f"convzoo predict: wrote {len(classifier.used_names)} class activation map overlays to "
            f"{job.cam_dir}/ (<image>_cam.png)",
            file=sys.stderr,
        )
    if all("error" in r for r in results):
        raise UserError(f"none of the {len(results)} images could be read")
    steps = describe_preprocessing(classifier.spec)["steps"]
    print("convzoo predict: preprocessing: " + "; ".join(steps[1:]), file=sys.stderr)


def _prefetched(pool, fn, items: list, ahead: int):
    """fn(item) for each item, in order, computed by `pool` at most `ahead` items in advance: the
    decoders keep one batch ready while the network runs the last, and a folder of thousands of
    photos is never held decoded in memory at once (Executor.map submits everything)."""
    pending: deque = deque()
    it = iter(items)
    for item in it:
        pending.append(pool.submit(fn, item))
        if len(pending) >= ahead:
            break
    while pending:
        result = pending.popleft().result()
        nxt = next(it, None)
        if nxt is not None:
            pending.append(pool.submit(fn, nxt))
        yield result


def save_cams(
    model,
    x: torch.Tensor,
    spec,
    paths: list[str],
    out: str,
    used: set[str],
    classes: torch.Tensor | None = None,
    labels: list[str] | None = None,
) -> None:
    """One `<image stem>_cam.png` per image in `out` (a number is added when stems repeat), for
    `classes` (default: the model's top-1), captioned with `labels`; drawn over the original photo
    at its own size (at least 224 px, so a 32x32 photo is still legible) on the region the network
    saw (analysis.cam.save_photo_overlay)."""
    captions: list[str | None] = list(labels) if labels else [None] * len(paths)
    for path, (_, cam), label in zip(paths, cam_images(model, x, spec, classes), captions):
        stem = os.path.splitext(os.path.basename(path))[0]
        name, n = f"{stem}_cam.png", 1
        while name in used:
            n += 1
            name = f"{stem}_{n}_cam.png"
        used.add(name)
        save_photo_overlay(load_image(path), cam, spec, os.path.join(out, name), label=label)


def cam_images(model, x: torch.Tensor, spec, classes: torch.Tensor | None = None):
    """[(image [3, H, W] back in [0, 1] RGB, map [H, W])] per image of the preprocessed batch `x`:
    what `analysis.cam.save_overlay` blends."""
    cams, _ = class_activation_map(model, x.float(), classes)
    return [(to_display(spec, img), cam) for img, cam in zip(x.float().cpu(), cams.cpu())]
