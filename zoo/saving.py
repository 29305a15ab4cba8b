"""Loading ``.keras`` files: every Keras-serializable class of the zoo is registered here, in one place.

A ``.keras`` file names its custom classes (``zoo>BertClassifier``, ``zoo>WarmupDecay``...); Keras
finds them only if the module defining them was imported. :data:`SERIALIZABLE_MODULES` lists
every such module (a test checks that no other module registers a class), and :func:`load_model`
imports them all first, so a model of any family loads in a fresh process.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from zoo.errors import ZooError

SERIALIZABLE_MODULES = (
    "zoo.models.bert",      # BertBackbone, BertClassifier, BertMaskedLM
    "zoo.models.encoder",   # FastTransformerEncoder
    "zoo.models.fused",     # gelu_approximate (an activation a saved layer may name)
    "zoo.models.seq2seq",   # Seq2SeqTransformer
    "zoo.tokenizers",       # BertPreprocessor
    "zoo.optimizers",       # WarmupDecay, FusedAdam, FusedAdamW
    "zoo.losses",           # LabelSmoothedCrossEntropy, DistillationLoss, packed_label_accuracy
)


def register_serializables() -> None:
    """Import every module that registers Keras-serializable classes (idempotent)."""
    for name in SERIALIZABLE_MODULES:
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
