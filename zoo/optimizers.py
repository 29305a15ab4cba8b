"""The learning-rate schedule and optimizers that training compiles into models, so that
``zoo.load`` of a compiled ``.keras`` file finds them (registered under the ``zoo>`` package).

Keras ships the optimizers; what it lacks is one schedule that does "linear warm-up, then
linear / cosine / step / inverse-square-root decay" and serializes into a ``.keras`` file
(``WarmupDecay``). Its formulas follow the BERT and Goyal et al. (2017) recipes.

Adam and AdamW run their update as one fused TensorFlow kernel per variable (``FusedAdam``,
``FusedAdamW``): Keras' update is about ten element-wise ops per variable, each a full pass over
the variable's memory; on BERT-small that was 0.25 s of a 1.4 s CPU step, the fused kernel 0.10 s.
Same formulas, same slots, same checkpoints. The kernel call reads optimizer internals, so it lives
in ``zoo.keras_compat``.
"""

from __future__ import annotations

import math
from typing import Any

import keras

from zoo.config import check_choice

KINDS = ("constant", "linear", "cosine", "step", "rsqrt")  # the decays WarmupDecay implements


@keras.saving.register_keras_serializable(package="zoo")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from ~0 to ``peak`` over ``warmup_steps``, then the chosen decay to step ``total_steps``."""

    def __init__(self, peak: float, kind: str = "constant", warmup_steps: int = 0, total_steps: int = 1,
                 alpha: float = 0.0, boundaries: tuple[int, ...] | list[int] = (), gamma: float = 0.1,
                 accumulation_steps: int = 1):
        check_choice("schedule kind", kind, KINDS)
        # Keras calls a schedule with the batch count even under gradient accumulation; the schedule's
        # steps are optimizer updates, one per accumulation_steps batches.
        self.accumulation_steps = max(1, int(accumulation_steps))
        self.peak = float(peak)
        self.kind = kind
        self.warmup_steps = int(warmup_steps)
        self.total_steps = max(int(total_steps), self.warmup_steps + 1)
        self.alpha = float(alpha)
        self.boundaries = tuple(int(b) for b in boundaries)
        self.gamma = float(gamma)

    def __call__(self, step: Any) -> Any:
        ops = keras.ops
        if self.accumulation_steps > 1:
            step = ops.floor_divide(step, self.accumulation_steps)
        step = ops.cast(step, "float32")
        peak = ops.cast(self.peak, "float32")
        decay_span = float(self.total_steps - self.warmup_steps)
        progress = ops.clip((step - self.warmup_steps) / decay_span, 0.0, 1.0)
        if self.kind == "linear":
            lr = peak * (1.0 - (1.0 - self.alpha) * progress)
        elif self.kind == "cosine":
            lr = peak * (self.alpha + (1.0 - self.alpha) * 0.5 * (1.0 + ops.cos(math.pi * progress)))
        elif self.kind == "rsqrt":
            span = float(max(self.warmup_steps, 1))
            lr = peak * ops.sqrt(span / ops.maximum(step + 1.0, span))
        elif self.kind == "step":
            passed = sum(ops.cast(step >= b, "float32") for b in self.boundaries) if self.boundaries else 0.0
            lr = peak * ops.power(self.gamma, passed)
        else:
            lr = peak * ops.ones_like(step)
        if self.warmup_steps > 0:
            warm = peak * (step + 1.0) / float(self.warmup_steps)
            lr = ops.where(step < self.warmup_steps, warm, lr)
        return lr

    def get_config(self) -> dict[str, Any]:
        return {"peak": self.peak, "kind": self.kind, "warmup_steps": self.warmup_steps,
                "total_steps": self.total_steps, "alpha": self.alpha, "boundaries": list(self.boundaries),
                "gamma": self.gamma, "accumulation_steps": self.accumulation_steps}


class _FusedAdamStep:
    """``update_step`` through ``keras_compat.fused_adam_update``, falling back to the Keras class's own."""

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        from zoo.keras_compat import fused_adam_update

        if not fused_adam_update(self, gradient, variable, learning_rate):
            super().update_step(gradient, variable, learning_rate)


@keras.saving.register_keras_serializable(package="zoo")
class FusedAdam(_FusedAdamStep, keras.optimizers.Adam):
    """``keras.optimizers.Adam`` whose per-variable update is one fused TensorFlow kernel."""


@keras.saving.register_keras_serializable(package="zoo")
class FusedAdamW(_FusedAdamStep, keras.optimizers.AdamW):
    """``keras.optimizers.AdamW`` (decoupled weight decay) with the fused Adam update."""
