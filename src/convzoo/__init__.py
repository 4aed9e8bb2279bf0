"""convzoo: the classic ImageNet CNN lineage, transcribed from the papers."""

from .registry import create_model, list_models, model_info
from .weights import WeightSpec, load_weights, save_weights

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "model_info", "load_weights", "save_weights",
           "WeightSpec", "__version__"]
