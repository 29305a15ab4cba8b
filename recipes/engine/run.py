"""The training engine every recipe runs on: the run directory, strategy, precision, compile,
fit with the standard callbacks, evaluation and the final artifacts.

What a run directory holds, and every path in it, is owned by ``zoo.rundir.RunDir``. The command
line of every recipe is in ``zoo.recipes.engine.cli``.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import platform
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from zoo.atomic import write_json_atomic
from zoo.config import apply_overrides, flatten, load_config_file, to_dict, write_config
from zoo.errors import ConfigError, ZooError
from zoo.recipes.engine.config import TrainConfig
from zoo.rundir import RunDir, RunInfo

log = logging.getLogger(__name__)


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
    files: dict[str, str] = field(default_factory=dict)  # text files for the run dir, by RunDir name (RunDir.VOCAB)
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
    run_info: Callable[[Any, Datasets], RunInfo]
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


def _check_resumable(out: RunDir, cfg: Any) -> None:
    """Refuse to mix runs: a run dir is resumed only with the config it was started with."""
    if out.is_finished:
        raise ZooError(
            f"run dir {out.path!r} holds a finished run ({RunDir.MODEL} exists); pick a new --run-dir "
            "or export this one with `zoo export`"
        )
    if os.path.isfile(out.config_path):
        old = flatten(load_config_file(out.config_path))
        new = flatten(json.loads(json.dumps(to_dict(cfg))))  # tuples as lists, as YAML reads them back
        if old != new:
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise ConfigError(
                f"run dir {out.path!r} was started with a different config (fields differ: {', '.join(diff)}); "
                "resume it with the same settings or pick a new --run-dir"
            )


def _write_run_files(out: RunDir, cfg: Any, info: RunInfo, data: Datasets) -> None:
    """config.yaml, run.json, the recipe's text files and the export samples, each written atomically."""
    write_config(cfg, out.config_path)
    out.write_info(info)
    for name, text in data.files.items():
        out.write_text(name, text)
    if data.eval_sample is not None:
        out.write_eval_sample(*data.eval_sample)
    if data.calibration is not None:
        out.write_calibration(data.calibration)


