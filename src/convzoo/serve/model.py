"""One served model: its weights on the fast inference path, and everything the page shows.

Nothing here is a second implementation of `convzoo predict`: the models come from
`predict.inference_model`, images are decoded by `data.images.load_image` (header-checked size
limit, EXIF orientation, mode conversions), preprocessed by the WeightSpec's eval transform,
and each result is `predict.describe` (top-k, Places365 indoor/outdoor vote). So a served
answer equals `convzoo predict`'s for the same image and weights (tests/test_serve.py).
"""

from __future__ import annotations

import base64
import io
import os
import sys
import threading
from dataclasses import asdict, dataclass

import torch

from ..analysis.cam import save_overlay, save_photo_overlay
from ..analysis.chart import PUBLISHED, iter_chart_points, plot_accuracy_vs_macs
from ..analysis.profile import profile
from ..data.transforms import describe_preprocessing, eval_transform_from_spec
from ..errors import UserError
from ..factory import create_model
from ..inference.evaluate import autocast
from ..inference.predict import cam_images, describe, inference_model, resolve_labels
from ..inference.runtime import calibration_from_files, check_calibration_path
from . import decode as uploads


@dataclass
class Job:
    """One decoded image waiting for the inference thread."""

    tensor: torch.Tensor  # normalised [3, S, S]
    topk: int
    cam: bool
    photo: object = None  # the decoded image (PIL), kept when a CAM is asked for: drawn over it


class ServedModel:
    def __init__(
        self,
        model_name: str,
        weights: str,
        id: str | None = None,
        device: str = "auto",
        precision: str = "auto",
        compile: bool = False,
        max_batch: int = 16,
        backend: str = "torch",
        calibration: str | None = None,
    ):
        if compile and backend != "torch":
            raise UserError(f"--compile is torch.compile: it applies to --backend torch, not {backend}")
        make_calibration = None
        if calibration:
            files = check_calibration_path(calibration)

            def make_calibration(spec):
                return calibration_from_files(files, eval_transform_from_spec(spec), str(calibration))

        self.plain, self.fast, self.run_precision, self.device = inference_model(
            model_name,
            weights,
            device,
            precision,
            compile=False,
            command="convzoo serve",
            backend=backend,
            calibration=make_calibration,
        )
        # the backend that runs: `auto` resolved (a graph runtime's module names its own)
        self.backend = getattr(self.fast, "backend", "torch")
        self.spec = self.plain.weight_spec
        self.model = self.plain.model_name
        self.id = id or self.model
        self.weights = os.path.basename(str(weights))
        self.weights_path = str(weights)  # as given: the start-up lines say which file each id is
        self.names, self.is_places = resolve_labels(None, self.spec)
        self.transform = eval_transform_from_spec(self.spec, crop="center")
        self.input_size = self.spec.crop_size or self.spec.input_size
        self.compiled = False
        self.cam_error: str | None = None
        if compile:
            self._compile(max_batch)

    def _compile(self, max_batch: int) -> None:
        """torch.compile once, at start-up, for every batch size up to `max_batch`.

        `fast_inference`'s `CompiledForOneShape` suits a fixed batch; here sizes vary with the
        load, so the batch dimension is compiled dynamic (one graph for 2..max_batch) and batch
        1, which dynamo always specialises, gets its own graph. Both are built now, so no
        request pays for a compile."""
        print(
            f"convzoo serve: compiling {self.id} (torch.compile, frozen weights, batches 1..{max_batch}); "
            f"this can take minutes on a CPU",
            file=sys.stderr,
        )
        compiled = torch.compile(self.fast, dynamic=True, options={"freezing": True})
        with torch.no_grad(), autocast(self.device, self.run_precision):
            for b in sorted({max(2, max_batch), 1}):
                compiled(torch.zeros(b, 3, self.input_size, self.input_size, device=self.device))
        self.fast, self.compiled = compiled, True

    # ---- per request (event loop's thread pool) -------------------------------------------
    def probe(self, data: bytes, name: str, max_pixels: int | None = None):
        """The upload's header read and its decode planned (serve/decode.py): `BadImage` or
        `TooLarge` now, before any pixel is decoded."""
        need = getattr(self.transform, "draft_size", None) or self.spec.resize_size or self.input_size
        return uploads.probe(data, name, need, uploads.MAX_PIXELS if max_pixels is None else max_pixels)

    def decode_probed(self, p) -> torch.Tensor:
        return self.transform(uploads.decode(p))

    def decode_keeping_photo(self, p) -> tuple[torch.Tensor, object]:
        """(the network's input, the decoded image): for a CAM drawn over the photo."""
        img = uploads.decode(p)
        return self.transform(img), img

    def decode(self, data: bytes, name: str) -> torch.Tensor:
        """The network's input for one uploaded file; `BadImage(name, reason)` if it is not one."""
        return self.decode_probed(self.probe(data, name))

    # ---- per batch (the inference thread) --------------------------------------------------
    @torch.no_grad()
    def run_batch(self, jobs: list[Job]) -> list[dict]:
        x = torch.stack([j.tensor for j in jobs]).to(self.device)
        with autocast(self.device, self.run_precision):
            probs = torch.softmax(self.fast(x).float(), dim=1).cpu()
        results = [
            describe(p, self.names, min(j.topk, len(self.names)), self.is_places) for j, p in zip(jobs, probs)
        ]
        wanted = [i for i, j in enumerate(jobs) if j.cam]
        if wanted:
            photos = [jobs[i].photo for i in wanted]
            for i, cam in zip(wanted, self._cams(x[wanted], probs[wanted].argmax(1), photos)):
                results[i].update(cam)
        return results

    def _cams(self, x: torch.Tensor, classes: torch.Tensor, photos: list | None = None) -> list[dict]:
        """{"cam": PNG data URL} per image, or {"cam_error": why} for networks without GAP + linear.
        Drawn over the decoded photo where the job kept it, as `convzoo predict --cam` draws it."""
        if self.cam_error is None:
            try:
                pairs = cam_images(self.plain, x, self.spec, classes.to(x.device))
            except UserError as e:
                self.cam_error = str(e)
        if self.cam_error is not None:
            return [{"cam_error": self.cam_error}] * len(x)
        out = []
        for (img, cam), photo in zip(pairs, photos or [None] * len(pairs)):
            buf = io.BytesIO()
            if photo is not None:
                save_photo_overlay(photo, cam, self.spec, buf)
            else:
                save_overlay(img, cam, buf)
            out.append({"cam": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()})
        return out

    # ---- what the page shows about the model ----------------------------------------------
    def describe_model(self) -> dict:
        return {
            "id": self.id,
            "model": self.model,
            "weights": self.weights,
            "spec": asdict(self.spec),
            "preprocessing": describe_preprocessing(self.spec),  # the spec's sizes as applied, none null
            "device": str(self.device),
            "precision": self.run_precision if self.run_precision != "fp32" else _weights_dtype(self.fast),
            "backend": self.backend,
            "compiled": self.compiled,
            "input_size": self.input_size,
            "num_classes": len(self.names),
            "places365": self.is_places and len(self.names) == 365,
            "published_top1": _published_top1(self.model),
        }

    def summary(self) -> dict:
        """The per-layer profile (output size, params, MACs, receptive field) at the served size."""
        with torch.device("meta"):
            meta = create_model(self.model, num_classes=self.spec.num_classes, **self.spec.model_kwargs)
        return profile(meta, self.input_size, name=self.model).to_dict()


