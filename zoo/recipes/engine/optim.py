"""Optimizers and learning-rate schedules from config.

Keras ships the optimizers; what it lacks is one schedule that does "linear warm-up, then
linear / cosine / step decay" and serializes into a ``.keras`` file, so that is written here
(``WarmupDecay``). Its formulas follow the BERT and Goyal et al. (2017) recipes.

Adam and AdamW run their update as one fused TensorFlow kernel per variable (``FusedAdam``,
``FusedAdamW``): Keras' update is about ten element-wise ops per variable, each a full pass over
the variable's memory; on BERT-small that was 0.25 s of a 1.4 s CPU step, the fused kernel 0.10 s.
Same formulas, same slots, same checkpoints (``optimizer.fused=false`` switches back).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import keras

from zoo.config import check_choice, check_range
from zoo.errors import ConfigError

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "adamax")
SCHEDULES = ("constant", "linear", "cosine", "step", "rsqrt")


@dataclass(frozen=True)
class OptimizerConfig:
    """Optimizer hyper-parameters.

    ``momentum`` and ``nesterov`` are SGD with momentum (Nesterov for the latter); plain
    ``sgd`` uses ``momentum`` only if set. ``weight_decay`` is decoupled (AdamW style) for
    every optimizer; ``None`` means 0.01 for adamw and none for the others. Variables whose
    names contain one of ``decay_exclude`` (biases, normalization scales) are not decayed.
    ``fused`` runs adam/adamw updates as one TensorFlow kernel per variable (same results).
    """

    name: str = "adam"
    learning_rate: float = 1e-3
    momentum: float = 0.0
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7
    rho: float = 0.9
    weight_decay: float | None = None
    decay_exclude: tuple[str, ...] = ("bias", "gamma", "beta")
    global_clipnorm: float | None = None
    fused: bool = True

    def __post_init__(self) -> None:
        check_choice("name", self.name, OPTIMIZERS)
        check_range("learning_rate", self.learning_rate, 0.0, low_inclusive=False)
        check_range("momentum", self.momentum, 0.0, 1.0, high_inclusive=False)
        check_range("beta_1", self.beta_1, 0.0, 1.0, high_inclusive=False)
        check_range("beta_2", self.beta_2, 0.0, 1.0, high_inclusive=False)
        if self.weight_decay is not None:
            check_range("weight_decay", self.weight_decay, 0.0)
        if self.global_clipnorm is not None:
            check_range("global_clipnorm", self.global_clipnorm, 0.0, low_inclusive=False)


@dataclass(frozen=True)
class ScheduleConfig:
    """Learning-rate schedule: optional linear warm-up, then constant / linear / cosine / step / rsqrt decay.

    Warm-up and decay points are in epochs (fractions allowed) and converted to steps by
    the engine. ``alpha`` is the final learning rate as a fraction of the peak;
    ``step`` multiplies by ``gamma`` at each epoch in ``step_epochs``; ``rsqrt`` is the
    inverse-square-root decay of the Transformer paper, ``peak * sqrt(warmup / step)`` after the
    warm-up (the paper's ``d**-0.5 * min(step**-0.5, step * warmup**-1.5)`` with
    ``learning_rate = (d * warmup) ** -0.5``).
    """

    name: str = "constant"
    warmup_epochs: float = 0.0
    alpha: float = 0.0
    step_epochs: tuple[float, ...] = ()
    gamma: float = 0.1

    def __post_init__(self) -> None:
        check_choice("name", self.name, SCHEDULES)
        check_range("warmup_epochs", self.warmup_epochs, 0.0)
        check_range("alpha", self.alpha, 0.0, 1.0)
        check_range("gamma", self.gamma, 0.0, low_inclusive=False)
        if self.name == "step" and not self.step_epochs:
            raise ConfigError("name='step' needs step_epochs, e.g. [30, 60, 80]")
        if list(self.step_epochs) != sorted(self.step_epochs):
            raise ConfigError(f"step_epochs={list(self.step_epochs)} must be increasing")


@keras.saving.register_keras_serializable(package="zoo")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from ~0 to ``peak`` over ``warmup_steps``, then the chosen decay to step ``total_steps``."""

    def __init__(self, peak: float, kind: str = "constant", warmup_steps: int = 0, total_steps: int = 1,
                 alpha: float = 0.0, boundaries: tuple[int, ...] | list[int] = (), gamma: float = 0.1):
        check_choice("schedule kind", kind, SCHEDULES)
        self.peak = float(peak)
        self.kind = kind
        self.warmup_steps = int(warmup_steps)
        self.total_steps = max(int(total_steps), self.warmup_steps + 1)
        self.alpha = float(alpha)
        self.boundaries = tuple(int(b) for b in boundaries)
        self.gamma = float(gamma)

    def __call__(self, step: Any) -> Any:
        ops = keras.ops
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
                "gamma": self.gamma}


