"""Loading ``.keras`` files: every Keras-serializable class of the zoo is registered before a load.

A ``.keras`` file names its custom classes (``zoo>BertClassifier``, ``zoo>WarmupDecay``...); Keras
finds them only if the module defining them was imported. :func:`serializable_modules` lists every
such module: the engine's own (optimizers, schedules, losses) and those each task plugin names
(``zoo.tasks``); a test checks that no other module registers a class. :func:`load_model` imports
them all first, so a model of any family loads in a fresh process.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from zoo.errors import ZooError

# What any training run's compiled model may name, whatever its task.
ENGINE_MODULES = (
    "zoo.optimizers",       # WarmupDecay, FusedAdam, FusedAdamW
    "zoo.losses",           # LabelSmoothedCrossEntropy, DistillationLoss, packed_label_accuracy
)


def serializable_modules() -> tuple[str, ...]:
    """Every module whose import registers Keras-serializable classes: the engine's and every task's."""
    from zoo import tasks

    return tuple(dict.fromkeys((*ENGINE_MODULES, *tasks.serializable_modules())))


def register_serializables() -> None:
    """Import every module that registers Keras-serializable classes (idempotent)."""
    for name in serializable_modules():
        importlib.import_module(name)


def load_model(path: str, compile: bool = True) -> Any:
    """Load a ``.keras`` file saved by the zoo, or the ``model.keras`` of a finished run dir
    (``safe_mode=True``: no arbitrary code runs)."""
    from zoo.rundir import RunDir

    if not os.path.exists(path):
        raise ZooError(f"no model file at {path!r}; expected a .keras file such as runs/<run>/{RunDir.MODEL}")
    if os.path.isdir(path):
        run = RunDir(path)
        if not run.is_finished:
            raise ZooError(f"{path!r} is a directory without {RunDir.MODEL}; pass the .keras file or a finished "
                           "run dir")
        path = run.model_path
    if not path.endswith(".keras"):
        raise ZooError(f"{path!r} is not a .keras file; zoo.load reads Keras v3 .keras archives")
    import keras

    register_serializables()
    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=True)
    except (ValueError, OSError, TypeError) as exc:
        raise ZooError(f"could not load {path!r}: {exc}") from exc
