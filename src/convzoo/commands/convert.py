"""`convzoo convert`: torchvision / timm / Places365 / other checkpoints -> convzoo weights."""

from __future__ import annotations

import argparse
import sys

from ..errors import UserError
from ._common import JSON_HELP, print_json

HELP = "torchvision / timm / Places365 / other checkpoints -> convzoo weights"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--from",
        dest="kind",
        required=True,
        choices=["torchvision", "timm", "places365", "caffe", "remap"],
        help="where the checkpoint comes from (caffe: a .caffemodel, read without Caffe; "
        "remap: any implementation, by order and shape)",
    )
    p.add_argument(
        "positional",
        nargs="+",
        metavar="[MODEL] SRC",
        help="convzoo model name, then the .pth / .pth.tar / .pt (loaded with weights_only=True), "
        ".safetensors or .caffemodel (--from caffe) file",
    )
    p.add_argument(
        "--model",
        default=None,
        help="the model name as an option (the same as the first positional; default: that positional)",
    )
    p.add_argument("--out", required=True, help="output .safetensors file (weights + WeightSpec)")
    p.add_argument(
        "--mean",
        default=None,
        metavar="B,G,R|FILE.binaryproto",
        help="--from caffe: the mean pixel subtracted in training, 0-255 BGR, or Caffe's mean "
        "image (reduced to its per-channel mean); default the ILSVRC mean 104,117,123",
    )
    p.add_argument(
        "--model-kwargs",
        dest="model_kwargs",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a constructor option the weights need, recorded in their WeightSpec "
        "(e.g. shortcut_pad=split for the CIFAR ports that pad option-A shortcuts on "
        "both sides); repeatable (default: none)",
    )
    p.add_argument("--verbose", action="store_true", help="print the key mapping used")
    p.add_argument("--json", action="store_true", help=JSON_HELP + " (the WeightSpec written)")


def run(args: argparse.Namespace) -> None:
    import dataclasses

    from ..interop import convert
    from ..weights import save_weights

    model, src = model_and_source(args.positional, args.model)
    log = (lambda s: print(s, file=sys.stderr)) if args.verbose else _notes_only
    state, spec = convert(
        args.kind,
        src,
        model,
        log=log,
        model_kwargs=parse_model_kwargs(args.model_kwargs) or None,
        mean=args.mean,
    )
    save_weights(args.out, state, spec)
    if args.json:
        return print_json({"out": args.out, "spec": dataclasses.asdict(spec)})
    from ..data.transforms import effective_sizes

    resize, crop = effective_sizes(spec)
    print(
        f"wrote {args.out}: {spec.model}, {spec.num_classes} classes, from {spec.source} "
        f"{spec.converted_from}; input {spec.input_size} (resize {resize}, crop {crop}, "
        f"{spec.interpolation}), mean {list(spec.mean)}, std {list(spec.std)}"
        + (", transform_input" if spec.extra.get("transform_input") else "")
        + (
            f", {spec.channel_order} 0-{spec.pixel_scale:g}, {spec.resize_mode} resize"
            if spec.channel_order != "RGB" or spec.pixel_scale != 1 or spec.resize_mode != "shorter"
            else ""
        )
        + (f", model options {spec.model_kwargs}" if spec.model_kwargs else "")
    )


def model_and_source(positional: list[str], model_opt: str | None) -> tuple[str, str]:
    """`convert MODEL SRC` (like every other command) or the older `convert SRC --model MODEL`."""
    if len(positional) == 2 and model_opt is None:
        return positional[0], positional[1]
    if len(positional) == 1 and model_opt is not None:
        return model_opt, positional[0]
    raise UserError("give the model and the checkpoint: convzoo convert MODEL SRC --from KIND --out FILE")


def _notes_only(line: str) -> None:
    if line.startswith("note:"):
        print(line, file=sys.stderr)


def parse_model_kwargs(items: list[str]) -> dict:
    """`KEY=VALUE` pairs; VALUE is read as YAML (so 1, true and 'split' take their natural types)."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise UserError(f"--model-kwargs expects KEY=VALUE, got {item!r}")
        out[key] = yaml.safe_load(value)
    return out
