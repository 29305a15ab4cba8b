"""The training engine every recipe runs on: config resolution, the run directory, strategy,
precision, compile, fit with the standard callbacks, evaluation and the final artifacts.

A run directory holds::

    config.yaml      the resolved config (rerunning with --config config.yaml repeats the run)
    run.json         what export needs: recipe, task, model, input signature, class names
    backup/          BackupAndRestore state while a run is unfinished (a restart resumes here)
    checkpoints/     weights after every epoch
    logs/            TensorBoard event files
    metrics.json     per-epoch metrics, resumes, and the final evaluation
    curves.png       loss and metric curves
    eval_sample.npz  held-out examples for export parity checks
    calibration.npz  training inputs for int8 calibration
    model.keras      the final model, written last (its presence marks a finished run)
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from zoo.config import (
    apply_overrides,
    check_choice,
    check_range,
    flatten,
    load_config_file,
    parse_set_args,
    to_dict,
    write_config,
    write_text_atomic,
)
from zoo.errors import ConfigError, ZooError
from zoo.recipes.engine.callbacks import EarlyStoppingConfig, write_json_atomic
from zoo.recipes.engine.optim import OptimizerConfig, ScheduleConfig
from zoo.recipes.engine.precision import PRECISIONS
from zoo.recipes.engine.strategy import STRATEGIES

log = logging.getLogger(__name__)


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
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)

    def __post_init__(self) -> None:
        check_range("epochs", self.epochs, 1)
        check_range("batch_size", self.batch_size, 1)
        check_range("cpu_devices", self.cpu_devices, 0)
        check_range("steps_per_execution", self.steps_per_execution, 1)
        check_choice("strategy", self.strategy, STRATEGIES)
        check_choice("precision", self.precision, PRECISIONS)


@dataclass
class Datasets:
    """What a recipe's data step hands the engine."""

    train: Any
    steps_per_epoch: int
    validation: Any = None
    test: Any = None
    eval_sample: tuple[Any, Any] | None = None
    calibration: Any = None
    info: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # extra text files for the run dir (e.g. vocab.txt)
    state: dict[str, Any] = field(default_factory=dict)  # handed from prepare_data to build_model, not saved


@dataclass(frozen=True)
class Recipe:
    """A recipe: its config class and the three steps the engine calls.

    ``prepare_data(cfg, explicit)`` returns ``(cfg, Datasets)`` (it may fill config fields that
    follow from the data, such as the number of classes, unless the user set them: ``explicit``
    holds the dotted keys the user set). ``build_model(cfg, data)`` runs inside the strategy and
    precision scopes; ``compile_args(cfg)`` gives ``loss`` and ``metrics``.
    """

    name: str
    description: str
    config_class: type
    prepare_data: Callable[[Any, frozenset], tuple[Any, Datasets]]
    build_model: Callable[[Any, Datasets], Any]
    compile_args: Callable[[Any], dict[str, Any]]
    run_info: Callable[[Any, Datasets], dict[str, Any]]
    # Optional: extra final metrics (e.g. macro-F1) computed from the trained model.
    evaluate: Callable[[Any, Any, Datasets], dict[str, float]] | None = None
    # Optional: callbacks of the recipe's own (e.g. per-epoch BLEU); they run before the metrics
    # log, so what they add to the epoch's logs lands in metrics.json, TensorBoard and early stopping.
    callbacks: Callable[[Any, Datasets], list[Any]] | None = None


@dataclass
class RunResult:
    """What ``run`` returns: the run directory, the final metrics and the model."""

    run_dir: str
    metrics: dict[str, Any]
    model: Any = None


def default_run_dir(recipe: str) -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", f"{recipe}-{stamp}")


