"""Optimizer and learning-rate schedule configs, and the builders that turn them into Keras objects.

The serializable pieces (``WarmupDecay``, ``FusedAdam``, ``FusedAdamW``) live in ``zoo.optimizers``,
so that loading a compiled ``.keras`` file needs nothing from the recipes.
"""

from __future__ import annotations

from typing import Any

import keras

from zoo.errors import ConfigError
from zoo.optimizers import FusedAdam, FusedAdamW, WarmupDecay
from zoo.recipes.engine.config import OptimizerConfig, ScheduleConfig


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
