"""Export a model with its weights: ONNX (torch.onnx.export, dynamo=True) or pt2 (torch.export).

docs/DESIGN.md "Export": the graph is fp32, takes normalised NCHW input with a dynamic batch axis and
returns logits, no softmax. Height and width are dynamic too (torch.export `Dim`s, ONNX dynamic
axes) when the network runs at another size (checked on the meta device; every shipped model
pools adaptively before its classifier, AlexNet and VGG included) and the exported graph
reproduces PyTorch at a second size; otherwise (a flatten into a fixed Linear; VGG's ONNX graph,
whose adaptive pooling the exporter lowers for one size) the graph keeps the WeightSpec's input
size, and the export says why in one line. The
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
from dataclasses import dataclass

import torch

from ..data.transforms import describe_preprocessing
from ..errors import UserError
from ..layers import onnx_lrn
from ..registry import build, model_info
from ..weights import spec_of

FORMATS = ("onnx", "pt2")
INPUT, OUTPUT = "input", "logits"


@dataclass
class ExportResult:
    path: str
    sidecar: str
    format: str
    input_shape: list  # ["batch", 3, H, W]; H and W are "height"/"width" when dynamic
    num_classes: int
    checked_with: str | None  # "torch.export.load" | "onnxruntime" | None (onnxruntime absent)
    max_abs_diff: float | None
    max_abs_logit: float | None
    fixed_size_reason: str | None = None  # why the spatial size is fixed (None: dynamic H, W)
    opset: int | None = None


def fixed_size_reason(model_name: str, size: int) -> str | None:
    """None when the network runs at a larger input too (checked on the meta device: no weights,
    no arithmetic), else why it cannot."""
    with torch.device("meta"):
        m = build(model_name, num_classes=10).eval()
        try:
            with torch.no_grad():
                out = m(torch.empty(1, 3, size + 32, size + 32))
        except (RuntimeError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            return f"its classifier needs a {size}x{size} input ({first[:80]})"
    return None if tuple(out.shape) == (1, 10) else f"its output at another size is {tuple(out.shape)}"


def check_target(fmt: str, out: str) -> None:
    """UserError for an unknown format or an output folder that does not exist: checked before
    the caller spends time loading weights."""
    if fmt not in FORMATS:
        raise UserError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out_dir = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(out_dir):
        raise UserError(f"output folder does not exist: {out_dir}")


def export_model(
    model: torch.nn.Module,
    fmt: str,
    out: str,
    input_size: int | None = None,
    opset: int | None = None,
    dynamic_size: bool | None = None,
) -> ExportResult:
    """Export `model` (built with its weights: `convzoo.create_model(name, weights=...)`) to
    `out`; writes `out + ".json"` beside it.

    `dynamic_size` None: dynamic height/width where the network allows it (`fixed_size_reason`);
    False: fixed at the input size. `opset`: the ONNX opset (default: the exporter's)."""
    check_target(fmt, out)
    model = model.eval()
    model_name = str(model.model_name)
    spec = spec_of(model)
    size = spec.input_size if input_size is None else input_size  # 0 is an error, not "the default"
    if not isinstance(size, int) or size < 1:
        raise UserError(f"--input-size must be a positive integer, got {size!r}")
    if opset is not None and fmt != "onnx":
        raise UserError("--opset applies to --format onnx only")
    example = torch.randn(2, 3, size, size)  # batch 2: a batch of 1 would be specialised
    reason = "--no-dynamic-size" if dynamic_size is False else fixed_size_reason(model_name, size)
    if reason is None:
        try:
            _export(model, example, fmt, out, _dims(model, size, spatial=True), opset)
            reason = _disagrees_at_other_size(model, out, fmt, size)
        except Exception as e:  # noqa: BLE001 - a guard on H/W the tracer could not keep symbolic
            reason = f"torch.export could not keep the size symbolic ({type(e).__name__})"
    if reason is not None:
        try:
            _export(model, example, fmt, out, _dims(model, size, spatial=False), opset)
        except RuntimeError as e:  # e.g. an input size the network cannot run at
            raise UserError(
                f"cannot export {model_name} at {size}x{size}: {str(e).strip().splitlines()[0]}"
            ) from None
    checked_with, diff, scale = check_export(model, out, fmt, size)
    if diff is not None and diff > 1e-4 * max(1.0, scale):  # relative: fp32 op order differs
        raise RuntimeError(
            f"exported {out} disagrees with PyTorch: max |diff| {diff:.3g} at logits up to {scale:.3g}"
        )
    sidecar = out + ".json"
    shape = ["batch", 3, size, size] if reason else ["batch", 3, "height", "width"]
    with open(sidecar, "w") as f:
        json.dump(sidecar_doc(spec, fmt, size, shape, reason), f, indent=1)
    return ExportResult(out, sidecar, fmt, shape, spec.num_classes, checked_with, diff, scale, reason, opset)


def write_onnx(model, size: int, out: str, opset: int | None = None) -> None:
    """The ONNX graph of an already built `model` at a fixed `size`, dynamic batch: what the
    inference backends (inference/runtime.py) run. Not checked here: the caller compares it."""
    example = torch.randn(2, 3, size, size)  # batch 2: a batch of 1 would be specialised
    _export(model.eval(), example, "onnx", out, _dims(model, size, spatial=False), opset)


def _disagrees_at_other_size(model, out: str, fmt: str, size: int) -> str | None:
    """Why a dynamic-size graph cannot be kept: it must reproduce PyTorch at a size it was not
    traced at (the ONNX lowering of VGG's adaptive pooling, for one, fixes its kernel)."""
    _, diff, scale = check_export(model, out, fmt, size + 32)
    if diff is not None and diff > 1e-4 * max(1.0, scale):
        other = f"{size + 32}x{size + 32}"
        return (
            f"the {fmt} graph with dynamic height/width disagrees with PyTorch at {other} "
            f"(max |diff| {diff:.2g}; adaptive pooling lowered for one size)"
        )
    return None


def _dims(model, size: int, spatial: bool) -> dict:
    dims = {0: torch.export.Dim("batch", min=1, max=65536)}
    if spatial:
        low = model_info(model.model_name).min_input_size or size
        dims.update(
            {
                2: torch.export.Dim("height", min=low, max=4096),
                3: torch.export.Dim("width", min=low, max=4096),
            }
        )
    return {"x": dims}


def _export(model, example, fmt: str, out: str, dynamic: dict, opset: int | None) -> None:
    with torch.no_grad():
        if fmt == "pt2":
            torch.export.save(torch.export.export(model, (example,), dynamic_shapes=dynamic), out)
        else:
            _export_onnx(model, example, dynamic, out, opset)


def _lrn_as_onnx_lrn(x, size: int, alpha: float, beta: float, k: float):
    """convzoo::lrn -> ONNX LRN: both divide alpha by the window size and pad it evenly."""
    from onnxscript import opset18 as op  # lazy: onnxscript comes with the optional onnx extra

    return op.LRN(x, size=size, alpha=alpha, beta=beta, bias=k)


def _export_onnx(model, example, dynamic, out: str, opset: int | None = None) -> None:
    # the exporter reports progress on stdout; stdout belongs to the command's own output
    with contextlib.redirect_stdout(io.StringIO()), onnx_lrn():
        torch.onnx.export(
            model,
            (example,),
            out,
            dynamo=True,
            dynamic_shapes=dynamic,
            input_names=[INPUT],
            output_names=[OUTPUT],
            external_data=False,
            verbose=False,
            opset_version=opset,
            custom_translation_table={torch.ops.convzoo.lrn.default: _lrn_as_onnx_lrn},
        )


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
        import onnxruntime as ort  # lazy: onnxruntime is an optional extra (the check is skipped without it)
    except ImportError:
        return None, None, None
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT], {INPUT: x.numpy()})[0]
    return "onnxruntime", float(abs(got - ref.numpy()).max()), float(ref.abs().max())


def sidecar_doc(
    spec, fmt: str, size: int, shape: list | None = None, fixed_reason: str | None = None
) -> dict:
    """What a consumer of the graph needs: the input it takes, the preprocessing (every size as
    applied, none left null), the labels."""
    pre = describe_preprocessing(spec, size if size != spec.input_size else None)  # exported at another size
    scale = {1.0: "pixel/255", 255.0: "pixel"}.get(spec.pixel_scale, f"pixel/255*{spec.pixel_scale:g}")
    resize = ", then ".join(pre["steps"][1:3])
    return {
        "model": spec.model,
        "format": fmt,
        "input": {
            "name": INPUT,
            "shape": shape or ["batch", 3, size, size],
            "dtype": "float32",
            "layout": "NCHW",
            "normalised": f"({scale} - mean) / std, {spec.channel_order}",
            "resize": resize,
            **({"fixed_size": fixed_reason} if fixed_reason else {}),
        },
        "output": {"name": OUTPUT, "shape": ["batch", spec.num_classes], "meaning": "logits (no softmax)"},
        "preprocessing": pre,
        "num_classes": spec.num_classes,
        "labels": spec.labels,
        "source": spec.source,
        "converted_from": spec.converted_from,
        "extra": spec.extra,
    }
