"""Export a model with its weights: ONNX (torch.onnx.export, dynamo=True) or pt2 (torch.export).

docs/DESIGN.md "Export": the graph is fp32, takes normalised NCHW input with a dynamic batch axis
(spatial size fixed at the WeightSpec's input size) and returns logits, no softmax. The
preprocessing and labels go in a JSON sidecar `FILE.json`. TorchScript is deprecated in
torch 2.14 and not offered.

Each export is checked before it is reported: the written file is reloaded
(`torch.export.load`, or onnxruntime when installed) and run on a batch of 3 - a batch size
the graph was not traced with - against the PyTorch model.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from dataclasses import asdict, dataclass

import torch

from ..errors import UserError

FORMATS = ("onnx", "pt2")
INPUT, OUTPUT = "input", "logits"


@dataclass
class ExportResult:
    path: str
    sidecar: str
    format: str
    input_shape: list          # ["batch", 3, H, W]
    num_classes: int
    checked_with: str | None   # "torch.export.load" | "onnxruntime" | None (onnxruntime absent)
    max_abs_diff: float | None
    max_abs_logit: float | None


def export_model(model_name: str, weights: str, fmt: str, out: str,
                 input_size: int | None = None) -> ExportResult:
    """Export `model_name` with `weights` to `out`; writes `out + ".json"` beside it."""
    from ..registry import create_model
    if fmt not in FORMATS:
        raise UserError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out_dir = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(out_dir):
        raise UserError(f"output folder does not exist: {out_dir}")
    model = create_model(model_name, weights=weights).eval()
    spec = model.weight_spec
    size = spec.input_size if input_size is None else input_size   # 0 is an error, not "the default"
    if not isinstance(size, int) or size < 1:
        raise UserError(f"--input-size must be a positive integer, got {size!r}")
    example = torch.randn(2, 3, size, size)   # batch 2: a batch of 1 would be specialised
    dynamic = {"x": {0: torch.export.Dim("batch", min=1, max=65536)}}
    try:
        with torch.no_grad():
            if fmt == "pt2":
                program = torch.export.export(model, (example,), dynamic_shapes=dynamic)
                torch.export.save(program, out)
            else:
                _export_onnx(model, example, dynamic, out)
    except RuntimeError as e:  # e.g. an input size the network cannot run at
        raise UserError(f"cannot export {model_name} at {size}x{size}: {str(e).strip().splitlines()[0]}") from None
    checked_with, diff, scale = check_export(model, out, fmt, size)
    if diff is not None and diff > 1e-4 * max(1.0, scale):  # relative: fp32 op order differs
        raise RuntimeError(f"exported {out} disagrees with PyTorch: max |diff| {diff:.3g} "
                           f"at logits up to {scale:.3g}")
    sidecar = out + ".json"
    with open(sidecar, "w") as f:
        json.dump(sidecar_doc(spec, fmt, size), f, indent=1)
    return ExportResult(out, sidecar, fmt, ["batch", 3, size, size], spec.num_classes, checked_with, diff, scale)


def _export_onnx(model, example, dynamic, out: str) -> None:
    # the exporter reports progress on stdout; stdout belongs to the command's own output
    with contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(model, (example,), out, dynamo=True, dynamic_shapes=dynamic,
                          input_names=[INPUT], output_names=[OUTPUT], external_data=False,
                          verbose=False)


def check_export(model, path: str, fmt: str, size: int, batch: int = 3):
    """Reload the exported file; return (what ran it, max |logits - PyTorch logits|, max |logits|)."""
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(x)
    if fmt == "pt2":
        with torch.no_grad():
            got = torch.export.load(path).module()(x)
        return "torch.export.load", float((got - ref).abs().max()), float(ref.abs().max())
    try:
        import onnxruntime as ort
    except ImportError:
        return None, None, None
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT], {INPUT: x.numpy()})[0]
    return "onnxruntime", float(abs(got - ref.numpy()).max()), float(ref.abs().max())


def sidecar_doc(spec, fmt: str, size: int) -> dict:
    """What a consumer of the graph needs: the input it takes, the preprocessing, the labels."""
    pre = {k: v for k, v in asdict(spec).items()
           if k in ("mean", "std", "input_size", "crop_size", "resize_size", "interpolation",
                    "channel_order", "pixel_scale", "resize_mode")}
    pre["input_size"] = size
    scale = {1.0: "pixel/255", 255.0: "pixel"}.get(spec.pixel_scale, f"pixel/255*{spec.pixel_scale:g}")
    resize = ("squash to resize_size x resize_size, then centre crop" if spec.resize_mode == "squash"
              else "shorter side to resize_size, then centre crop")
    return {"model": spec.model, "format": fmt,
            "input": {"name": INPUT, "shape": ["batch", 3, size, size], "dtype": "float32",
                      "layout": "NCHW", "normalised": f"({scale} - mean) / std, {spec.channel_order}",
                      "resize": resize},
            "output": {"name": OUTPUT, "shape": ["batch", spec.num_classes],
                       "meaning": "logits (no softmax)"},
            "preprocessing": pre, "num_classes": spec.num_classes, "labels": spec.labels,
            "source": spec.source, "converted_from": spec.converted_from, "extra": spec.extra}