def _check_resumable(run_dir: str, cfg: Any) -> None:
    """Refuse to mix runs: a run dir is resumed only with the config it was started with."""
    cfg_path = os.path.join(run_dir, "config.yaml")
    if os.path.isfile(os.path.join(run_dir, "model.keras")):
        raise ZooError(
            f"run dir {run_dir!r} holds a finished run (model.keras exists); pick a new --run-dir "
            "or export this one with `zoo export`"
        )
    if os.path.isfile(cfg_path):
        old = flatten(load_config_file(cfg_path))
        new = flatten(json.loads(json.dumps(to_dict(cfg))))  # tuples as lists, as YAML reads them back
        if old != new:
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise ConfigError(
                f"run dir {run_dir!r} was started with a different config (fields differ: {', '.join(diff)}); "
                "resume it with the same settings or pick a new --run-dir"
            )


def run(recipe: Recipe, cfg: Any, run_dir: str, *, explicit: frozenset = frozenset(),
        extra_callbacks: Sequence[Any] = (), verbose: int | str = "auto") -> RunResult:
    """Train ``recipe`` with ``cfg`` into ``run_dir`` (resuming if it holds an unfinished run)."""
    import keras
    import numpy as np

    from zoo.recipes.engine.callbacks import build_callbacks
    from zoo.recipes.engine.optim import build_optimizer, build_schedule
    from zoo.recipes.engine.precision import has_loss_scaling, precision_scope
    from zoo.recipes.engine.strategy import build_strategy, is_chief, split_cpu, task_name

    train = cfg.train
    if train.cpu_devices:
        split_cpu(train.cpu_devices)
    # Before any op runs: MultiWorkerMirroredStrategy configures collectives at startup only.
    strategy = build_strategy(train.strategy, train.devices or None, tpu=train.tpu or None)
    keras.utils.set_random_seed(train.seed)
    cfg, data = recipe.prepare_data(cfg, explicit)
    # In a multi-worker job only the chief writes the run dir; the other workers keep their own
    # resume state under .workers/<task> (stable across restarts) and drop it when done.
    chief = train.strategy != "multi_worker" or is_chief()
    out_dir = run_dir if chief else os.path.join(run_dir, ".workers", task_name())
    _check_resumable(out_dir, cfg)
    os.makedirs(out_dir, exist_ok=True)
    resuming = os.path.isdir(os.path.join(out_dir, "backup"))
    write_config(cfg, os.path.join(out_dir, "config.yaml"))
    info = recipe.run_info(cfg, data)
    write_json_atomic(os.path.join(out_dir, "run.json"), info)
    for name, text in data.files.items():
        write_text_atomic(os.path.join(out_dir, name), text)
    if data.eval_sample is not None:
        np.savez_compressed(os.path.join(out_dir, "eval_sample.npz"), x=data.eval_sample[0], y=data.eval_sample[1])
    if data.calibration is not None:
        np.savez_compressed(os.path.join(out_dir, "calibration.npz"), x=data.calibration)
    if resuming:
        log.info("found an unfinished run in %s; resuming from its last completed epoch", out_dir)

    with precision_scope(train.precision), strategy.scope():
        model = recipe.build_model(cfg, data)
        lr = build_schedule(train.optimizer, train.schedule, data.steps_per_epoch, train.epochs)
        optimizer = build_optimizer(train.optimizer, lr)
        model.compile(optimizer=optimizer, jit_compile=train.jit_compile,
                      steps_per_execution=train.steps_per_execution, **recipe.compile_args(cfg))
    if train.strategy == "multi_worker":
        from zoo.recipes.engine.keras_fixes import enable_multi_worker_fit

        enable_multi_worker_fit(model)
    callbacks = build_callbacks(out_dir, train.early_stopping, tensorboard=train.tensorboard,
                                checkpoint_every_epoch=train.checkpoint_every_epoch)
    if recipe.callbacks is not None:
        callbacks[1:1] = recipe.callbacks(cfg, data)  # after BackupAndRestore, before the metrics log
    callbacks.extend(extra_callbacks)
    start = time.perf_counter()
    history = model.fit(data.train, validation_data=data.validation, epochs=train.epochs,
                        steps_per_epoch=data.steps_per_epoch, callbacks=callbacks, verbose=verbose,
                        shuffle=False)
    train_seconds = time.perf_counter() - start
    final: dict[str, Any] = {}
    if data.test is not None:
        scores = model.evaluate(data.test, verbose=0, return_dict=True)
        final = {f"test_{k}": float(v) for k, v in scores.items()}
    if recipe.evaluate is not None:
        final.update(recipe.evaluate(cfg, model, data))
    metrics_path = os.path.join(out_dir, "metrics.json")
    with open(metrics_path, encoding="utf-8") as fh:
        metrics = json.load(fh)
    metrics.update({
        "final": final,
        "epochs_completed": len(metrics.get("epochs", [])),
        "stopped_early": len(history.epoch) > 0 and history.epoch[-1] + 1 < train.epochs,
        "train_seconds_this_process": round(train_seconds, 2),
        "replicas": strategy.num_replicas_in_sync,
        "precision": train.precision,
        "loss_scaling": has_loss_scaling(model),
        "parameters": int(model.count_params()),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
    })
    write_json_atomic(metrics_path, metrics)
    plot_curves(metrics, os.path.join(out_dir, "curves.png"))
    if chief:
        tmp = os.path.join(out_dir, "model.tmp.keras")
        model.save(tmp)
        os.replace(tmp, os.path.join(out_dir, "model.keras"))
    else:
        shutil.rmtree(out_dir, ignore_errors=True)
        with contextlib.suppress(OSError):  # the last worker to finish removes .workers/
            os.rmdir(os.path.dirname(out_dir))
    return RunResult(run_dir, metrics, model)


