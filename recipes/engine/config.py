"""The training configs every recipe shares: train, optimizer, schedule, early stopping.

Plain frozen dataclasses that import no TensorFlow, so a recipe's whole config is resolved and
checked (``--set`` typos, ranges, choices) before TensorFlow starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from zoo.config import check_choice, check_range
from zoo.errors import ConfigError, did_you_mean

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker", "tpu")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
DISTRIBUTED = ("mirrored", "multi_worker", "tpu")  # strategies with more than one replica
# Every optimizer Keras 3 ships (MultiOptimizer and LossScaleOptimizer wrap others and are not choices;
# mixed_float16 adds the loss-scale wrapper itself). momentum and nesterov are SGD with momentum.
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "adamax", "adagrad", "adadelta", "nadam",
              "lamb", "lion", "ftrl", "adafactor", "muon", "schedule_free_adamw")
# Each optimizer's own hyper-parameters: the keyword arguments of its Keras class besides learning_rate
# and those every optimizer has (weight decay, clipping, EMA, accumulation). A test checks this table
# against the installed Keras classes; it is spelled out so configs are checked before TensorFlow loads.
_ADAM = ("beta_1", "beta_2", "epsilon", "amsgrad")
HYPERPARAMETERS: dict[str, tuple[str, ...]] = {
    "sgd": ("momentum", "nesterov"), "momentum": ("momentum",), "nesterov": ("momentum",),
    "adam": _ADAM, "adamw": _ADAM,
    "rmsprop": ("rho", "momentum", "epsilon", "centered"),
    "adamax": ("beta_1", "beta_2", "epsilon"),
    "adagrad": ("initial_accumulator_value", "epsilon"),
    "adadelta": ("rho", "epsilon"),
    "nadam": ("beta_1", "beta_2", "epsilon"),
    "lamb": ("beta_1", "beta_2", "epsilon"),
    "lion": ("beta_1", "beta_2"),
    "ftrl": ("learning_rate_power", "initial_accumulator_value", "l1_regularization_strength",
             "l2_regularization_strength", "l2_shrinkage_regularization_strength", "beta"),
    "adafactor": ("beta_2_decay", "epsilon_1", "epsilon_2", "clip_threshold", "relative_step"),
    "muon": ("adam_beta_1", "adam_beta_2", "adam_weight_decay", "epsilon", "exclude_layers", "exclude_embeddings",
             "muon_a", "muon_b", "muon_c", "adam_lr_ratio", "momentum", "ns_steps", "nesterov", "rms_rate"),
    "schedule_free_adamw": ("beta_1", "beta_2", "epsilon", "warmup_steps"),
}
# Hyper-parameters with a field of their own in OptimizerConfig (the rest go in ``options``).
NAMED_HYPERPARAMETERS = ("momentum", "beta_1", "beta_2", "epsilon", "rho")
SCHEDULES = ("constant", "linear", "cosine", "step", "rsqrt")  # zoo.optimizers.WarmupDecay implements these


@dataclass(frozen=True)
class OptimizerConfig:
    """Optimizer hyper-parameters.

    ``name`` is any optimizer Keras ships (:data:`OPTIMIZERS`). ``momentum`` and ``nesterov`` are SGD
    with momentum (0.9 unless ``momentum`` is set; Nesterov for the latter); plain ``sgd`` uses
    ``momentum`` only if set. ``beta_1``, ``beta_2``, ``epsilon`` and ``rho`` apply to the optimizers
    that take them (``None``: that optimizer's own default, e.g. beta_2 0.999 for Adam, 0.99 for Lion);
    every other hyper-parameter of the chosen optimizer goes in ``options``
    (``--set train.optimizer.options.initial_accumulator_value=0.1``), checked against
    :data:`HYPERPARAMETERS`. ``weight_decay`` is decoupled (AdamW style) for every optimizer; ``None``
    means 0.01 for adamw and lamb and none for the others. Variables whose names contain one of
    ``decay_exclude`` (biases, normalization scales) are not decayed. ``fused`` runs adam/adamw updates
    as one TensorFlow kernel per variable (same results).
    """

    name: str = "adam"
    learning_rate: float = 1e-3
    momentum: float = 0.0
    beta_1: float | None = None
    beta_2: float | None = None
    epsilon: float | None = None
    rho: float | None = None
    options: dict = field(default_factory=dict)
    weight_decay: float | None = None
    decay_exclude: tuple[str, ...] = ("bias", "gamma", "beta")
    global_clipnorm: float | None = None
    fused: bool = True

    def __post_init__(self) -> None:
        check_choice("name", self.name, OPTIMIZERS)
        check_range("learning_rate", self.learning_rate, 0.0, low_inclusive=False)
        check_range("momentum", self.momentum, 0.0, 1.0, high_inclusive=False)
        takes = HYPERPARAMETERS[self.name]
        for name in ("beta_1", "beta_2"):
            if getattr(self, name) is not None:
                check_range(name, getattr(self, name), 0.0, 1.0, high_inclusive=False)
        for name in ("epsilon", "rho"):
            if getattr(self, name) is not None:
                check_range(name, getattr(self, name), 0.0)
        for name in ("beta_1", "beta_2", "epsilon", "rho"):
            if getattr(self, name) is not None and name not in takes:
                raise ConfigError(f"{name}={getattr(self, name)} does not apply to the {self.name} optimizer; "
                                  f"its hyper-parameters are: {', '.join(takes)}")
        if self.momentum and "momentum" not in takes:
            raise ConfigError(f"momentum={self.momentum} does not apply to the {self.name} optimizer; its "
                              f"hyper-parameters are: {', '.join(takes)}")
        for key in self.options:
            if key in NAMED_HYPERPARAMETERS:
                raise ConfigError(f"options.{key}: set train.optimizer.{key} instead")
            if key not in takes:
                raise ConfigError(f"options.{key} is not a hyper-parameter of the {self.name} optimizer"
                                  f"{did_you_mean(key, takes)}; it takes: {', '.join(takes) or 'none'}")
        if self.weight_decay is not None:
            check_range("weight_decay", self.weight_decay, 0.0)
        if self.global_clipnorm is not None:
            check_range("global_clipnorm", self.global_clipnorm, 0.0, low_inclusive=False)


@dataclass(frozen=True)
class ScheduleConfig:
    """Learning-rate schedule: optional linear warm-up, then constant / linear / cosine / step / rsqrt decay.

    Warm-up and decay points are in epochs (fractions allowed) and converted to steps by
    the engine; ``warmup_steps`` (optimizer steps), when set, replaces ``warmup_epochs``. ``alpha`` is the
    final learning rate as a fraction of the peak;
    ``step`` multiplies by ``gamma`` at each epoch in ``step_epochs``; ``rsqrt`` is the
    inverse-square-root decay of the Transformer paper, ``peak * sqrt(warmup / step)`` after the
    warm-up (the paper's ``d**-0.5 * min(step**-0.5, step * warmup**-1.5)`` with
    ``learning_rate = (d * warmup) ** -0.5``).
    """

    name: str = "constant"
    warmup_epochs: float = 0.0
    warmup_steps: int = 0
    alpha: float = 0.0
    step_epochs: tuple[float, ...] = ()
    gamma: float = 0.1

    def __post_init__(self) -> None:
        check_choice("name", self.name, SCHEDULES)
        check_range("warmup_epochs", self.warmup_epochs, 0.0)
        check_range("warmup_steps", self.warmup_steps, 0)
        check_range("alpha", self.alpha, 0.0, 1.0)
        check_range("gamma", self.gamma, 0.0, low_inclusive=False)
        if self.name == "step" and not self.step_epochs:
            raise ConfigError("name='step' needs step_epochs, e.g. [30, 60, 80]")
        if list(self.step_epochs) != sorted(self.step_epochs):
            raise ConfigError(f"step_epochs={list(self.step_epochs)} must be increasing")


@dataclass(frozen=True)
class EarlyStoppingConfig:
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs (0 = off)."""

    monitor: str = "val_loss"
    patience: int = 0
    mode: str = "auto"
    min_delta: float = 0.0
    restore_best_weights: bool = True

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, ("auto", "min", "max"))
        check_range("patience", self.patience, 0)
        check_range("min_delta", self.min_delta, 0.0)


