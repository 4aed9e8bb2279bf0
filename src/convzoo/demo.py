"""`make demo`: the zoo and its analysis, offline. (Training joins when the engine lands.)"""

from __future__ import annotations


def run_demo() -> None:
    from .cli import main
    print("$ convzoo list", flush=True)
    main(["list"])
    for name in ("alexnet_original", "googlenet_original"):
        print(f"\n$ convzoo summary {name} --blocks", flush=True)
        main(["summary", name, "--blocks"])
