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
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from zoo.atomic import write_json_atomic
from zoo.config import apply_overrides, flatten, load_config_file, to_dict, write_config
from zoo.errors import ConfigError, DataError, ZooError
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
    # The recipe's own typed state (a dataclass of the recipe's), handed from prepare_data to build_model,
    # evaluate and callbacks; not saved.
    state: Any = None
    # Optional, for streamed data: sharded_train((pipelines, index), per-replica batch) -> one worker's part of
    # ``train`` (each epoch split between the workers, each record once). Under multi_worker the engine
    # distributes it with distribute_datasets_from_function instead of letting tf.distribute shard ``train``.
    sharded_train: Callable[[tuple[int, int], int], Any] | None = None
    # Optional, for train.data_service: service_train(batch, first_pass, passes) -> the training batches of
    # passes first_pass.. over the data, its source the list of their files (a seeded order per pass), so
    # the service's dispatcher can hand each file to one worker (processing_mode "distributed_epoch").
    service_train: Callable[[int, int, int], Any] | None = None


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
    # The recipe's own command-line shortcuts: flag -> (config key, help), e.g. {"--data": ("data.source", ...)}.
    flags: dict[str, tuple[str, str]] = field(default_factory=dict)
    # Optional: `zoo data prepare RECIPE` (tokenized, sharded files a run reads instead of raw data):
    # prepare_dataset(cfg, explicit, out, workers=, shards=, log=) writes ``out`` and returns its manifest.
    prepare_dataset: Callable[..., dict[str, Any]] | None = None


@dataclass
class RunResult:
    """What ``run`` returns: the run directory, the final metrics and the model."""

    run_dir: str
    metrics: dict[str, Any]
    model: Any = None


def default_run_dir(recipe: str) -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", f"{recipe}-{stamp}")


@contextlib.contextmanager
def _bad_lines_as_data_errors() -> Any:
    """A streamed corpus's line that is not UTF-8, met by the input pipeline mid-run (step mode reads a large
    corpus without a scan first): one DataError naming file and line instead of TensorFlow's op error."""
    import tensorflow as tf

    from zoo.data.stream import bad_line_error

    try:
        yield
    except tf.errors.InvalidArgumentError as exc:
        message = bad_line_error(exc)
        if message is None:
            raise
        raise DataError(message) from exc


# Settings a run may be resumed with changed: they decide what happens to a bad row met later, not the model or
# the order of the data already trained on (a run stopped at a bad line resumes with data.on_error=skip).
RESUMABLE_CHANGES = frozenset({"data.on_error"})


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
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and k not in RESUMABLE_CHANGES)
            if diff:
                raise ConfigError(f"run dir {out.path!r} was started with a different config (fields differ: "
                                  f"{', '.join(diff)}); resume it with the same settings or pick a new --run-dir")


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


