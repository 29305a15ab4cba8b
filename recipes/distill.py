"""Recipe: knowledge distillation of a trained text classifier into a smaller student.

    zoo train distill --teacher runs/<bert_classify run> --student text_cnn --data train.tsv --eval-data dev.tsv
    zoo train distill --teacher runs/<run> --student bert_tiny --data train.tsv

The student learns from the labels and from the teacher's softened outputs (Hinton et al. 2015):
``loss = alpha * CE(y, s) + (1 - alpha) * T^2 * KL(softmax(t / T) || softmax(s / T))``. The teacher
runs once over the training texts before training (its logits are kept for every epoch; no dropout
at inference, so they do not change); on streamed data (``data.streaming``) it runs batch by batch in
the input pipeline instead. The student reads the teacher's WordPiece ids (same
vocabulary and sequence length), so its run exports like any text classifier: raw strings in.
Reports the student's and the teacher's eval accuracy, their ratio, and the student's latency
relative to the teacher's.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zoo import registry
from zoo.config import check_range
from zoo.errors import ConfigError
from zoo.recipes.engine.cli import main_for
from zoo.recipes.engine.config import OptimizerConfig, TrainConfig
from zoo.recipes.engine.run import Datasets, Recipe
from zoo.recipes.text_data import (
    TextDataConfig,
    logits_and_labels,
    predict_texts,
    read_splits,
    text_classification_info,
    text_dataset,
)
from zoo.rundir import RunDir, RunDirError
from zoo.tasks.text_classification import TextClassificationInfo


def student_config(name: str) -> Any:
    entry = registry.get_entry(name)
    if name != "text_cnn" and entry.task != "text_encoder":
        raise ConfigError(f"student '{name}' must be text_cnn or a BERT preset ("
                          + ", ".join(registry.list_models("text_encoder")) + ")")
    return registry.default_config(name)


@dataclass(frozen=True)
class DistillConfig:
    """Teacher run, student model, data, and the distillation loss (alpha, temperature)."""

    teacher: str = ""
    model: Any = field(default_factory=lambda: registry.default_config("text_cnn"),
                       metadata={"polymorphic": student_config})
    data: TextDataConfig = field(default_factory=TextDataConfig)
    alpha: float = 0.5
    temperature: float = 2.0
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        epochs=10, batch_size=32, optimizer=OptimizerConfig(name="adam", learning_rate=1e-3)))

    def __post_init__(self) -> None:
        check_range("alpha", self.alpha, 0.0, 1.0)
        check_range("temperature", self.temperature, 0.0, low_inclusive=False)


def load_teacher(run_dir: str) -> tuple[Any, Any, TextClassificationInfo]:
    """(teacher model, its preprocessor, its run info) from a finished text-classification run."""
    if not run_dir:
        raise ConfigError("no teacher: pass --teacher with the run dir of a bert_classify run")
    try:
        run = RunDir.open(run_dir)
        info = run.expect(TextClassificationInfo, purpose="distillation (--teacher)")
    except RunDirError as exc:
        raise ConfigError(f"--teacher: {exc}") from exc
    return run.load_model(), run.preprocessor(), info


@dataclass(frozen=True)
class DistillState:
    """What prepare_data hands evaluate: the teacher, and the eval split's batches."""

    preprocessor: Any
    teacher: Any
    eval_batches: Any  # (inputs, label) batches
    x1: Any  # one tokenized example (latency)


def _with_teacher(teacher: Any) -> Any:
    """(inputs, label) -> (inputs, [label, teacher logits...]): the teacher run batch by batch in the input
    pipeline (streamed data, which has no list to run it over once)."""
    import tensorflow as tf

    def add(x: Any, y: Any) -> Any:
        return x, tf.concat([tf.cast(y, tf.float32)[:, None], tf.cast(teacher(x, training=False), tf.float32)], 1)

    return add


