"""The command layer: one module per `convzoo` sub-command.

Each module defines

    HELP: str                                   # one line for `convzoo --help`
    def add_arguments(p: argparse.ArgumentParser) -> None
    def run(args: argparse.Namespace) -> None   # UserError for bad input -> one line, exit 2

and holds the command's orchestration: it parses its flags into typed values, calls the
engine / data / analysis / interop layers, and prints. Nothing below this package imports
it. Heavy modules (torch, the engine) are imported inside `run`, so `convzoo --help` stays
instant. `convzoo.cli` dispatches through an explicit table of these modules.
"""
