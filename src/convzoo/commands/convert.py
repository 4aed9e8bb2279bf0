"""`convzoo convert`: torchvision / timm / Places365 / other checkpoints -> convzoo weights."""

from __future__ import annotations

import argparse
import sys

from ..errors import UserError
from ._common import JSON_HELP, print_json


HELP = "torchvision / timm / Places365 / other checkpoints -> convzoo weights"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="kind", required=True, choices=["torchvision", "timm", "places365", "remap"],
                   help="where the checkpoint comes from (remap: any implementation, by order and shape)")
    p.add_argument("positional", nargs="+", metavar="[MODEL] SRC",
                   help="convzoo model name, then the .pth / .pth.tar / .pt (loaded with weights_only=True) "
                        "or .safetensors file")
    p.add_argument("--model", default=None, help="the model name as an option (older spelling)")
    p.add_argument("--out", required=True, help="output .safetensors file (weights + WeightSpec)")
    p.add_argument("--verbose", action="store_true", help="print the key mapping used")
    p.add_argument("--json", action="store_true", help=JSON_HELP + " (the WeightSpec written)")


def run(args: argparse.Namespace) -> None:
    import dataclasses

    from ..interop import convert
    from ..weights import save_weights
    model, src = model_and_source(args.positional, args.model)
    log = (lambda s: print(s, file=sys.stderr)) if args.verbose else _notes_only
    state, spec = convert(args.kind, src, model, log=log)
    save_weights(args.out, state, spec)
    if args.json:
        return print_json({"out": args.out, "spec": dataclasses.asdict(spec)})
    from ..data.transforms import effective_sizes
    resize, crop = effective_sizes(spec)
    print(f"wrote {args.out}: {spec.model}, {spec.num_classes} classes, from {spec.source} "
          f"{spec.converted_from}; input {spec.input_size} (resize {resize}, crop {crop}, "
          f"{spec.interpolation}), mean {list(spec.mean)}, std {list(spec.std)}"
          + (", transform_input" if spec.extra.get("transform_input") else ""))


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
