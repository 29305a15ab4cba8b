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
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from zoo import registry
from zoo.config import check_range
from zoo.errors import ConfigError, DataError
from zoo.recipes.bert_classify import TextDataConfig, stack_texts, text_dataset
from zoo.recipes.engine.optim import OptimizerConfig
from zoo.recipes.engine.run import Datasets, Recipe, TrainConfig, main_for


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


@keras.saving.register_keras_serializable(package="zoo")
class DistillationLoss(keras.losses.Loss):
    """``alpha * CE(label, s) + (1 - alpha) * T^2 * KL(p_t || p_s)`` at temperature ``T``.

    ``y_true`` packs ``[label, teacher logits...]`` per example (float), so the loss needs no second input.
    """

    def __init__(self, alpha: float = 0.5, temperature: float = 2.0, name: str = "distillation", **kwargs: Any):
        super().__init__(name=name, **kwargs)
        self.alpha, self.temperature = float(alpha), float(temperature)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        ops = keras.ops
        y_pred = ops.cast(y_pred, "float32")
        labels = ops.cast(y_true[:, 0], "int32")
        hard = keras.losses.sparse_categorical_crossentropy(labels, y_pred, from_logits=True)
        t = self.temperature
        teacher = ops.log_softmax(ops.cast(y_true[:, 1:], "float32") / t, axis=-1)
        student = ops.log_softmax(y_pred / t, axis=-1)
        soft = ops.sum(ops.exp(teacher) * (teacher - student), axis=-1) * (t * t)
        return self.alpha * hard + (1.0 - self.alpha) * soft

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "alpha": self.alpha, "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="zoo")
def packed_label_accuracy(y_true: Any, y_pred: Any) -> Any:
    """Accuracy against the label in column 0 of the packed targets."""
    return keras.metrics.sparse_categorical_accuracy(keras.ops.cast(y_true[:, 0], "int32"), y_pred)


def load_teacher(run_dir: str) -> tuple[Any, Any, dict[str, Any]]:
    """(teacher model, its preprocessor, its run.json) from a finished text-classification run."""
    import zoo
    from zoo.tokenizers import BertPreprocessor, load_vocabulary

    info_path, model_path = os.path.join(run_dir, "run.json"), os.path.join(run_dir, "model.keras")
    if not run_dir or not os.path.isfile(info_path) or not os.path.isfile(model_path):
        raise ConfigError(f"--teacher {run_dir!r} is not a finished run dir (run.json and model.keras are needed)")
    with open(info_path, encoding="utf-8") as fh:
        info = json.load(fh)
    if info.get("task") != "text_classification" or "preprocessor" not in info:
        raise ConfigError(f"--teacher {run_dir!r} is a {info.get('task')!r} run; distillation needs a text "
                          "classifier run (bert_classify)")
    p = info["preprocessor"]
    pre = BertPreprocessor(load_vocabulary(os.path.join(run_dir, p["vocabulary_file"])),
                           sequence_length=p["sequence_length"], lowercase=p["lowercase"])
    return zoo.load(model_path, compile=False), pre, info


def teacher_logits(teacher: Any, pre: Any, texts: np.ndarray, batch: int = 64) -> np.ndarray:
    ds = text_dataset(texts, None, pre, batch).map(lambda x, y: x)
    return np.asarray(teacher.predict(ds, verbose=0), dtype=np.float32)


def prepare_data(cfg: DistillConfig, explicit: frozenset) -> tuple[DistillConfig, Datasets]:
    from zoo import data as zdata

    d = cfg.data
    if not d.source:
        raise DataError("no training data: pass --data FILE (CSV, TSV or JSONL with text and label columns)")
    teacher, pre, info = load_teacher(cfg.teacher)
    names = list(info["class_names"])
    pair = d.pair_column or None
    if bool(pair) != bool(info.get("pair")):
        raise ConfigError("the teacher was trained on " + ("text pairs" if info.get("pair") else "single texts")
                          + "; set data.pair_column accordingly")
    train = zdata.read_labelled_text(d.source, d.text_column, d.label_column, pair, d.format)
    x_train, y_train = stack_texts(train.texts, train.pairs), zdata.encode_labels(train, names)
    if d.eval_source:
        evals = zdata.read_labelled_text(d.eval_source, d.text_column, d.label_column, pair, d.format)
        x_eval, y_eval = stack_texts(evals.texts, evals.pairs), zdata.encode_labels(evals, names)
    else:
        train_idx, eval_idx = zdata.stratified_split(y_train, (d.validation_split,), cfg.train.seed)
        x_train, y_train, x_eval, y_eval = x_train[train_idx], y_train[train_idx], x_train[eval_idx], y_train[eval_idx]
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

    soft = teacher_logits(teacher, pre, x_train)  # once; reused every epoch
    packed = np.concatenate([y_train[:, None].astype(np.float32), soft], axis=1)
    eval_packed = np.concatenate([y_eval[:, None].astype(np.float32),
                                  teacher_logits(teacher, pre, x_eval)], axis=1)
    batch = cfg.train.batch_size
    n_eval = min(d.eval_sample_size, len(x_eval))
    state = {"preprocessor": pre, "teacher": teacher, "x_eval": x_eval, "y_eval": y_eval,
             "teacher_eval_logits": eval_packed[:, 1:]}
    return cfg, Datasets(
        train=text_dataset(x_train, packed, pre, batch, shuffle_seed=cfg.train.seed),
        steps_per_epoch=max(1, math.ceil(len(x_train) / batch)),
        validation=text_dataset(x_eval, eval_packed, pre, batch), test=None,
        eval_sample=(x_eval[:n_eval], y_eval[:n_eval]), calibration=x_train[:d.calibration_size],
        info={"class_names": names, "pair": pair is not None, "teacher": os.path.abspath(cfg.teacher),
              "counts": {"train": int(len(x_train)), "eval": int(len(x_eval))}},
        files={"vocab.txt": "\n".join(pre.vocabulary) + "\n"}, state=state)