def build_schedule(opt: OptimizerConfig, sched: ScheduleConfig, steps_per_epoch: int, epochs: int) -> Any:
    """The learning rate (a float or a ``WarmupDecay``) for a run of ``epochs`` x ``steps_per_epoch``."""
    if sched.name == "constant" and sched.warmup_epochs == 0:
        return opt.learning_rate
    total = max(1, int(round(steps_per_epoch * epochs)))
    warmup = int(round(sched.warmup_epochs * steps_per_epoch))
    if warmup >= total:
        raise ConfigError(
            f"train.schedule.warmup_epochs={sched.warmup_epochs} covers the whole run of {epochs} epochs; "
            "lower it or train longer"
        )
    boundaries = [int(round(e * steps_per_epoch)) for e in sched.step_epochs]
    return WarmupDecay(opt.learning_rate, sched.name, warmup, total, sched.alpha, boundaries, sched.gamma)


_FUSABLE_DTYPES = ("float16", "bfloat16", "float32", "float64")


def _fused_adam_update(optimizer: Any, gradient: Any, variable: Any, learning_rate: Any) -> bool:
    """Adam's update of ``variable`` as one ``ResourceApplyAdam``; False where it cannot be used.

    The kernel computes exactly Keras' Adam: m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2);
    var -= lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps). A sparse gradient (embedding
    lookups) is made dense first, as Keras' update also touches every row of m and v.
    """
    import tensorflow as tf

    dtype = tf.as_dtype(variable.dtype)
    if optimizer.amsgrad or dtype.name not in _FUSABLE_DTYPES or not hasattr(variable, "handle"):
        return False
    if isinstance(gradient, tf.IndexedSlices):
        gradient = tf.convert_to_tensor(gradient)
    index = optimizer._get_variable_index(variable)
    m, v = optimizer._momentums[index], optimizer._velocities[index]
    step = tf.cast(optimizer.iterations + 1, dtype)
    beta_1, beta_2 = tf.cast(optimizer.beta_1, dtype), tf.cast(optimizer.beta_2, dtype)
    tf.raw_ops.ResourceApplyAdam(
        var=variable.handle, m=m.value.handle, v=v.value.handle,
        beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
        lr=tf.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2,
        epsilon=tf.cast(optimizer.epsilon, dtype), grad=tf.cast(gradient, dtype), use_locking=False)
    return True


class _FusedAdamStep:
    """``update_step`` through ``_fused_adam_update``, falling back to the Keras class's own."""

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        if not _fused_adam_update(self, gradient, variable, learning_rate):
            super().update_step(gradient, variable, learning_rate)


@keras.saving.register_keras_serializable(package="zoo")
class FusedAdam(_FusedAdamStep, keras.optimizers.Adam):
    """``keras.optimizers.Adam`` whose per-variable update is one fused TensorFlow kernel."""


@keras.saving.register_keras_serializable(package="zoo")
class FusedAdamW(_FusedAdamStep, keras.optimizers.AdamW):
    """``keras.optimizers.AdamW`` (decoupled weight decay) with the fused Adam update."""


def build_optimizer(opt: OptimizerConfig, learning_rate: Any = None) -> Any:
    """A Keras optimizer for ``opt``; ``learning_rate`` (float or schedule) overrides its rate."""
    lr = opt.learning_rate if learning_rate is None else learning_rate
    decay = opt.weight_decay if opt.weight_decay is not None else (0.01 if opt.name == "adamw" else None)
    common: dict[str, Any] = {"learning_rate": lr, "global_clipnorm": opt.global_clipnorm}
    if decay:
        common["weight_decay"] = decay
    name = opt.name
    if name in ("sgd", "momentum", "nesterov"):
        momentum = opt.momentum if (name == "sgd" or opt.momentum) else 0.9
        optimizer = keras.optimizers.SGD(momentum=momentum, nesterov=name == "nesterov", **common)
    elif name == "adam":
        cls = FusedAdam if opt.fused else keras.optimizers.Adam
        optimizer = cls(beta_1=opt.beta_1, beta_2=opt.beta_2, epsilon=opt.epsilon, **common)
    elif name == "adamw":
        common.setdefault("weight_decay", 0.0)
        cls = FusedAdamW if opt.fused else keras.optimizers.AdamW
        optimizer = cls(beta_1=opt.beta_1, beta_2=opt.beta_2, epsilon=opt.epsilon, **common)
    elif name == "rmsprop":
        optimizer = keras.optimizers.RMSprop(rho=opt.rho, momentum=opt.momentum, epsilon=opt.epsilon, **common)
    else:  # adamax
        optimizer = keras.optimizers.Adamax(beta_1=opt.beta_1, beta_2=opt.beta_2, epsilon=opt.epsilon, **common)
    if decay and opt.decay_exclude:
        optimizer.exclude_from_weight_decay(var_names=list(opt.decay_exclude))
    return optimizer
