"""Mixed precision as a context manager: the global Keras policy is set and always restored."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from zoo.errors import unknown_name
from zoo.recipes.engine.config import PRECISIONS


@contextlib.contextmanager
def precision_scope(policy: str) -> Iterator[str]:
    """Use Keras dtype policy ``policy`` inside the block, restoring the previous one after.

    Models built inside keep their policy afterwards. Classifier layers of zoo models are
    pinned to float32, so logits and softmax stay float32 under every policy; Keras'
    ``compile`` wraps the optimizer in a ``LossScaleOptimizer`` for ``mixed_float16``.
    """
    import keras

    if policy not in PRECISIONS:
        raise unknown_name("precision", policy, PRECISIONS)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield policy
    finally:
        keras.config.set_dtype_policy(previous)


def has_loss_scaling(model: Any) -> bool:
    """True when the compiled model's optimizer scales the loss (float16 training)."""
    import keras

    return isinstance(getattr(model, "optimizer", None), keras.optimizers.LossScaleOptimizer)