def plot_curves(metrics: dict[str, Any], path: str) -> None:
    """Plot every per-epoch series (train and validation side by side) into one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = metrics.get("epochs", [])
    names = sorted({k for e in epochs for k in e if not k.startswith("val_")
                    and k not in ("epoch", "seconds", "learning_rate")})
    if not epochs or not names:
        return
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.5), squeeze=False)
    xs = [e["epoch"] for e in epochs]
    for ax, name in zip(axes[0], names):
        for key, style in ((name, "-o"), (f"val_{name}", "--s")):
            ys = [e.get(key) for e in epochs]
            if any(isinstance(y, (int, float)) for y in ys):
                ax.plot(xs, [y if isinstance(y, (int, float)) else float("nan") for y in ys], style,
                        label=key, markersize=3)
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- command line


def add_train_args(parser: argparse.ArgumentParser) -> None:
    """The options every recipe takes."""
    parser.add_argument("--config", help="YAML or JSON file with config overrides (e.g. a run's config.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field by dotted path, e.g. --set model.dropout=0.1 (repeatable)")
    parser.add_argument("--run-dir", help="where to write the run (default runs/<recipe>-<timestamp>); "
                                          "an unfinished run there is resumed")
    parser.add_argument("--strategy", choices=STRATEGIES, help="shortcut for --set train.strategy=...")
    parser.add_argument("--devices", help="comma-separated devices for mirrored/one_device, e.g. cpu:0,cpu:1")
    parser.add_argument("--cpu-devices", type=int, help="split the CPU into N logical devices (for mirrored on CPU)")
    parser.add_argument("--precision", choices=PRECISIONS, help="shortcut for --set train.precision=...")
    parser.add_argument("--xla", action="store_true", default=None, help="compile train steps with XLA")
    parser.add_argument("--epochs", type=int, help="shortcut for --set train.epochs=N")
    parser.add_argument("--batch-size", type=int, help="global batch size (shortcut for train.batch_size)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars; only the summary")
    parser.add_argument("--json", action="store_true", help="print the final metrics as JSON")


def overrides_from_args(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Dotted overrides from the command line: --config file <- recipe flags <- --set <- shortcuts."""
    overrides: dict[str, Any] = {}
    if args.config:
        overrides.update(flatten(load_config_file(args.config)))
    overrides.update(extra or {})
    overrides.update(parse_set_args(args.overrides))
    shortcuts = {"train.strategy": args.strategy, "train.precision": args.precision, "train.epochs": args.epochs,
                 "train.batch_size": args.batch_size, "train.cpu_devices": args.cpu_devices,
                 "train.jit_compile": args.xla,
                 "train.devices": args.devices.split(",") if args.devices else None}
    overrides.update({k: v for k, v in shortcuts.items() if v is not None})
    return overrides


