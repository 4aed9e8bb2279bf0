"""`convzoo serve`: a web page and an HTTP API for classification (docs/serve.md).

    model.py    ServedModel: one model + weights on the fast inference path, with the same
                decoding (data/images.py), preprocessing (the WeightSpec's eval transform) and
                result format (engine.predict.describe) as `convzoo predict`
    batcher.py  dynamic batching: a bounded queue and one inference thread per model
    metrics.py  the Prometheus text format (counters, gauges, histograms)
    app.py      the FastAPI application: the page, /v1/predict, /v1/models, health, metrics
    static/     the page itself (plain HTML/CSS/JS, no build step, nothing from a CDN)

FastAPI, uvicorn and python-multipart come with the `convzoo[serve]` extra; `require_extra`
turns their absence into one line naming it.
"""

from __future__ import annotations

from ..errors import UserError

EXTRA_HINT = "convzoo serve needs FastAPI and uvicorn: pip install convzoo[serve]"


def require_extra() -> None:
    """UserError naming `pip install convzoo[serve]` when a serving dependency is missing."""
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn", "multipart") if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"{EXTRA_HINT} (missing: {', '.join(missing)})")
