"""Recipe: knowledge distillation of a trained text classifier into a smaller student.

    zoo train distill --teacher runs/<bert_classify run> --student text_cnn --data train.tsv --eval-data dev.tsv
    zoo train distill --teacher runs/<run> --student bert_tiny --data train.tsv

The student learns from the labels and from the teacher's softened outputs (Hinton et al. 2015):
``loss = alpha * CE(y, s) + (1 - alpha) * T^2 * KL(softmax(t / T) || softmax(s / T))``. The teacher
runs once over the training texts before training (its logits are kept for every epoch; no dropout
at inference, so they do not change). The student reads the teacher's WordPiece ids (same
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
from zoo.recipes.text_data import TextDataConfig, predict_texts, read_splits, text_classification_info, text_dataset
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
    """What prepare_data hands evaluate: the teacher, and the eval set with the teacher's logits on it."""

    preprocessor: Any
    teacher: Any
    x_eval: Any
    y_eval: Any
    teacher_eval_logits: Any


def prepare_data(cfg: DistillConfig, explicit: frozenset) -> tuple[DistillConfig, Datasets]:
    d = cfg.data
    teacher, pre, info = load_teacher(cfg.teacher)
    if bool(d.pair_column) != (info.input.pair_name is not None):
        raise ConfigError("the teacher was trained on " + ("text pairs" if info.input.pair_name else "single texts")
                          + "; set data.pair_column accordingly")
    splits = read_splits(d, cfg.train.seed, class_names=info.class_names)
    names, x_train, y_train, x_eval, y_eval = (splits.class_names, splits.x_train, splits.y_train, splits.x_eval,
                                               splits.y_eval)
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

    soft = predict_texts(teacher, x_train, pre)  # once; reused every epoch
    packed = np.concatenate([y_train[:, None].astype(np.float32), soft], axis=1)
    val_packed = np.concatenate([splits.y_val[:, None].astype(np.float32),
                                 predict_texts(teacher, splits.x_val, pre)], axis=1)
    batch = cfg.train.batch_size
    n_eval = min(d.eval_sample_size, len(x_eval))
    state = DistillState(pre, teacher, x_eval, y_eval, predict_texts(teacher, x_eval, pre))
    return cfg, Datasets(
        train=text_dataset(x_train, packed, pre, batch, shuffle_seed=cfg.train.seed),
        steps_per_epoch=max(1, math.ceil(len(x_train) / batch)),
        validation=text_dataset(splits.x_val, val_packed, pre, batch), test=None,
        eval_sample=(x_eval[:n_eval], y_eval[:n_eval]), calibration=x_train[:d.calibration_size],
        info={"class_names": names, "pair": splits.pair, "teacher": os.path.abspath(cfg.teacher),
              "counts": splits.counts, **splits.bad_rows},
        files={RunDir.VOCAB: "\n".join(pre.vocabulary) + "\n"}, state=state)


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
    x_eval, y_eval = data.state.x_eval, data.state.y_eval
    pre = data.state.preprocessor
    student = float((predict_texts(model, x_eval, pre, cfg.train.batch_size).argmax(-1) == y_eval).mean())
    teacher = float((data.state.teacher_eval_logits.argmax(-1) == y_eval).mean())
    x1 = pre(tuple(list(c) for c in x_eval[:1].T) if x_eval.ndim == 2 else list(x_eval[:1]))
    student_ms, teacher_ms = _latency_ms(model, x1), _latency_ms(data.state.teacher, x1)
    return {"eval_accuracy": student, "teacher_eval_accuracy": teacher,
            "accuracy_vs_teacher": student / teacher if teacher else 0.0,
            "student_latency_ms": student_ms, "teacher_latency_ms": teacher_ms,
            "latency_vs_teacher": student_ms / teacher_ms, "student_parameters": float(model.count_params()),
            "teacher_parameters": float(data.state.teacher.count_params())}


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
