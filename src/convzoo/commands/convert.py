"""`convzoo convert`: torchvision / timm / Places365 / other checkpoints -> convzoo weights."""

from __future__ import annotations

import argparse
import sys

from ..errors import UserError


HELP = "torchvision / timm / Places365 / other checkpoints -> convzoo weights"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="kind", required=True,
                   choices=["torchvision", "timm", "places365", "caffe", "remap"],
                   help="where the checkpoint comes from (caffe: a .caffemodel, read without Caffe; "
                        "remap: any implementation, by order and shape)")
    p.add_argument("src", help=".pth / .pth.tar / .pt (loaded with weights_only=True), .safetensors, "
                               "or .caffemodel (--from caffe)")
    p.add_argument("--model", required=True, help="convzoo model name")
    p.add_argument("--out", required=True, help="output .safetensors file (weights + WeightSpec)")
    p.add_argument("--mean", default=None, metavar="B,G,R|FILE.binaryproto",
                   help="--from caffe: the mean pixel subtracted in training, 0-255 BGR, or Caffe's mean "
                        "image (reduced to its per-channel mean); default the ILSVRC mean 104,117,123")
    p.add_argument("--model-kwargs", dest="model_kwargs", action="append", default=[], metavar="KEY=VALUE",
                   help="a constructor option the weights need, recorded in their WeightSpec "
                        "(e.g. shortcut_pad=split for the CIFAR ports that pad option-A shortcuts on "
                        "both sides); repeatable")
    p.add_argument("--verbose", action="store_true", help="print the key mapping used")


def run(args: argparse.Namespace) -> None:
    from ..interop import convert
    from ..weights import save_weights
    log = (lambda s: print(s, file=sys.stderr)) if args.verbose else _notes_only
    state, spec = convert(args.kind, args.src, args.model, log=log,
                          model_kwargs=parse_model_kwargs(args.model_kwargs) or None, mean=args.mean)
    save_weights(args.out, state, spec)
    print(f"wrote {args.out}: {spec.model}, {spec.num_classes} classes, from {spec.source} "
          f"{spec.converted_from}; input {spec.input_size} (resize {spec.resize_size}, crop {spec.crop_size}, "
          f"{spec.interpolation}), mean {list(spec.mean)}, std {list(spec.std)}"
          + (", transform_input" if spec.extra.get("transform_input") else "")
          + (f", {spec.channel_order} 0-{spec.pixel_scale:g}, {spec.resize_mode} resize"
             if spec.channel_order != "RGB" or spec.pixel_scale != 1 or spec.resize_mode != "shorter" else "")
          + (f", model options {spec.model_kwargs}" if spec.model_kwargs else ""))


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
