"""Base models: a registry of backbones (local files only) and the classifier edged adapts.

The built-ins register themselves when `edged.models.loader` imports them; `load_model` and
`list_models` are the API.
"""

from edged.models.classifier import Classifier
from edged.models.loader import LoadedModel, load_model
from edged.models.registry import ModelInfo, list_models, register

__all__ = ["Classifier", "LoadedModel", "ModelInfo", "list_models", "load_model", "register"]