def resolve_config(config_class: type, overrides: dict[str, Any] | None = None) -> tuple[Any, frozenset]:
    """The recipe's defaults with dotted ``overrides`` applied; returns (cfg, the keys the user set)."""
    overrides = dict(overrides or {})
    if "model.preset" in overrides:  # KerasHub's word for a named architecture
        overrides["model.name"] = overrides.pop("model.preset")
    cfg = config_class()
    # model.name first, so that the other model.* keys apply to the chosen model's config.
    if "model.name" in overrides:
        cfg = apply_overrides(cfg, {"model.name": overrides["model.name"]})
    cfg = apply_overrides(cfg, {k: v for k, v in overrides.items() if k != "model.name"})
    return cfg, frozenset(overrides)


def train(recipe_name: str, run_dir: str, overrides: dict[str, Any] | None = None, **kwargs: Any) -> RunResult:
    """Run a recipe by name from Python: ``train("image_classify", "runs/x", {"train.epochs": 3})``."""
    from zoo.recipes import get_recipe_module

    recipe = get_recipe_module(recipe_name).RECIPE
    cfg, explicit = resolve_config(recipe.config_class, overrides)
    return run(recipe, cfg, run_dir, explicit=explicit, **kwargs)


def print_summary(result: RunResult, *, as_json: bool = False, stream: Any = None) -> None:
    """Print the end-of-run table (or JSON) for people (or scripts)."""
    stream = stream or sys.stdout
    metrics = result.metrics
    if as_json:
        json.dump({"run_dir": result.run_dir, **metrics}, stream, indent=2, default=str)
        stream.write("\n")
        return
    last = metrics["epochs"][-1] if metrics.get("epochs") else {}
    rows = [("run dir", result.run_dir), ("epochs", str(metrics.get("epochs_completed"))),
            ("replicas", str(metrics.get("replicas"))), ("precision", str(metrics.get("precision"))),
            ("parameters", f"{metrics.get('parameters', 0):,}")]
    rows += [(k, f"{v:.4f}") for k, v in last.items() if k not in ("epoch", "seconds") and isinstance(v, float)]
    rows += [(k, f"{v:.4f}") for k, v in metrics.get("final", {}).items()]
    rows.append(("train seconds", f"{metrics.get('train_seconds_this_process', 0):.1f}"))
    width = max(len(k) for k, _ in rows)
    stream.write("\n".join(f"{k:<{width}}  {v}" for k, v in rows) + "\n")


def main_for(recipe: Recipe, argv: Sequence[str] | None = None,
             flags: dict[str, tuple[str, str]] | None = None) -> int:
    """A recipe's command line: parse, resolve config, train, print the summary.

    ``flags`` maps a recipe's own shortcut options to config keys, e.g.
    ``{"--data": ("data.source", "training file")}``.
    """
    parser = argparse.ArgumentParser(prog=f"zoo train {recipe.name}", description=recipe.description)
    add_train_args(parser)
    flags = flags or {}
    for flag, (_, help_text) in flags.items():
        parser.add_argument(flag, help=help_text)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(message)s")
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
    extra = {key: getattr(args, flag.lstrip("-").replace("-", "_")) for flag, (key, _) in flags.items()}
    try:
        overrides = overrides_from_args(args, {k: v for k, v in extra.items() if v is not None})
        cfg, explicit = resolve_config(recipe.config_class, overrides)
        result = run(recipe, cfg, args.run_dir or default_run_dir(recipe.name), explicit=explicit,
                     verbose=0 if args.quiet else "auto")
    except ZooError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_summary(result, as_json=args.json)
    return 0


__all__ = ["TrainConfig", "Datasets", "Recipe", "RunResult", "run", "train", "resolve_config",
           "overrides_from_args", "add_train_args",
           "print_summary", "main_for", "default_run_dir", "plot_curves"]
