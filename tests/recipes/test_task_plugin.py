"""A task declared in this test alone (no edit anywhere else in the zoo) trains, exports and serves.

The task plugins in ``zoo.tasks`` are the only table of tasks: run.json parsing, ``zoo train``'s recipe
lookup, ``zoo export``'s exporter and what it prints, and ``zoo.load``'s registrations all derive from
them. Here a tabular classifier (four numbers in, one of three classes out) is registered as a new task
with its own run.json dataclass and recipe, and goes through the user's commands: ``zoo train``,
``zoo export`` and ``zoo serve`` (in this process).
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pytest

from zoo.recipes.engine.config import OptimizerConfig, TrainConfig
from zoo.recipes.engine.run import Datasets, Recipe
from zoo.rundir import RunDir, RunInfo, SignatureTensor

CLASSES = ("low", "middle", "high")


@dataclass(frozen=True)
class TabularInfo(RunInfo):
    TASK: ClassVar[str] = "tabular_classification"
    input: SignatureTensor = SignatureTensor("features", "float32", (None, 4))
    class_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class TabularConfig:
    hidden: int = 16
    examples: int = 600
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        epochs=12, batch_size=32, tensorboard=False, checkpoint_every_epoch=False,
        optimizer=OptimizerConfig(name="adam", learning_rate=1e-2)))


def _blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three well-separated Gaussian clusters in four dimensions."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n).astype("int32")
    centers = np.array([[-2, 0, 1, 0], [0, 2, -1, 1], [2, -2, 0, -1]], "float32")
    return (centers[y] + rng.normal(0, 0.5, (n, 4))).astype("float32"), y


def prepare_data(cfg: TabularConfig, explicit: frozenset) -> tuple[TabularConfig, Datasets]:
    import tensorflow as tf

    x, y = _blobs(cfg.examples, cfg.train.seed)
    x_eval, y_eval = _blobs(200, cfg.train.seed + 1)
    batch = cfg.train.batch_size
    train = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=cfg.train.seed).batch(batch).repeat()
    return cfg, Datasets(
        train=train, steps_per_epoch=math.ceil(len(x) / batch),
        validation=tf.data.Dataset.from_tensor_slices((x_eval, y_eval)).batch(batch),
        test=tf.data.Dataset.from_tensor_slices((x_eval, y_eval)).batch(batch),
        eval_sample=(x_eval[:64], y_eval[:64]), calibration=x[:64], info={"examples": len(x)})


def build_model(cfg: TabularConfig, data: Datasets) -> Any:
    import keras

    inputs = keras.Input((4,), name="features")
    hidden = keras.layers.Dense(cfg.hidden, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(len(CLASSES), name="logits")(hidden), name="tabular_mlp")


def compile_args(cfg: TabularConfig) -> dict[str, Any]:
    import keras

    return {"loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True), "metrics": ["accuracy"]}


def run_info(cfg: TabularConfig, data: Datasets) -> TabularInfo:
    return TabularInfo(recipe="tabular_classify", model="tabular_mlp", data=data.info, class_names=CLASSES)


RECIPE = Recipe(name="tabular_classify", description="A tabular classifier (a test's own task).",
                config_class=TabularConfig, prepare_data=prepare_data, build_model=build_model,
                compile_args=compile_args, run_info=run_info)


@pytest.fixture
def tabular_task():
    from zoo import tasks
    from zoo.export.exporter import ImageClassifierExporter  # numeric inputs -> the serving head, any shape

    task = tasks.register(tasks.Task(
        name=TabularInfo.TASK, description="four numbers in, a class out", info=TabularInfo,
        recipes={"tabular_classify": RECIPE}, exporter=ImageClassifierExporter,
        export_summary=lambda report: f"tabular: {report['examples']} held-out rows"))
    yield task
    tasks.unregister(task.name)
    assert "tabular_classify" not in tasks.recipe_refs()


def test_a_task_declared_in_a_test_trains_exports_and_serves(tabular_task, tmp_path, capsys):
    import httpx

    from zoo import tasks
    from zoo.cli import main
    from zoo.export.serve.server import ModelServer, ServeOptions

    assert "tabular_classify" in __import__("zoo.recipes", fromlist=["list_recipes"]).list_recipes()
    run_dir, base = tmp_path / "run", tmp_path / "exports"
    python_state, numpy_state = random.getstate(), np.random.get_state()
    assert main(["train", "tabular_classify", "--run-dir", str(run_dir), "--quiet", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    # The run seeded what it drew from, and the caller's random streams go on where they were.
    assert random.getstate() == python_state and np.array_equal(np.random.get_state()[1], numpy_state[1])
    losses = [e["loss"] for e in metrics["epochs"]]
    assert losses[-1] < 0.5 * losses[0] and metrics["final"]["test_accuracy"] >= 0.95, metrics["final"]
    run = RunDir.open(str(run_dir))
    assert isinstance(run.info, TabularInfo) and run.info.class_names == CLASSES  # run.json read back typed
    assert tasks.owner_of(run.info) is tabular_task

    assert main(["export", str(run_dir), "--to", str(base), "--name", "tabular", "--formats",
                 "saved_model,tflite"]) == 0
    out = capsys.readouterr().out
    assert f"published {base / 'tabular' / '1'}" in out and "tabular: 64 held-out rows" in out  # the task's line
    report = json.loads((base / "tabular" / "1" / "report.json").read_text())
    assert report["task"] == "tabular_classification" and set(report["formats"]) == {"saved_model", "tflite"}
    assert report["formats"]["tflite"]["max_abs_diff"] < 1e-4

    x, y = _blobs(200, run.read_config()["train"]["seed"] + 1)
    with ModelServer(ServeOptions(base=str(base), port=0, rest_api_port=0)) as server:
        reply = httpx.post(f"{server.rest_url}/v1/models/tabular:predict", json={"instances": x[:20].tolist()},
                           timeout=60)
    assert reply.status_code == 200, reply.text
    served = [p["class_name"] for p in reply.json()["predictions"]]
    assert np.mean([s == CLASSES[t] for s, t in zip(served, y[:20])]) >= 0.9, served


def test_tasks_are_checked_when_registered(tabular_task):
    from zoo import tasks
    from zoo.errors import ConfigError

    with pytest.raises(ConfigError, match="registered twice"):
        tasks.register(tabular_task)
    with pytest.raises(ConfigError, match="already belong to another task"):
        tasks.register(tasks.Task(name="other", description="", produces="tabular_classification",
                                  recipes={"image_classify": "zoo.recipes.image_classify"}))
    with pytest.raises(ConfigError, match="info class TabularInfo says TASK='tabular_classification'"):
        tasks.Task(name="tabular", description="", info=TabularInfo)
    with pytest.raises(ConfigError, match="one of the two"):
        tasks.Task(name="neither", description="")


def test_every_table_is_derived_from_the_builtin_plugins():
    """The six built-in tasks own every recipe, run.json schema, exporter and Keras registration there is."""
    from zoo import saving, tasks
    from zoo.recipes import list_recipes

    builtin = [t.name for t in tasks.all_tasks()][:6]
    assert builtin == ["image_classification", "text_classification", "masked_lm", "question_answering",
                       "translation", "distillation"]
    assert list_recipes() == sorted(["image_classify", "bert_classify", "bert_pretrain", "bert_qa", "translate",
                                     "distill"])
    assert sorted(tasks.run_info_classes()) == sorted(set(builtin) - {"distillation"})
    assert tasks.get_task("distillation").produces == "text_classification"
    exportable = {t.name for t in tasks.all_tasks() if t.exporter is not None}
    assert exportable == {"image_classification", "text_classification", "question_answering", "translation"}
    assert {"zoo.models.bert", "zoo.models.seq2seq", "zoo.models.text_task", "zoo.tokenizers",
            "zoo.optimizers"} <= set(saving.serializable_modules())
    # The inference wrappers the CLI loads through their task (zoo translate, zoo answer).
    from zoo.answerer import Answerer
    from zoo.translator import Translator

    assert {t.name: t.predictor_class() for t in tasks.all_tasks() if t.predictor is not None} == {
        "question_answering": Answerer, "translation": Translator}
    with pytest.raises(tasks.ConfigError, match="no predictor; load its model with zoo.load"):
        tasks.get_task("image_classification").predictor_class()


def test_a_recipe_overrides_one_phase_of_the_runner(tmp_path):
    """Runner's phases are methods: a subclass changes one (here: an extra final metric) and the rest run as
    they do for every recipe (the run dir is complete and its metrics hold the extra one)."""
    from zoo.recipes.engine.run import Runner, resolve_config

    class WithWeightNorm(Runner):
        def evaluate(self) -> None:
            super().evaluate()
            self.final["weight_norm"] = float(sum(np.square(w).sum() for w in self.model.get_weights()) ** 0.5)

    cfg, explicit = resolve_config(TabularConfig, {"train.epochs": 2})
    result = WithWeightNorm(RECIPE, cfg, str(tmp_path / "run"), explicit=explicit, verbose=0).run()
    assert set(result.metrics["final"]) == {"test_loss", "test_accuracy", "weight_norm"}
    assert result.metrics["final"]["weight_norm"] > 0 and result.metrics["epochs_completed"] == 2
    assert RunDir.open(str(tmp_path / "run")).is_finished
