"""`convzoo list`: list the models (glob PATTERN) with params, MACs, input size, paper."""

from __future__ import annotations

import argparse

from ..errors import UserError
from ._common import meta_model, print_json

HELP = "list the models (glob PATTERN) with params, MACs, input size, paper"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default="*", help="shell glob over model names, e.g. 'resnext*'")
    p.add_argument("--json", action="store_true", help="print one JSON list")


def run(args: argparse.Namespace) -> None:
    from ..analysis.profile import profile
    from ..registry import list_models, model_info
    rows = []
    for name in list_models(args.pattern):
        info = model_info(name)
        prof = profile(meta_model(name), info.input_size, name=name)
        rows.append({"name": name, "params": prof.params, "macs": prof.macs,
                     "input_size": info.input_size, "paper": info.paper})
    if not rows:
        raise UserError(f"no model matches {args.pattern!r}")
    if args.json:
        return print_json(rows)
    print(f"{'model':<24} {'params (M)':>10} {'MACs (G)':>9} {'input':>5}  paper")
    for r in rows:
        print(f"{r['name']:<24} {r['params'] / 1e6:>10.2f} {r['macs'] / 1e9:>9.3f} {r['input_size']:>5}  {r['paper']}")