def prepare_data(cfg: DistillConfig, explicit: frozenset) -> tuple[DistillConfig, Datasets]:
    d = cfg.data
    teacher, pre, info = load_teacher(cfg.teacher)
    if bool(d.pair_column) != (info.input.pair_name is not None):
        raise ConfigError("the teacher was trained on " + ("text pairs" if info.input.pair_name else "single texts")
                          + "; set data.pair_column accordingly")
    splits = read_splits(d, cfg.train.seed, class_names=info.class_names)
    names = splits.class_names
    seq = pre.sequence_length
    if "data.sequence_length" in explicit and d.sequence_length != seq:
        raise ConfigError(f"data.sequence_length={d.sequence_length}, but the teacher reads {seq} tokens; "
                          "the student shares the teacher's tokenization")
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(d, sequence_length=seq, lowercase=pre.lowercase))
    model_cfg = cfg.model
    if model_cfg.name == "text_cnn":
        model_cfg = dataclasses.replace(model_cfg, vocab_size=pre.vocabulary_size, sequence_length=seq,
                                        num_classes=len(names))
    else:
        model_cfg = dataclasses.replace(model_cfg, vocab_size=pre.vocabulary_size,
                                        max_sequence_length=max(seq, model_cfg.max_sequence_length))
    cfg = dataclasses.replace(cfg, model=model_cfg)

    batch = cfg.train.batch_size
    if splits.streamed:
        add_teacher = _with_teacher(teacher)
        train = splits.train_dataset(pre, batch, cfg.train.seed).map(add_teacher)
        validation = splits.validation_dataset(pre, batch).map(add_teacher)
    else:  # the teacher runs once over the training texts; its logits are reused every epoch
        def packed(x: Any, y: Any) -> Any:
            return np.concatenate([y[:, None].astype(np.float32), predict_texts(teacher, x, pre)], axis=1)

        train = text_dataset(splits.x_train, packed(splits.x_train, splits.y_train), pre, batch,
                             shuffle_seed=cfg.train.seed)
        validation = text_dataset(splits.x_val, packed(splits.x_val, splits.y_val), pre, batch)
    x_sample, y_sample = splits.eval_sample(d.eval_sample_size)
    x1 = pre(tuple(list(c) for c in x_sample[:1].T) if x_sample.ndim == 2 else list(x_sample[:1]))
    state = DistillState(pre, teacher, splits.eval_dataset(pre, batch), x1)
    return cfg, Datasets(
        train=train, steps_per_epoch=max(1, math.ceil(splits.counts["train"] / batch)), validation=validation,
        test=None, eval_sample=(x_sample, y_sample), calibration=splits.calibration(d.calibration_size),
        info={"class_names": names, "pair": splits.pair, "teacher": os.path.abspath(cfg.teacher),
              "counts": splits.counts, "streamed": splits.streamed, **splits.bad_rows},
        files={RunDir.VOCAB: "\n".join(pre.vocabulary) + "\n"}, state=state,
        # Under multi_worker each worker streams its own part of every epoch, its teacher run on that part.
        sharded_train=(lambda shard, size: splits.train_dataset(pre, size, cfg.train.seed, shard).map(add_teacher))
        if splits.streamed else None)


def build_model(cfg: DistillConfig, data: Datasets) -> Any:
    """The student, taking the BERT input dict (token_ids, segment_ids, padding_mask) either way, and
    owning the preprocessor, so its saved model takes raw strings too."""
    pre = data.state.preprocessor
    if cfg.model.name != "text_cnn":
        from zoo.models.bert import BertClassifier, build_bert

        return BertClassifier(build_bert(cfg.model), num_classes=len(data.info["class_names"]), preprocessor=pre,
                              name="student")
    from zoo.models.text_task import TokenIdsClassifier

    return TokenIdsClassifier(registry.build_from_config(cfg.model), preprocessor=pre, name="student")


def compile_args(cfg: DistillConfig) -> dict[str, Any]:
    from zoo.losses import DistillationLoss, packed_label_accuracy

    return {"loss": DistillationLoss(cfg.alpha, cfg.temperature), "metrics": [packed_label_accuracy]}


def _latency_ms(model: Any, x1: dict[str, Any], runs: int = 30) -> float:
    from zoo.export.verify import latency_ms

    return latency_ms(lambda x: model(x, training=False), x1, runs, warmup=3)["p50"]


def evaluate(cfg: DistillConfig, model: Any, data: Datasets) -> dict[str, float]:
    state = data.state
    (student_logits, teacher_logits), y_eval = logits_and_labels([model, state.teacher], state.eval_batches)
    student = float((student_logits.argmax(-1) == y_eval).mean())
    teacher = float((teacher_logits.argmax(-1) == y_eval).mean())
    student_ms, teacher_ms = _latency_ms(model, state.x1), _latency_ms(state.teacher, state.x1)
    return {"eval_accuracy": student, "teacher_eval_accuracy": teacher,
            "accuracy_vs_teacher": student / teacher if teacher else 0.0,
            "student_latency_ms": student_ms, "teacher_latency_ms": teacher_ms,
            "latency_vs_teacher": student_ms / teacher_ms, "student_parameters": float(model.count_params()),
            "teacher_parameters": float(state.teacher.count_params())}


def run_info(cfg: DistillConfig, data: Datasets) -> TextClassificationInfo:
    return text_classification_info(RECIPE.name, f"distilled_{cfg.model.name}", cfg, data,
                                    teacher=data.info["teacher"])


FLAGS = {
    "--teacher": ("teacher", "run dir of the teacher (a bert_classify run)"),
    "--student": ("model.name", "student model: text_cnn or a BERT preset"),
    "--data": ("data.source", "training file: CSV, TSV (header row) or JSONL"),
    "--eval-data": ("data.eval_source", "evaluation file of the same kind"),
}

RECIPE = Recipe(
    name="distill",
    description="Distill a trained text classifier (e.g. BERT) into a smaller student (text_cnn or a BERT preset).",
    config_class=DistillConfig, prepare_data=prepare_data, build_model=build_model, compile_args=compile_args,
    run_info=run_info, evaluate=evaluate, flags=FLAGS)


def main(argv: Sequence[str] | None = None) -> int:
    return main_for(RECIPE, argv)


if __name__ == "__main__":
    raise SystemExit(main())
