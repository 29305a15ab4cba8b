"""kzoo: a Keras/TensorFlow model zoo with recipes and verified serving exports.

    import zoo
    zoo.list_models()                      # ['resnet18', ..., 'small_cnn', 'text_cnn']
    model = zoo.build("resnet18", num_classes=10, input_shape=(32, 32, 3), stem="small")
    model = zoo.load("runs/image_classify-.../model.keras")

Importing ``zoo`` registers the models and imports no TensorFlow.
"""

from __future__ import annotations

import os
from typing import Any

from zoo.errors import ConfigError, DataError, DeviceError, ExportError, UnknownNameError, ZooError
from zoo.registry import build, build_from_config, default_config, list_models, make_config

__version__ = "0.1.0"


def load(path: str, compile: bool = True) -> Any:
    """Load a ``.keras`` file saved by the zoo (``safe_mode=True``: no arbitrary code runs)."""
    if not os.path.exists(path):
        raise ZooError(f"no model file at {path!r}; expected a .keras file such as runs/<run>/model.keras")
    if os.path.isdir(path):
        candidate = os.path.join(path, "model.keras")
        if not os.path.isfile(candidate):
            raise ZooError(f"{path!r} is a directory without model.keras; pass the .keras file or a finished run dir")
        path = candidate
    if not path.endswith(".keras"):
        raise ZooError(f"{path!r} is not a .keras file; zoo.load reads Keras v3 .keras archives")
    import keras

    # Register the zoo's serializable classes (schedules, BERT models, the preprocessor).
    from zoo import tokenizers  # noqa: F401
    from zoo.models import bert  # noqa: F401
    from zoo.recipes.engine import optim  # noqa: F401

    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=True)
    except (ValueError, OSError, TypeError) as exc:
        raise ZooError(f"could not load {path!r}: {exc}") from None


def import_hf_bert(directory: str, sequence_length: int = 128, **overrides: Any) -> tuple[Any, Any]:
    """Load a Hugging Face BERT directory as ``(BertBackbone, BertPreprocessor)``; see zoo.checkpoints."""
    from zoo.checkpoints import import_hf_bert as _import

    return _import(directory, sequence_length, **overrides)


__all__ = [
    "import_hf_bert",
    "build", "build_from_config", "default_config", "list_models", "make_config", "load",
    "ZooError", "ConfigError", "DataError", "DeviceError", "ExportError", "UnknownNameError",
]
