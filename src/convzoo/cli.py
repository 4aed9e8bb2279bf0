"""The `convzoo` command line: a table from sub-command names to command modules.

Each module in `convzoo.commands` holds one sub-command (its `HELP`, `add_arguments` and
`run`); this file only builds the parser from the table and maps errors to exit codes
(docs/DESIGN.md): 0 success, 2 bad usage or bad input (one line on stderr), 1 a failed run.
"""

from __future__ import annotations

import argparse
import os
import sys
from types import ModuleType

from .commands import (
    bench,
    chart,
    convert,
    demo,
    export,
    features,
    pack,
    predict,
    serve,
    summary,
    train,
    weights,
)
from .commands import eval as eval_
from .commands import list as list_
from .errors import RunFailed, UserError

COMMANDS: dict[str, ModuleType] = {
    "list": list_,
    "summary": summary,
    "chart": chart,
    "train": train,
    "eval": eval_,
    "predict": predict,
    "features": features,
    "weights": weights,
    "convert": convert,
    "export": export,
    "serve": serve,
    "bench": bench,
    "pack": pack,
    "demo": demo,
}


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the text already says it: argparse's
    ArgumentDefaultsHelpFormatter would also print "(default: None)" and "(default: False)",
    which tell a user nothing, so None/False defaults are explained in the help text itself
    (tests/test_cli_help.py checks that every option has one)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text.lower()
            or action.default is None
            or action.default is False
            or action.default == []
            or action.default == argparse.SUPPRESS
            or action.required
            or isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
            or not (action.option_strings or action.nargs in ("?", "*"))
        ):
            return text
        return text + " (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, instead of argparse's usage dump
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="convzoo", description="The classic ImageNet CNNs, as their papers drew them.")
    parser.add_argument("--version", action="version", version=f"convzoo {__version__}")
    parser.add_argument(
        "--offline",
        action="store_true",
        help="never use the network (weights by name come from the cache or a manual file)",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, module in COMMANDS.items():
        module.add_arguments(
            sub.add_parser(name, help=module.HELP, description=module.HELP, formatter_class=HelpFormatter)
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.offline:
        os.environ["CONVZOO_OFFLINE"] = "1"
    try:
        COMMANDS[args.command].run(args)
    except UserError as e:
        print(f"convzoo {args.command}: error: {e}", file=sys.stderr)
        return _leave_group(2)
    except RunFailed as e:  # e.g. a diverged training run: not bad input, but no traceback either
        print(f"convzoo {args.command}: error: {e}", file=sys.stderr)
        return _leave_group(1)
    except BrokenPipeError:  # `convzoo list | head`
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def _leave_group(code: int) -> int:
    """`code`, returned; or, in a rank whose torchrun process group is still up (the error ended
    this rank alone), the process ended now with `code`, without the interpreter's teardown: with
    the group's threads alive it can abort (engine/distributed.py's docstring). torch.distributed
    is looked up, not imported: a command that never made a group must not pay for the import."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return code
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)