def _weights_dtype(fast) -> str:
    """ "bf16" when the fast model's weights were cast (prepare_for_inference), else "fp32"."""
    if hasattr(fast, "backend"):  # inference.runtime.RuntimeModel
        return fast.precision
    dtype = getattr(getattr(fast, "_orig_mod", fast), "dtype", torch.float32)
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")


def _published_top1(model: str) -> float | None:
    """The accuracy the chart plots for `model` (None: not on the chart)."""
    return (PUBLISHED.get(model) or (None,))[0]


def chart_png(highlight: str) -> bytes:
    """The accuracy-vs-cost chart (analysis/chart.py) with `highlight` ringed."""
    buf = io.BytesIO()
    plot_accuracy_vs_macs(_chart_points(), buf, highlight=highlight)
    return buf.getvalue()


class ChartPoints:
    """The chart's points, computed once per process: every charted model is profiled (meta
    device, ~10-25 s on 2 busy cores). `convzoo serve` starts `warm` in a background thread at
    start-up so the page's first chart does not wait for all of it, and `stop`s it at shutdown
    (a thread still inside torch when the interpreter exits aborts the process)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._points: list | None = None
        self._thread: threading.Thread | None = None

    def get(self) -> list:
        with self._lock:
            if self._points is None:
                points: list = []
                for p in iter_chart_points():
                    if self._stop.is_set():
                        return points  # shutting down: nobody will look at it
                    points.append(p)
                self._points = points
            return self._points

    def warm(self) -> None:
        self._thread = threading.Thread(target=self.get, name="convzoo-serve-chart", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout)
            self._stop.clear()
            self._thread = None


CHART_POINTS = ChartPoints()


def _chart_points() -> list:
    return CHART_POINTS.get()
