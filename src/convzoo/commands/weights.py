"""`convzoo weights [PATTERN]`: the catalog of published weights, and fetching them by name.

convzoo weights resnet50          # entries whose name contains "resnet50" (or a glob: 'resnet*.tv*')
convzoo weights --json            # every entry with all its facts, and whether it is cached
convzoo weights --download NAME   # fetch, verify and convert now (what first use does)
convzoo weights --path NAME       # where NAME's converted weights and its download live
"""

from __future__ import annotations

import argparse
import os

HELP = "published weights by name: list the catalog, download/convert an entry, show cache paths"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default="*", help="name filter: a glob, or text the name contains")
    p.add_argument("--json", action="store_true", help="one JSON document with every fact of each entry")
    p.add_argument(
        "--download", metavar="NAME", help="fetch, verify and convert NAME now (default: list only)"
    )
    p.add_argument(
        "--path",
        metavar="NAME",
        help="print NAME's cached weights path and download path (default: list only)",
    )


def run(args: argparse.Namespace) -> None:
    from ..errors import UserError
    from ..hub import catalog

    name = args.download or args.path
    if name:
        entry = catalog.get(name)
        if entry is None:
            raise catalog.unknown(name)
        return _download(entry) if args.download else _paths(entry, args.json)
    entries = catalog.find(args.pattern)
    if not entries:
        raise UserError(f"no catalog entry matches {args.pattern!r}; `convzoo weights` lists them all")
    if args.json:
        from ._common import print_json

        return print_json([_record(e) for e in entries])
    _table(entries)


def _download(entry) -> None:
    from ..hub import resolve_weights

    print(resolve_weights(entry.name))


def _paths(entry, as_json: bool) -> None:
    from ..hub import cached_path, download_path

    paths = {
        "weights": cached_path(entry),
        "cached": os.path.isfile(cached_path(entry)),
        "download": download_path(entry),
        "url": entry.url,
    }
    if as_json:
        from ._common import print_json

        return print_json(paths)
    print(
        f"weights  {paths['weights']} ({'cached' if paths['cached'] else 'not cached'})\n"
        f"download {paths['download']} (a manual download of {entry.url} is picked up here)"
    )


def _record(entry) -> dict:
    from dataclasses import asdict

    from ..hub import cached_path

    return {**asdict(entry), "cached": os.path.isfile(cached_path(entry))}


def _table(entries) -> None:
    from ..hub import cached_path

    rows = [
        (
            e.name,
            e.source,
            _pct(e.published.get("top1")),
            _pct(e.published.get("top5")),
            e.dataset,
            _size(e),
            "yes" if os.path.isfile(cached_path(e)) else "",
        )
        for e in entries
    ]
    head = ("name", "source", "top1", "top5", "dataset", "size", "cached")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def _pct(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def _size(entry) -> str:
    if entry.size_bytes:
        return f"{entry.size_bytes / 2**20:.1f} MiB"
    return f"~{entry.size_mib:.0f} MiB" if entry.size_mib else "?"
