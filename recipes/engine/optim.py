"""Optimizer and learning-rate schedule configs, and the builders that turn them into Keras objects.

The serializable pieces (``WarmupDecay``, ``FusedAdam``, ``FusedAdamW``) live in ``zoo.optimizers``,
so that loading a compiled ``.keras`` file needs nothing from the recipes.
"""

from __future__ import annotations

import logging
from typing import Any

import keras

from zoo.errors import ConfigError
from zoo.optimizers import FusedAdam, FusedAdamW, WarmupDecay
from zoo.recipes.engine.config import HYPERPARAMETERS, OptimizerConfig, ScheduleConfig

log = logging.getLogger(__name__)


def build_schedule(opt: OptimizerConfig, sched: ScheduleConfig, steps_per_epoch: int, epochs: int,
                   accumulation_steps: int = 1, total_updates: int = 0) -> Any:
    """The learning rate (a float or a ``WarmupDecay``) for a run of ``epochs`` x ``steps_per_epoch`` batches
    (or of ``total_updates`` optimizer steps, in step mode; ``steps_per_epoch`` is then one pass over the
    data, the unit of ``warmup_epochs`` and ``step_epochs``).

    With gradient accumulation the schedule's steps are optimizer updates (one per
    ``accumulation_steps`` batches), so warm-up and decay span the same part of the run.
    """
    if sched.name == "constant" and sched.warmup_epochs == 0 and sched.warmup_steps == 0:
        return opt.learning_rate
    updates_per_epoch = steps_per_epoch / accumulation_steps
    total = total_updates or max(1, int(round(updates_per_epoch * epochs)))
    warmup = sched.warmup_steps or int(round(sched.warmup_epochs * updates_per_epoch))
    if total_updates and not sched.warmup_steps and warmup >= total:
        # Step mode on a large dataset: a warm-up in epochs (the recipes' defaults are 0.3-1 epoch) can outlast
        # the whole run (one epoch of a real corpus is millions of steps). Warm up over a tenth of the run.
        capped = max(1, total // 10)
        log.warning("train.schedule.warmup_epochs=%g is %d optimizer steps, at least the run's %d (train.steps): "
                    "warming up over %d steps (a tenth of the run) instead; set train.schedule.warmup_steps to "
                    "choose", sched.warmup_epochs, warmup, total, capped)
        warmup = capped
    if warmup >= total:
        what = f"warmup_steps={sched.warmup_steps}" if sched.warmup_steps else f"warmup_epochs={sched.warmup_epochs}"
        run = f"{total} steps" if total_updates else f"{epochs} epochs"
        raise ConfigError(f"train.schedule.{what} covers the whole run of {run}; lower it or train longer")
    boundaries = [int(round(e * updates_per_epoch)) for e in sched.step_epochs]
    return WarmupDecay(opt.learning_rate, sched.name, warmup, total, sched.alpha, boundaries, sched.gamma,
                       accumulation_steps=accumulation_steps)


def check_optimizer_support(opt: OptimizerConfig) -> None:
    """Fail before a run writes anything when the fused Adam update cannot run on this Keras
    (``zoo.keras_compat`` refuses versions it was not written for, naming ``fused=false``)."""
    if opt.fused and opt.name in ("adam", "adamw"):
        import zoo.keras_compat  # noqa: F401


# Keras class of each optimizer name (sgd, momentum, nesterov, adam and adamw are built below).
KERAS_CLASSES = {
    "rmsprop": "RMSprop", "adamax": "Adamax", "adagrad": "Adagrad", "adadelta": "Adadelta", "nadam": "Nadam",
    "lamb": "Lamb", "lion": "Lion", "ftrl": "Ftrl", "adafactor": "Adafactor", "muon": "Muon",
    "schedule_free_adamw": "ScheduleFreeAdamW",
}
DECAY_BY_DEFAULT = ("adamw", "lamb")  # weight_decay None means 0.01 for these (BERT's AdamW and LAMB recipes)


def build_optimizer(opt: OptimizerConfig, learning_rate: Any = None, accumulation_steps: int = 1) -> Any:
    """A Keras optimizer for ``opt``; ``learning_rate`` (float or schedule) overrides its rate;
    ``accumulation_steps`` > 1 updates every that many batches on their mean gradient."""
    check_optimizer_support(opt)
    lr = opt.learning_rate if learning_rate is None else learning_rate
    decay = opt.weight_decay if opt.weight_decay is not None else (0.01 if opt.name in DECAY_BY_DEFAULT else None)
    common: dict[str, Any] = {"learning_rate": lr, "global_clipnorm": opt.global_clipnorm}
    if decay:
        common["weight_decay"] = decay
    if accumulation_steps > 1:
        common["gradient_accumulation_steps"] = accumulation_steps
    name = opt.name
    # The optimizer's own hyper-parameters: the named fields that are set, and the options.
    own = {k: getattr(opt, k) for k in ("beta_1", "beta_2", "epsilon", "rho")
           if getattr(opt, k) is not None and k in HYPERPARAMETERS[name]}
    own.update(opt.options)
    if name in ("sgd", "momentum", "nesterov"):
        momentum = opt.momentum if (name == "sgd" or opt.momentum) else 0.9
        own.setdefault("nesterov", name == "nesterov")
        optimizer = keras.optimizers.SGD(momentum=momentum, **own, **common)
    elif name in ("adam", "adamw"):
        if name == "adamw":
            common.setdefault("weight_decay", 0.0)
        fused = opt.fused and not own.get("amsgrad", False)
        cls = {"adam": (keras.optimizers.Adam, FusedAdam), "adamw": (keras.optimizers.AdamW, FusedAdamW)}[name]
        optimizer = cls[1 if fused else 0](**own, **common)
    else:
        if opt.momentum:
            own["momentum"] = opt.momentum
        cls = getattr(keras.optimizers, KERAS_CLASSES[name])
        try:
            optimizer = cls(**own, **common)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"train.optimizer ({name}): {exc}") from exc
    if decay and opt.decay_exclude:
        optimizer.exclude_from_weight_decay(var_names=list(opt.decay_exclude))
    return optimizer