def build_model(cfg: DistillConfig, data: Datasets) -> Any:
    """The student, taking the BERT input dict (token_ids, segment_ids, padding_mask) either way."""
    if cfg.model.name != "text_cnn":
        from zoo.models.bert import BertClassifier, build_bert

        return BertClassifier(build_bert(cfg.model), num_classes=len(data.info["class_names"]), name="student")
    inner = registry.build_from_config(cfg.model)
    inputs = {k: keras.Input(shape=(None,), dtype="int32", name=k) for k in ("token_ids", "segment_ids",
                                                                             "padding_mask")}
    # TextCNN reads token ids only; [PAD] positions are id 0 like any token (as in Kim 2014).
    logits = inner(inputs["token_ids"])
    return keras.Model(inputs, logits, name="student")


def compile_args(cfg: DistillConfig) -> dict[str, Any]:
    return {"loss": DistillationLoss(cfg.alpha, cfg.temperature), "metrics": [packed_label_accuracy]}


def _latency_ms(model: Any, x1: dict[str, Any], runs: int = 30) -> float:
    from zoo.export.verify import latency_ms

    return latency_ms(lambda x: model(x, training=False), x1, runs, warmup=3)["p50"]


def evaluate(cfg: DistillConfig, model: Any, data: Datasets) -> dict[str, float]:
    x_eval, y_eval = data.state["x_eval"], data.state["y_eval"]
    pre = data.state["preprocessor"]
    ds = text_dataset(x_eval, None, pre, cfg.train.batch_size).map(lambda x, y: x)
    student = float((np.asarray(model.predict(ds, verbose=0)).argmax(-1) == y_eval).mean())
    teacher = float((data.state["teacher_eval_logits"].argmax(-1) == y_eval).mean())
    x1 = pre(tuple(list(c) for c in x_eval[:1].T) if x_eval.ndim == 2 else list(x_eval[:1]))
    student_ms, teacher_ms = _latency_ms(model, x1), _latency_ms(data.state["teacher"], x1)
    return {"eval_accuracy": student, "teacher_eval_accuracy": teacher,
            "accuracy_vs_teacher": student / teacher if teacher else 0.0,
            "student_latency_ms": student_ms, "teacher_latency_ms": teacher_ms,
            "latency_vs_teacher": student_ms / teacher_ms, "student_parameters": float(model.count_params()),
            "teacher_parameters": float(data.state["teacher"].count_params())}


def run_info(cfg: DistillConfig, data: Datasets) -> dict[str, Any]:
    return {"recipe": RECIPE.name, "task": "text_classification", "model": f"distilled_{cfg.model.name}",
            "teacher": data.info["teacher"],
            "input": {"name": "text", "pair_name": "text_pair" if data.info["pair"] else None, "dtype": "string",
                      "shape": [None]},
            "preprocessor": {"vocabulary_file": "vocab.txt", "sequence_length": cfg.data.sequence_length,
                             "lowercase": cfg.data.lowercase},
            "class_names": data.info["class_names"], "data": data.info}


RECIPE = Recipe(
    name="distill",
    description="Distill a trained text classifier (e.g. BERT) into a smaller student (text_cnn or a BERT preset).",
    config_class=DistillConfig, prepare_data=prepare_data, build_model=build_model, compile_args=compile_args,
    run_info=run_info, evaluate=evaluate)

FLAGS = {
    "--teacher": ("teacher", "run dir of the teacher (a bert_classify run)"),
    "--student": ("model.name", "student model: text_cnn or a BERT preset"),
    "--data": ("data.source", "training file: CSV, TSV (header row) or JSONL"),
    "--eval-data": ("data.eval_source", "evaluation file of the same kind"),
}


def main(argv: Sequence[str] | None = None) -> int:
    return main_for(RECIPE, argv, FLAGS)


if __name__ == "__main__":
    raise SystemExit(main())
