"""`convzoo predict`: top-k labels with probabilities for image files and folders.

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

import torch

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


@torch.no_grad()
def predict(
    model_name: str,
    weights: str,
    paths: list[str],
    labels: str | None = None,
    topk: int = 5,
    device: str = "auto",
    batch_size: int = 32,
    workers: int | None = None,
    precision: str = "auto",
    cam_dir: str | None = None,
    compile: bool | None = None,
    backend: str = "auto",
    calibration: str | None = None,
    stats: dict | None = None,
) -> list[dict]:
    """`workers` threads decode images beside the forward pass (None: `evaluate.auto_workers`;
    0: in turn with it); `cam_dir` receives a class-activation-map overlay of the top-1 class
    for each image (analysis/cam.py; global-average-pooling networks). JPEGs are decoded at
    reduced size where the resize allows (PIL's draft mode: libjpeg's DCT scaling).

    fp32/bf16 predictions come from the fast inference model (`accel.fast_inference`: BN
    folded, weights cast once, channels_last; torch.compile when `compile`, or when None and
    the job repays it); `backend`: inference/runtime.py (auto: the fastest for the job; int8
    calibrated on `calibration`, a folder or file, else on the images given). `stats`, a
    dict, receives the images, seconds and images/s end to end (model ready to last result).
    The preprocessing every image went through is said on stderr with the timing."""
    if topk < 1 or batch_size < 1 or (workers is not None and workers < 0):
        raise UserError("--top-k and --batch-size must be at least 1, --workers at least 0")
    if cam_dir is not None:
        output_dir(cam_dir, "--cam")  # before any work: read-only, a file, empty
    canonical_name(model_name)  # a wrong model or weights are reported before the images
    read_spec(resolve_weights(weights))
    files = expand_paths(paths)
    if calibration is not None and precision != "int8":
        raise UserError("--calibration applies to --precision int8")
    calibration_images = check_calibration_path(calibration) if calibration else files
    model, fast, run_precision, dev = inference_model(
        model_name,
        weights,
        device,
        precision,
        compile,
        -(-len(files) // batch_size),
        "convzoo predict",
        backend,
        lambda spec: calibration_from_files(
            calibration_images,
            eval_transform_from_spec(spec, crop="center"),
            calibration or "the images given",
        ),
        images=len(files),
        needs_torch="--cam (class activation maps)" if cam_dir else None,
    )
    spec = model.weight_spec
    if not cam_dir and fast is not model:
        model = None  # only the CAMs need the plain copy: free its weights
    names, is_places = resolve_labels(labels, spec)
    transform = eval_transform_from_spec(spec, crop="center")
    k = min(topk, spec.num_classes)

    results: list[dict] = []
    batch: list[tuple[int, torch.Tensor]] = []

    def flush():
        if not batch:
            return
        x = torch.stack([t for _, t in batch]).to(dev)
        with autocast(dev, run_precision):
            probs = torch.softmax(fast(x).float(), dim=1).cpu()
        if cam_dir:
            top1 = probs.argmax(1)
            with disk_errors(cam_dir):
                save_cams(
                    model,
                    x,
                    spec,
                    [results[slot]["image"] for slot, _ in batch],
                    cam_dir,
                    used_names,
                    classes=top1.to(x.device),
                    labels=[f"{names[i]} {float(p[i]):.0%}" for i, p in zip(top1, probs)],
                )
        for (slot, _), p in zip(batch, probs):
            results[slot].update(describe(p, names, k, is_places))
        batch.clear()

    used_names: set[str] = set()
    if cam_dir:
        os.makedirs(cam_dir, exist_ok=True)

    draft = getattr(transform, "draft_size", None)

    def load(path):
        try:
            return transform(load_image(path, draft_size=draft))
        except (BadImage, OSError) as e:
            return e

    if workers is None:
        workers, why = auto_workers(len(files), batch_size)
        print(f"convzoo predict: {workers} decoding thread(s) ({why}; --workers N sets it)", file=sys.stderr)
    started = time.perf_counter()
    pool = None
    if workers:
        pool = ThreadPoolExecutor(workers, thread_name_prefix="decode")
        loaded = _prefetched(pool, load, files, ahead=2 * batch_size)
    else:
        loaded = map(load, files)
    for path, tensor in zip(files, loaded):
        results.append({"image": path, "predictions": []})
        if isinstance(tensor, Exception):
            e = tensor
            reason = getattr(e, "reason", None) or str(e).splitlines()[0]
            results[-1]["error"] = reason
            print(f"convzoo predict: cannot read {path}: {reason}", file=sys.stderr)
            continue
        batch.append((len(results) - 1, tensor))
        if len(batch) == batch_size:
            flush()
    flush()
    if pool is not None:
        pool.shutdown()
    seconds = time.perf_counter() - started
    done = sum("error" not in r for r in results)
    rate = done / seconds if seconds > 0 else 0.0
    print(
        f"convzoo predict: {done} images in {seconds:.1f} s, {rate:.1f} images/s end to end", file=sys.stderr
    )
    if stats is not None:
        stats.update(images=done, seconds=seconds, images_per_second=rate, workers=workers)
    if cam_dir and used_names:
        print(
            f"convzoo predict: wrote {len(used_names)} class activation map overlays to {cam_dir}/ "
            f"(<image>_cam.png)",
            file=sys.stderr,
        )
    if all("error" in r for r in results):
        raise UserError(f"none of the {len(results)} images could be read")
    steps = describe_preprocessing(spec)["steps"]
    print("convzoo predict: preprocessing: " + "; ".join(steps[1:]), file=sys.stderr)
    return results


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
