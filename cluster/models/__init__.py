"""Where model weights come from: built-in models, local folders and hub ids."""

from cluster.models.builtin import BUILTIN_MODELS, BuiltinModel, prepare_builtin_model
from cluster.models.cache_dir import resolve_cache_dir
from cluster.models.sources import (
    ModelSourceError,
    model_identity,
    resolve_model_path,
    validate_model_source,
)

__all__ = [
    "BUILTIN_MODELS",
    "BuiltinModel",
    "ModelSourceError",
    "model_identity",
    "prepare_builtin_model",
    "resolve_cache_dir",
    "resolve_model_path",
    "validate_model_source",
]
