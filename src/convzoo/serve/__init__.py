"""`convzoo serve`: a web page and an HTTP API for classification (docs/serve.md).

    model.py    ServedModel: one model + weights on the fast inference path, with the same
                decoding (data/images.py), preprocessing (the WeightSpec's eval transform) and
                result format (inference.predict.describe) as `convzoo predict`
    batcher.py  dynamic batching: a bounded queue and one inference thread per model
    metrics.py  the Prometheus text format (counters, gauges, histograms)
    app.py      the FastAPI application: the page, /v1/predict, /v1/models, health, metrics
    launch.py   what the command runs: ServeJob (every setting checked when built), the models'
                ids, build_app(job) and launch(job) (uvicorn, graceful shutdown, escaped logs)
    static/     the page itself (plain HTML/CSS/JS, no build step, nothing from a CDN)

FastAPI, uvicorn and python-multipart come with the `convzoo[serve]` extra; `require_extra`
turns their absence into one line naming it.
"""

from __future__ import annotations

import importlib.util

from ..errors import UserError

EXTRA_HINT = "convzoo serve needs FastAPI and uvicorn: pip install convzoo[serve]"


def require_extra() -> None:
    """UserError naming `pip install convzoo[serve]` when a serving dependency is missing."""
    missing = [m for m in ("fastapi", "uvicorn", "multipart") if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"{EXTRA_HINT} (missing: {', '.join(missing)})")


def printable(text: str) -> str:
    """`text` safe for a terminal: control characters (ANSI escapes, carriage returns, bidi
    overrides) written as \\x1b-style escapes. Labels and file names come from weights files
    and uploads, which anyone can write."""
    return "".join(
        c if c.isprintable() else (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
        for c in str(text)
    )