@dataclass(frozen=True)
class TrainConfig:
    """What every recipe trains with. ``batch_size`` is the global batch across replicas.

    ``steps`` > 0 trains for that many optimizer steps instead of ``epochs`` passes over the data
    (step mode, for data whose one pass lasts days): the run is cut into rounds of
    ``checkpoint_every_steps`` steps (default: the smaller of ``steps`` and 1000), each ending in a
    checkpoint that a crash resumes from at its exact position in the data stream, with validation
    every ``validation_every_steps`` (a multiple of the round; default: every round) on at most
    ``validation_steps`` batches (default 100 in step mode; 0 in epoch mode means the whole set).
    """

    epochs: int = 10
    steps: int = 0
    checkpoint_every_steps: int = 0
    validation_every_steps: int = 0
    validation_steps: int = 0
    batch_size: int = 32
    strategy: str = "default"
    devices: tuple[str, ...] = ()
    cpu_devices: int = 0
    tpu: str = ""
    precision: str = "float32"
    jit_compile: bool = False
    seed: int = 42
    steps_per_execution: int = 1
    # grpc://HOST:PORT of a tf.data service dispatcher (zoo launch --data-service-workers K sets it): the
    # training pipeline runs on the service's workers, each record of a pass read once (zoo.data.service).
    data_service: str = ""
    tensorboard: bool = True
    checkpoint_every_epoch: bool = True
    keep_checkpoints: int = 2  # newest epoch checkpoints kept (0: all)
    # Optimizer updates every k batches, on the mean of their gradients (as one batch k times as large);
    # the learning-rate schedule counts updates.
    gradient_accumulation_steps: int = 1
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)

    def __post_init__(self) -> None:
        check_range("epochs", self.epochs, 1)
        for name in ("steps", "checkpoint_every_steps", "validation_every_steps", "validation_steps"):
            check_range(name, getattr(self, name), 0)
        if self.steps:
            every = self.round_steps
            if self.steps % every:
                raise ConfigError(f"steps={self.steps} is not a multiple of checkpoint_every_steps={every}; "
                                  f"use steps={self.steps // every * every or every} or another checkpoint interval")
            if self.validation_every_steps % every:
                raise ConfigError(f"validation_every_steps={self.validation_every_steps} is not a multiple of "
                                  f"checkpoint_every_steps={every} (validation runs at checkpoints)")
        elif self.checkpoint_every_steps or self.validation_every_steps:
            raise ConfigError("checkpoint_every_steps and validation_every_steps apply to step mode; set "
                              "train.steps too (or use train.epochs and checkpoint_every_epoch)")
        check_range("batch_size", self.batch_size, 1)
        if self.data_service:
            from zoo.data.service import service_address

            service_address(self.data_service)  # a clear error for a malformed address, before anything runs
        check_range("cpu_devices", self.cpu_devices, 0)
        check_range("steps_per_execution", self.steps_per_execution, 1)
        check_range("keep_checkpoints", self.keep_checkpoints, 0)
        check_range("gradient_accumulation_steps", self.gradient_accumulation_steps, 1)
        if self.gradient_accumulation_steps > 1 and self.strategy in DISTRIBUTED:
            # Keras applies the accumulated update inside a cond, and a tf.distribute all-reduce cannot run
            # inside one ("merge_call called while defining a new graph").
            raise ConfigError(f"gradient_accumulation_steps={self.gradient_accumulation_steps} does not work with "
                              f"strategy={self.strategy!r} (Keras' accumulation cannot all-reduce across replicas); "
                              "train with a larger global batch_size instead, or use strategy 'default'")
        check_choice("strategy", self.strategy, STRATEGIES)
        check_choice("precision", self.precision, PRECISIONS)

    @property
    def round_steps(self) -> int:
        """Step mode: optimizer steps between checkpoints (one Keras "epoch" of the run)."""
        return self.checkpoint_every_steps or min(self.steps, 1000)
