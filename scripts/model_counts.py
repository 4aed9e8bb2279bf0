"""Regenerate src/convzoo/models/counts.json (the parameter and MAC counts `convzoo list` shows).

    PYTHONPATH=src python scripts/model_counts.py           # rewrite the file
    PYTHONPATH=src python scripts/model_counts.py --check   # exit 1 when it is stale

Run it after adding or changing a model; tests/test_cli_consistency.py checks the file against the models.
"""

import argparse
import json
import sys

from convzoo.commands.list import COUNTS, count
from convzoo.registry import list_models


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    counts = {name: count(name) for name in list_models("*")}
    text = json.dumps(counts, indent=1, sort_keys=True) + "\n"
    if args.check:
        with open(COUNTS) as f:
            stale = f.read() != text
        print(f"{COUNTS}: {'stale: run scripts/model_counts.py' if stale else 'up to date'}")
        return int(stale)
    with open(COUNTS, "w") as f:
        f.write(text)
    print(f"wrote {COUNTS} ({len(counts)} models)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