class Runner:
    """One training run, in phases: :meth:`prepare` -> :meth:`build` -> :meth:`plan_resume` -> :meth:`fit`
    -> :meth:`evaluate` -> :meth:`finalize` (:meth:`run` calls them in that order). Each reads and sets
    attributes of the run (``cfg``, ``data``, ``strategy``, ``model``, ``out``, ``resume``...); a recipe
    that needs a phase done differently subclasses Runner and overrides that method, as Model Garden's
    OrbitExperimentRunner is extended.
    """

    def __init__(self, recipe: Recipe, cfg: Any, run_dir: str, *, explicit: frozenset = frozenset(),
                 extra_callbacks: Sequence[Any] = (), verbose: int | str = "auto"):
        self.recipe, self.cfg, self.run_dir, self.explicit = recipe, cfg, run_dir, explicit
        self.extra_callbacks, self.verbose = list(extra_callbacks), verbose
        self.strategy: Any = None
        self.data: Datasets | None = None
        self.model: Any = None
        self.chief = True
        self.out = RunDir(run_dir)
        self.resume: tuple[int, str] | None = None
        self.history: Any = None
        self.train_seconds = 0.0
        self.final: dict[str, Any] = {}

    def run(self) -> RunResult:
        with _callers_random_state_kept():
            self.prepare()
            self.build()
            self.plan_resume()
            with _bad_lines_as_data_errors():
                self.fit()
                self.evaluate()
        return self.finalize()

    def prepare(self) -> None:
        """Devices, strategy and precision checks (before any op runs: MultiWorkerMirroredStrategy configures
        collectives at startup only), then the recipe's data."""
        import keras
        import tensorflow as tf

        from zoo.recipes.engine.optim import check_optimizer_support
        from zoo.recipes.engine.precision import warn_if_slow_bfloat16, warn_if_xla_bfloat16
        from zoo.recipes.engine.strategy import build_strategy, check_xla, is_chief, split_cpu, task_name

        train = self.cfg.train
        if train.cpu_devices:
            split_cpu(train.cpu_devices)
        self.strategy = build_strategy(train.strategy, train.devices or None, tpu=train.tpu or None)
        check_xla(self.strategy, train.jit_compile)
        check_optimizer_support(train.optimizer)
        device_types = {d.device_type for d in tf.config.list_logical_devices()}
        warn_if_slow_bfloat16(train.precision, device_types)
        warn_if_xla_bfloat16(train.precision, train.jit_compile, device_types)
        # The run's seed for everything it draws: Python, NumPy, TensorFlow and Keras initializers.
        keras.utils.set_random_seed(train.seed)
        self.cfg, self.data = self.recipe.prepare_data(self.cfg, self.explicit)
        if train.data_service and self.data.service_train is None:
            raise ConfigError(f"train.data_service: the {self.recipe.name} recipe cannot read this data through a "
                              "tf.data service; the service reads prepared datasets (`zoo data prepare bert_pretrain "
                              "--data ... --out DIR`, then --data DIR)")
        # In a multi-worker job only the chief writes the run dir; the other workers keep their own
        # resume state under .workers/<task> (stable across restarts) and drop it when done.
        self.chief = train.strategy != "multi_worker" or is_chief()
        self.out = RunDir(self.run_dir) if self.chief else RunDir(self.run_dir).worker_dir(task_name())
        _check_resumable(self.out, self.cfg)

    def build(self) -> None:
        """Model, schedule, optimizer and compile, inside the strategy and precision scopes. Everything that
        can refuse the config is built here, before the run dir is written: a refused run leaves nothing."""
        from zoo.recipes.engine.optim import build_optimizer, build_schedule
        from zoo.recipes.engine.precision import precision_scope

        train, data = self.cfg.train, self.data
        with precision_scope(train.precision), self.strategy.scope():
            self.model = self.recipe.build_model(self.cfg, data)
            k = train.gradient_accumulation_steps
            lr = build_schedule(train.optimizer, train.schedule, data.steps_per_epoch, train.epochs, k,
                                total_updates=train.steps)
            self.model.compile(optimizer=build_optimizer(train.optimizer, lr, k), jit_compile=train.jit_compile,
                               steps_per_execution=train.steps_per_execution, **self.recipe.compile_args(self.cfg))

    def plan_resume(self) -> None:
        """The epoch to resume after (every worker of a multi-worker job agrees on one), then the run files."""
        from zoo.recipes.engine.callbacks import choose_resume_state
        from zoo.recipes.engine.strategy import cluster_tasks, task_name

        os.makedirs(self.out.path, exist_ok=True)
        peers: list[RunDir] = []
        if self.cfg.train.strategy == "multi_worker":
            chief_task, others = cluster_tasks()
            me = task_name()
            peers = [RunDir(self.run_dir) if t == chief_task else RunDir(self.run_dir).worker_dir(t)
                     for t in [chief_task, *others] if t != me]
        self.resume = choose_resume_state(self.out, peers)
        _write_run_files(self.out, self.cfg, self.recipe.run_info(self.cfg, self.data), self.data)
        if self.resume is not None:
            log.info("resuming the unfinished run in %s after epoch %d (%s)", self.out.path, *self.resume)

    def callbacks(self) -> list[Any]:
        """The engine's callbacks with the recipe's in their declared place, then the caller's extras."""
        from zoo.recipes.engine.callbacks import build_callbacks

        train = self.cfg.train
        own = self.recipe.callbacks(self.cfg, self.data) if self.recipe.callbacks is not None else []
        return [*build_callbacks(self.out, train.early_stopping, tensorboard=train.tensorboard,
                                 checkpoint_every_epoch=train.checkpoint_every_epoch,
                                 keep_checkpoints=train.keep_checkpoints,
                                 resume_from=self.resume[1] if self.resume else None, seed=train.seed,
                                 recipe_callbacks=own), *self.extra_callbacks]

    def loop(self) -> tuple[int, int]:
        """(Keras epochs, batches per Keras epoch): passes over the data, or in step mode rounds of
        ``checkpoint_every_steps`` optimizer steps (``train.steps`` in all)."""
        train = self.cfg.train
        if not train.steps:
            return train.epochs, self.data.steps_per_epoch
        return train.steps // train.round_steps, train.round_steps * train.gradient_accumulation_steps

    def fit(self) -> None:
        import tensorflow as tf

        train, data = self.cfg.train, self.data
        epochs, batches = self.loop()
        initial_epoch, train_data = 0, data.train
        if self.resume is not None:
            initial_epoch = self.resume[0]
            # Each epoch's order is a function of (seed, epoch): skipping the batches done gives the resumed
            # epochs (or rounds of steps, mid-epoch) the order an uninterrupted run would have seen.
            train_data = data.train.skip(initial_epoch * batches)
        if train.data_service:
            train_data = service_input(self.strategy, data, train, self.run_dir, initial_epoch * batches,
                                       epochs * batches)
        elif train.strategy == "multi_worker" and data.sharded_train is not None:
            train_data = sharded_input(self.strategy, data.sharded_train, train.batch_size, initial_epoch * batches)
        validation = {}
        if data.validation is not None:
            if train.steps:
                validation["validation_freq"] = (train.validation_every_steps or train.round_steps) // train.round_steps
            # Bounded validation (100 batches by default in step mode), unless the set is known to be smaller:
            # Keras warns that the input "ran out of data" when asked for more batches than there are.
            limit = train.validation_steps or (100 if train.steps else 0)
            size = int(tf.data.experimental.cardinality(data.validation))
            if limit and not 0 <= size <= limit:
                validation["validation_steps"] = limit
        callbacks = self.callbacks()
        with _fit_scope(train.strategy, self.model), warnings.catch_warnings():
            # The masked LM reads the backbone's sequence output only, so the pooler gets no gradient; Keras
            # warns about it at every trace, as if the loss were missing.
            warnings.filterwarnings("ignore", message=r"Gradients do not exist for variables \['pooled_dense/",
                                    category=UserWarning)
            start = time.perf_counter()
            self.history = self.model.fit(
                train_data, validation_data=data.validation, epochs=epochs, initial_epoch=initial_epoch,
                steps_per_epoch=batches, callbacks=callbacks, verbose=self.verbose, shuffle=False, **validation)
            self.train_seconds = time.perf_counter() - start

    def evaluate(self) -> None:
        """Test-set scores (``test_*``) and the recipe's own final metrics."""
        with _fit_scope(self.cfg.train.strategy, self.model):
            if self.data.test is not None:
                scores = self.model.evaluate(self.data.test, verbose=0, return_dict=True)
                self.final = {f"test_{k}": float(v) for k, v in scores.items()}
            if self.recipe.evaluate is not None:
                self.final.update(self.recipe.evaluate(self.cfg, self.model, self.data))

    def finalize(self) -> RunResult:
        """metrics.json and curves.png complete, then model.keras (written last: it marks a finished run)."""
        from zoo.recipes.engine.plots import plot_curves
        from zoo.recipes.engine.precision import has_loss_scaling

        train, out, history = self.cfg.train, self.out, self.history
        with open(out.metrics_path, encoding="utf-8") as fh:
            metrics = json.load(fh)
        epochs, _ = self.loop()
        if train.steps:  # step mode: each entry is a round of steps; say which step it ended at
            for entry in metrics.get("epochs", []):
                entry["step"] = entry["epoch"] * train.round_steps
            metrics["steps_completed"] = len(metrics.get("epochs", [])) * train.round_steps
        metrics.update({
            "final": self.final,
            "epochs_completed": len(metrics.get("epochs", [])),
            "stopped_early": len(history.epoch) > 0 and history.epoch[-1] + 1 < epochs,
            "train_seconds_this_process": round(self.train_seconds, 2),
            "replicas": self.strategy.num_replicas_in_sync,
            "precision": train.precision,
            "loss_scaling": has_loss_scaling(self.model),
            "parameters": int(self.model.count_params()),
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        })
        write_json_atomic(out.metrics_path, metrics)
        plot_curves(metrics, out.curves_path)
        if self.chief:
            tmp = out.file(RunDir.MODEL_TMP)
            self.model.save(tmp)
            os.replace(tmp, out.model_path)
            shutil.rmtree(out.backup_dir, ignore_errors=True)  # a finished run resumes nothing; checkpoints stay
        else:
            shutil.rmtree(out.path, ignore_errors=True)
            with contextlib.suppress(OSError):  # the last worker to finish removes .workers/
                os.rmdir(RunDir(self.run_dir).workers_root)
        return RunResult(self.run_dir, metrics, self.model)


