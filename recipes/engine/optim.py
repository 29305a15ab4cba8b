"""Optimizer and learning-rate schedule configs, and the builders that turn them into Keras objects.

The serializable pieces (``WarmupDecay``, ``FusedAdam``, ``FusedAdamW``) live in ``zoo.optimizers``,
so that loading a compiled ``.keras`` file needs nothing from the recipes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras

from zoo.config import check_choice, check_range
from zoo.errors import ConfigError
from zoo.optimizers import SCHEDULES, FusedAdam, FusedAdamW, WarmupDecay

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "adamax")


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


def check_optimizer_support(opt: OptimizerConfig) -> None:
    """Fail before a run writes anything when the fused Adam update cannot run on this Keras
    (``zoo.keras_compat`` refuses versions it was not written for, naming ``fused=false``)."""
    if opt.fused and opt.name in ("adam", "adamw"):
        import zoo.keras_compat  # noqa: F401


def build_optimizer(opt: OptimizerConfig, learning_rate: Any = None) -> Any:
    """A Keras optimizer for ``opt``; ``learning_rate`` (float or schedule) overrides its rate."""
    check_optimizer_support(opt)
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
