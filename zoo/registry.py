"""The model registry: one explicit table of name -> (config dataclass, builder).

Importing this module imports no TensorFlow: builders import Keras when called.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zoo.config import apply_overrides
from zoo.errors import ConfigError, unknown_name
from zoo.models import bert_config, cnn, seq2seq_config


@dataclass(frozen=True)
class ModelEntry:
    """One registered model: its default config, its builder and a one-line description."""

    name: str
    default_config: Any
    builder: Callable[..., Any]
    task: str
    description: str


_REGISTRY: dict[str, ModelEntry] = {}


def register(entry: ModelEntry) -> None:
    """Add a model to the registry (names are unique)."""
    if entry.name in _REGISTRY:
        raise ConfigError(f"model '{entry.name}' is registered twice")
    _REGISTRY[entry.name] = entry


def list_models(task: str | None = None) -> list[str]:
    """Names of the registered models, optionally only those for one task."""
    return sorted(n for n, e in _REGISTRY.items() if task is None or e.task == task)


def get_entry(name: str) -> ModelEntry:
    """The registry entry of ``name``, or UnknownNameError with a suggestion."""
    try:
        return _REGISTRY[name]
    except KeyError as exc:
        raise unknown_name("model", name, _REGISTRY) from exc


def default_config(name: str) -> Any:
    """The default config dataclass of model ``name``."""
    return get_entry(name).default_config


def preset_config_for(task: str, kind: str) -> Callable[[str], Any]:
    """A ``name -> default config`` lookup that accepts only models of ``task`` (for a recipe's
    ``model`` field: ``--set model.preset=...``); ``kind`` names them in the error."""

    def lookup(name: str) -> Any:
        if get_entry(name).task != task:
            raise ConfigError(f"model '{name}' is not a {kind} preset; choose one of: " + ", ".join(list_models(task)))
        return default_config(name)

    return lookup


def make_config(name: str, **overrides: Any) -> Any:
    """Default config of ``name`` with ``overrides`` applied (dotted keys allowed)."""
    if "name" in overrides and overrides["name"] != name:
        raise ConfigError(f"cannot override 'name' of model '{name}'; build the other model by its own name")
    overrides.pop("name", None)
    return apply_overrides(default_config(name), overrides)


def build_from_config(config: Any, keras: Any = None) -> Any:
    """Build the Keras model a config describes (``keras`` or ``tf_keras`` module)."""
    entry = get_entry(config.name)
    if not isinstance(config, type(entry.default_config)):
        raise ConfigError(
            f"config of type {type(config).__name__} does not fit model '{config.name}', "
            f"which takes {type(entry.default_config).__name__}"
        )
    return entry.builder(config, keras)


def build(name: str, keras: Any = None, **overrides: Any) -> Any:
    """Build model ``name`` with config ``overrides``; ``keras`` picks Keras 3 or tf_keras."""
    return build_from_config(make_config(name, **overrides), keras)


register(ModelEntry("small_cnn", cnn.SmallCNNConfig(), cnn.build_small_cnn, "image_classification",
                    "two conv layers + dense, the MNIST baseline"))
for _depth in (18, 34, 50, 101, 152):
    register(ModelEntry(
        f"resnet{_depth}", cnn.resnet_config(_depth), cnn.build_resnet, "image_classification",
        f"ResNet-{_depth} {'v1.5 bottleneck' if _depth >= 50 else 'v1 basic blocks'}",
    ))


def _build_bert(cfg: Any, keras: Any = None) -> Any:
    from zoo.models.bert import build_bert  # imports Keras and keras-nlp: only when a BERT is built

    return build_bert(cfg, keras)


for _name, _preset in bert_config.BERT_PRESETS.items():
    register(ModelEntry(_name, _preset.config, _build_bert, "text_encoder", _preset.description))


def _build_seq2seq(cfg: Any, keras: Any = None) -> Any:
    from zoo.models.seq2seq import build_seq2seq  # imports Keras and keras-nlp: only when one is built

    return build_seq2seq(cfg, keras)


for _name, _preset in seq2seq_config.SEQ2SEQ_PRESETS.items():
    register(ModelEntry(_name, _preset.config, _build_seq2seq, "seq2seq", _preset.description))
register(ModelEntry("text_cnn", cnn.TextCNNConfig(), cnn.build_text_cnn, "text_classification",
                    "Kim 2014 TextCNN on token ids"))

__all__ = ["ModelEntry", "register", "list_models", "get_entry", "default_config", "make_config",
           "preset_config_for",
           "build", "build_from_config"]