def run(recipe: Recipe, cfg: Any, run_dir: str, *, explicit: frozenset = frozenset(),
        extra_callbacks: Sequence[Any] = (), verbose: int | str = "auto") -> RunResult:
    """Train ``recipe`` with ``cfg`` into ``run_dir`` (resuming if it holds an unfinished run)."""
    import keras
    import tensorflow as tf

    from zoo.recipes.engine.callbacks import MetricsLog, build_callbacks, choose_resume_state
    from zoo.recipes.engine.optim import build_optimizer, build_schedule, check_optimizer_support
    from zoo.recipes.engine.plots import plot_curves
    from zoo.recipes.engine.precision import (
        has_loss_scaling,
        precision_scope,
        warn_if_slow_bfloat16,
        warn_if_xla_bfloat16,
    )
    from zoo.recipes.engine.strategy import (
        build_strategy,
        check_xla,
        cluster_tasks,
        is_chief,
        split_cpu,
        task_name,
    )

    train = cfg.train
    if train.cpu_devices:
        split_cpu(train.cpu_devices)
    # Before any op runs: MultiWorkerMirroredStrategy configures collectives at startup only.
    strategy = build_strategy(train.strategy, train.devices or None, tpu=train.tpu or None)
    check_xla(strategy, train.jit_compile)
    check_optimizer_support(train.optimizer)
    device_types = {d.device_type for d in tf.config.list_logical_devices()}
    warn_if_slow_bfloat16(train.precision, device_types)
    warn_if_xla_bfloat16(train.precision, train.jit_compile, device_types)
    keras.utils.set_random_seed(train.seed)
    cfg, data = recipe.prepare_data(cfg, explicit)
    # In a multi-worker job only the chief writes the run dir; the other workers keep their own
    # resume state under .workers/<task> (stable across restarts) and drop it when done.
    chief = train.strategy != "multi_worker" or is_chief()
    out = RunDir(run_dir) if chief else RunDir(run_dir).worker_dir(task_name())
    _check_resumable(out, cfg)
    # Everything that can refuse the config (the model, the schedule's warm-up, the optimizer) is
    # built before the run dir is written, so a refused run leaves nothing behind.
    with precision_scope(train.precision), strategy.scope():
        model = recipe.build_model(cfg, data)
        k = train.gradient_accumulation_steps
        lr = build_schedule(train.optimizer, train.schedule, data.steps_per_epoch, train.epochs, k)
        optimizer = build_optimizer(train.optimizer, lr, k)
        model.compile(optimizer=optimizer, jit_compile=train.jit_compile,
                      steps_per_execution=train.steps_per_execution, **recipe.compile_args(cfg))
    os.makedirs(out.path, exist_ok=True)
    peers: list[RunDir] = []
    if train.strategy == "multi_worker":  # every worker resumes at the same epoch
        chief_task, others = cluster_tasks()
        me = task_name()
        peers = [RunDir(run_dir) if t == chief_task else RunDir(run_dir).worker_dir(t)
                 for t in [chief_task, *others] if t != me]
    resume = choose_resume_state(out, peers)
    _write_run_files(out, cfg, recipe.run_info(cfg, data), data)
    initial_epoch, train_data = 0, data.train
    if resume is not None:
        initial_epoch = resume[0]
        # Each epoch's order is a function of (seed, epoch): skipping the batches of the epochs done
        # gives the resumed epochs the order an uninterrupted run would have seen.
        train_data = data.train.skip(initial_epoch * data.steps_per_epoch)
        log.info("resuming the unfinished run in %s after epoch %d (%s)", out.path, initial_epoch, resume[1])
    callbacks = build_callbacks(out, train.early_stopping, tensorboard=train.tensorboard,
                                checkpoint_every_epoch=train.checkpoint_every_epoch,
                                keep_checkpoints=train.keep_checkpoints,
                                resume_from=resume[1] if resume else None, seed=train.seed)
    if recipe.callbacks is not None:
        # After the state is restored and saved, before the metrics log (so what they log lands in it).
        at = next(i for i, c in enumerate(callbacks) if isinstance(c, MetricsLog))
        callbacks[at:at] = recipe.callbacks(cfg, data)
    callbacks.extend(extra_callbacks)
    with _fit_scope(train.strategy, model):
        start = time.perf_counter()
        history = model.fit(train_data, validation_data=data.validation, epochs=train.epochs,
                            initial_epoch=initial_epoch, steps_per_epoch=data.steps_per_epoch, callbacks=callbacks,
                            verbose=verbose, shuffle=False)
        train_seconds = time.perf_counter() - start
        final: dict[str, Any] = {}
        if data.test is not None:
            scores = model.evaluate(data.test, verbose=0, return_dict=True)
            final = {f"test_{k}": float(v) for k, v in scores.items()}
        if recipe.evaluate is not None:
            final.update(recipe.evaluate(cfg, model, data))
    with open(out.metrics_path, encoding="utf-8") as fh:
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
    write_json_atomic(out.metrics_path, metrics)
    plot_curves(metrics, out.curves_path)
    if chief:
        tmp = out.file(RunDir.MODEL_TMP)
        model.save(tmp)
        os.replace(tmp, out.model_path)
        shutil.rmtree(out.backup_dir, ignore_errors=True)  # a finished run resumes nothing; the checkpoints stay
    else:
        shutil.rmtree(out.path, ignore_errors=True)
        with contextlib.suppress(OSError):  # the last worker to finish removes .workers/
            os.rmdir(RunDir(run_dir).workers_root)
    return RunResult(run_dir, metrics, model)


def _fit_scope(strategy: str, model: Any) -> Any:
    """Keras 3.15's fit needs two work-arounds under MultiWorkerMirroredStrategy, undone after the run."""
    if strategy != "multi_worker":
        return contextlib.nullcontext()
    from zoo.keras_compat import multi_worker_fit

    return multi_worker_fit(model)


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


__all__ = ["TrainConfig", "Datasets", "Recipe", "RunResult", "run", "train", "resolve_config", "default_run_dir"]
