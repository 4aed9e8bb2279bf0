"""Helpers every command shares: JSON output and flag parsing."""

from __future__ import annotations

import json
import sys

from ..errors import UserError

WORKERS_HELP = "parallel image decoders/loaders; 0 = decode in the main process"
DEVICE_HELP = "auto (default: cuda when available, else cpu), cpu, cuda, cuda:N"
JSON_HELP = "print one JSON document on stdout (logs and progress go to stderr)"
VAL_SPLIT_NAME_HELP = "a folder's validation sub-folder (default: the first of val, validation, valid, test)"


def print_json(obj) -> None:
    """`--json`: exactly one JSON document on stdout (logs go to stderr)."""
    json.dump(obj, sys.stdout, indent=1)
    sys.stdout.write("\n")


def int_list(text: str, flag: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{flag} expects comma-separated integers, got {text!r}") from None


def meta_model(name: str, **kw):
    """The model on the meta device: shapes and counts without allocating weights."""
    import torch

    from ..registry import create_model

    with torch.device("meta"):
        return create_model(name, **kw)
