"""convzoo: the classic ImageNet CNN lineage, transcribed from the papers."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = [
    "create_model",
    "list_models",
    "model_info",
    "load_weights",
    "save_weights",
    "WeightSpec",
    "__version__",
]

# The public API is imported on first use, so `convzoo --help` does not wait for torch.
_API = {
    "create_model": "factory",
    "list_models": "registry",
    "model_info": "registry",
    "load_weights": "weights",
    "save_weights": "weights",
    "WeightSpec": "weights",
}

if TYPE_CHECKING:
    from .factory import create_model
    from .registry import list_models, model_info
    from .weights import WeightSpec, load_weights, save_weights


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
