"""Base models: a registry of backbones (local files only) and the classifier edged adapts.

Importing the package registers the built-ins; `load_model` and `list_models` are the API.
"""

from edged.models import mobilenet_v2, text  # noqa: F401  (importing registers the built-in models)
from edged.models.classifier import Classifier
from edged.models.registry import LoadedModel, ModelInfo, list_models, load_model, register

__all__ = ["Classifier", "LoadedModel", "ModelInfo", "list_models", "load_model", "register"]
