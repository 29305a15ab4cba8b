"""The training configs every recipe shares: train, optimizer, schedule, early stopping.

Plain frozen dataclasses that import no TensorFlow, so a recipe's whole config is resolved and
checked (``--set`` typos, ranges, choices) before TensorFlow starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from zoo.config import check_choice, check_range
from zoo.errors import ConfigError

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker", "tpu")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "adamax")
SCHEDULES = ("constant", "linear", "cosine", "step", "rsqrt")  # zoo.optimizers.WarmupDecay implements these


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
    """What every recipe trains with. ``batch_size`` is the global batch across replicas."""

    epochs: int = 10
    batch_size: int = 32
    strategy: str = "default"
    devices: tuple[str, ...] = ()
    cpu_devices: int = 0
    tpu: str = ""
    precision: str = "float32"
    jit_compile: bool = False
    seed: int = 42
    steps_per_execution: int = 1
    tensorboard: bool = True
    checkpoint_every_epoch: bool = True
    keep_checkpoints: int = 2  # newest epoch checkpoints kept (0: all)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)

    def __post_init__(self) -> None:
        check_range("epochs", self.epochs, 1)
        check_range("batch_size", self.batch_size, 1)
        check_range("cpu_devices", self.cpu_devices, 0)
        check_range("steps_per_execution", self.steps_per_execution, 1)
        check_range("keep_checkpoints", self.keep_checkpoints, 0)
        check_choice("strategy", self.strategy, STRATEGIES)
        check_choice("precision", self.precision, PRECISIONS)
