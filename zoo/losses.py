"""Losses and metrics that training compiles into models, so that ``zoo.load`` of a compiled
``.keras`` file finds them (registered under the ``zoo>`` package)."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="zoo")
class LabelSmoothedCrossEntropy(keras.losses.Loss):
    """Cross-entropy against targets smoothed by ``label_smoothing`` (Szegedy et al. 2016), from logits.

    ``(1 - e) * -log p(y) + e * mean_v(-log p(v))``. Padding is masked out by the sample weights
    the translate recipe attaches (0 at padded positions); the mean is over weighted tokens.
    """

    def __init__(self, label_smoothing: float = 0.1, name: str = "label_smoothed_cross_entropy",
                 reduction: str = "mean_with_sample_weight", **kwargs: Any):
        super().__init__(name=name, reduction=reduction, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        log_probs = ops.log_softmax(ops.cast(y_pred, "float32"), axis=-1)
        y_true = ops.cast(y_true, "int32")
        nll = -ops.squeeze(ops.take_along_axis(log_probs, y_true[..., None], axis=-1), axis=-1)
        if not self.label_smoothing:
            return nll
        uniform = -ops.mean(log_probs, axis=-1)
        return (1.0 - self.label_smoothing) * nll + self.label_smoothing * uniform

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="zoo")
class DistillationLoss(keras.losses.Loss):
    """``alpha * CE(label, s) + (1 - alpha) * T^2 * KL(p_t || p_s)`` at temperature ``T``.

    ``y_true`` packs ``[label, teacher logits...]`` per example (float), so the loss needs no second input.
    """

    def __init__(self, alpha: float = 0.5, temperature: float = 2.0, name: str = "distillation", **kwargs: Any):
        super().__init__(name=name, **kwargs)
        self.alpha, self.temperature = float(alpha), float(temperature)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        ops = keras.ops
        y_pred = ops.cast(y_pred, "float32")
        labels = ops.cast(y_true[:, 0], "int32")
        hard = keras.losses.sparse_categorical_crossentropy(labels, y_pred, from_logits=True)
        t = self.temperature
        teacher = ops.log_softmax(ops.cast(y_true[:, 1:], "float32") / t, axis=-1)
        student = ops.log_softmax(y_pred / t, axis=-1)
        soft = ops.sum(ops.exp(teacher) * (teacher - student), axis=-1) * (t * t)
        return self.alpha * hard + (1.0 - self.alpha) * soft

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "alpha": self.alpha, "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="zoo")
def packed_label_accuracy(y_true: Any, y_pred: Any) -> Any:
    """Accuracy against the label in column 0 of the packed targets."""
    return keras.metrics.sparse_categorical_accuracy(keras.ops.cast(y_true[:, 0], "int32"), y_pred)
