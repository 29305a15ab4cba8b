"""kzoo: a Keras/TensorFlow model zoo with recipes and verified serving exports.

    import zoo
    zoo.list_models()                      # ['resnet18', ..., 'small_cnn', 'text_cnn']
    model = zoo.build("resnet18", num_classes=10, input_shape=(32, 32, 3), stem="small")
    model = zoo.load("runs/image_classify-.../model.keras")

Importing ``zoo`` registers the models and imports no TensorFlow.
"""

from __future__ import annotations

from typing import Any

from zoo.errors import ConfigError, DataError, DeviceError, ExportError, UnknownNameError, ZooError
from zoo.registry import build, build_from_config, default_config, list_models, make_config

__version__ = "0.1.0"


def load(path: str, compile: bool = True) -> Any:
    """Load a ``.keras`` file saved by the zoo, or a finished run dir's model (``safe_mode=True``)."""
    from zoo.saving import load_model

    return load_model(path, compile)


def import_hf_bert(directory: str, sequence_length: int = 128, **overrides: Any) -> tuple[Any, Any]:
    """Load a Hugging Face BERT directory as ``(BertBackbone, BertPreprocessor)``; see zoo.checkpoints."""
    from zoo.checkpoints import import_hf_bert as _import

    return _import(directory, sequence_length, **overrides)


__all__ = [
    "import_hf_bert",
    "build", "build_from_config", "default_config", "list_models", "make_config", "load",
    "ZooError", "ConfigError", "DataError", "DeviceError", "ExportError", "UnknownNameError",
]