@contextlib.contextmanager
def _callers_random_state_kept() -> Any:
    """A run seeds Python, NumPy and TensorFlow with its own seed; afterwards the caller's Python and NumPy
    random streams continue where they were, as if no run had drawn from them."""
    import random

    import numpy as np

    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def run(recipe: Recipe, cfg: Any, run_dir: str, *, explicit: frozenset = frozenset(),
        extra_callbacks: Sequence[Any] = (), verbose: int | str = "auto") -> RunResult:
    """Train ``recipe`` with ``cfg`` into ``run_dir`` (resuming if it holds an unfinished run)."""
    return Runner(recipe, cfg, run_dir, explicit=explicit, extra_callbacks=extra_callbacks, verbose=verbose).run()


def _check_divisible(strategy: Any, global_batch: int) -> int:
    """The job's replicas, once the global batch is known to split evenly between them (one error line if not)."""
    replicas = strategy.num_replicas_in_sync
    if global_batch % replicas:
        raise ConfigError(f"train.batch_size={global_batch} is not a multiple of the job's {replicas} replicas; "
                          f"use {global_batch - global_batch % replicas or replicas}")
    return replicas


def sharded_input(strategy: Any, sharded_train: Callable[[tuple[int, int], int], Any], global_batch: int,
                  steps_done: int) -> Any:
    """The training input of a multi-worker job from ``Datasets.sharded_train``: each worker builds its own
    part (per-replica batches), resumed after ``steps_done`` steps by skipping the batches its replicas took."""
    replicas = _check_divisible(strategy, global_batch)

    def per_worker(context: Any) -> Any:
        ds = sharded_train((context.num_input_pipelines, context.input_pipeline_id),
                           context.get_per_replica_batch_size(global_batch))
        per_step = replicas // context.num_input_pipelines  # this worker's replicas each take a batch a step
        return ds.skip(steps_done * per_step) if steps_done else ds

    return strategy.distribute_datasets_from_function(per_worker)


def service_input(strategy: Any, data: Datasets, train: Any, run_dir: str, steps_done: int, steps: int) -> Any:
    """The training input read through the tf.data service at ``train.data_service``: the passes over the
    data from the one ``steps_done`` lies in, enough of them for the run's remaining ``steps - steps_done``
    batches (plus one, as the workers' shares of the last pass are not known ahead), as one service job the
    run's trainers share. Under multi_worker each trainer reads per-replica batches from it."""
    from zoo.data.service import distribute, job_name, service_address

    address = service_address(train.data_service)
    per_pass = max(1, data.steps_per_epoch)
    first = steps_done // per_pass
    passes = -(-steps // per_pass) - first + 1
    job = job_name(run_dir, steps_done)
    log.info("input: tf.data service %s, job %s, passes %d-%d (each file of a pass read by one service worker)%s",
             address, job, first, first + passes - 1,
             f"; resumed after {steps_done} steps: pass {first} restarts from its beginning (the service's order is "
             "not deterministic, so its exact position cannot be skipped to)" if steps_done else "")
    if train.strategy != "multi_worker":
        return distribute(data.service_train(train.batch_size, first, passes), address, job)
    _check_divisible(strategy, train.batch_size)

    def per_worker(context: Any) -> Any:
        batch = context.get_per_replica_batch_size(train.batch_size)
        return distribute(data.service_train(batch, first, passes), address, job)

    return strategy.distribute_datasets_from_function(per_worker)


def _fit_scope(strategy: str, model: Any) -> Any:
    """Keras 3.15's fit needs two work-arounds under MultiWorkerMirroredStrategy and one of them under
    MirroredStrategy (zoo.keras_compat), undone after the run."""
    if strategy not in ("multi_worker", "mirrored"):
        return contextlib.nullcontext()
    from zoo import keras_compat

    if strategy == "multi_worker":
        return keras_compat.multi_worker_fit(model)
    return keras_compat.per_replica_build(model)


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
    from zoo.recipes import get_recipe

    recipe = get_recipe(recipe_name)
    cfg, explicit = resolve_config(recipe.config_class, overrides)
    return run(recipe, cfg, run_dir, explicit=explicit, **kwargs)


__all__ = ["TrainConfig", "Datasets", "Recipe", "RunResult", "Runner", "run", "train", "resolve_config",
           "default_run_dir"]
