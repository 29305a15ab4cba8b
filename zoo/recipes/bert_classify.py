"""Recipe: fine-tune a BERT text classifier on CSV / TSV / JSONL (single texts or text pairs).

    zoo train bert_classify --data train.tsv --eval-data dev.tsv --init hf:path/to/hf_bert_dir
    zoo train bert_classify --data train.csv --set model.preset=bert_mini          # from scratch
    zoo train bert_classify --data pairs.jsonl --set data.pair_column=hypothesis --init runs/<pretrain run>

``--init`` takes ``hf:DIR`` (a Hugging Face BERT directory), ``keras_hub:DIR`` (a local keras-hub
preset) or a run dir of ``bert_pretrain`` / ``bert_classify``; without it the model starts from
scratch with a WordPiece vocabulary learned from the training texts. Reports accuracy and macro-F1.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zoo import registry
from zoo.config import check_choice, check_range
from zoo.errors import ConfigError, DataError
from zoo.recipes.engine.optim import OptimizerConfig, ScheduleConfig
from zoo.recipes.engine.run import Datasets, Recipe, TrainConfig, main_for

bert_model_config = registry.preset_config_for("text_encoder", "BERT")


@dataclass(frozen=True)
class TextDataConfig:
    """Labelled text files. ``pair_column`` set means text pairs ([CLS] a [SEP] b [SEP])."""

    source: str = ""
    eval_source: str | None = None
    format: str = "auto"
    text_column: str = "text"
    pair_column: str = ""
    label_column: str = "label"
    validation_split: float = 0.1
    sequence_length: int = 128
    vocab_size: int = 8000
    lowercase: bool = True
    eval_sample_size: int = 512
    calibration_size: int = 128

    def __post_init__(self) -> None:
        check_choice("format", self.format, ("auto", "csv", "tsv", "jsonl"))
        check_range("validation_split", self.validation_split, 0.0, 1.0, high_inclusive=False)
        check_range("sequence_length", self.sequence_length, 8)
        check_range("vocab_size", self.vocab_size, 16)


@dataclass(frozen=True)
class BertClassifyConfig:
    """Model (a BERT preset; replaced by the checkpoint's shape with --init), data and training."""

    model: Any = field(default_factory=lambda: registry.default_config("bert_tiny"),
                       metadata={"polymorphic": bert_model_config})
    init: str = ""
    classifier_dropout: float = 0.1
    data: TextDataConfig = field(default_factory=TextDataConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        epochs=3, batch_size=32, optimizer=OptimizerConfig(name="adamw", learning_rate=5e-5, weight_decay=0.01),
        schedule=ScheduleConfig(name="linear", warmup_epochs=0.3)))


def load_init(init: str) -> tuple[Any, list[str], list[Any], bool]:
    """(BertConfig, vocabulary, backbone weights, lowercase) from an --init spec."""
    from zoo.tokenizers import load_vocabulary

    if init.startswith("hf:"):
        from zoo.checkpoints import import_hf_bert

        backbone, pre = import_hf_bert(init[3:], sequence_length=8)
        return backbone.config, pre.vocabulary, backbone.get_weights(), pre.lowercase
    if init.startswith("keras_hub:"):
        from zoo.checkpoints import import_keras_hub_bert

        backbone, pre = import_keras_hub_bert(init[len("keras_hub:"):], sequence_length=8)
        return backbone.config, pre.vocabulary, backbone.get_weights(), pre.lowercase
    if os.path.isdir(init):
        import json

        import zoo

        model = zoo.load(os.path.join(init, "model.keras"), compile=False)
        backbone = getattr(model, "backbone", None)
        if backbone is None:
            raise ConfigError(f"--init {init!r}: its model.keras has no BERT backbone")
        with open(os.path.join(init, "run.json"), encoding="utf-8") as fh:
            lowercase = json.load(fh).get("preprocessor", {}).get("lowercase", True)
        cfg = dataclasses.replace(backbone.config, name=backbone.name)
        return cfg, load_vocabulary(os.path.join(init, "vocab.txt")), backbone.get_weights(), lowercase
    raise ConfigError(f"--init {init!r} is not hf:DIR, keras_hub:DIR or an existing run dir")


def resolve_backbone(cfg: Any, explicit: frozenset, corpus: Callable[[], list[str]]) -> tuple[Any, Any, dict]:
    """The backbone config, the preprocessor and the initial weights of a BERT recipe run.

    With ``cfg.init`` they come from the checkpoint or run it names (``model.dropout`` still applies
    if the user set it); otherwise the vocabulary is learned from ``corpus()``. Returns
    ``(cfg with model and data.lowercase resolved, BertPreprocessor, state for build_backbone)``.
    """
    from zoo.tokenizers import BertPreprocessor, build_vocabulary

    d = cfg.data
    state: dict[str, Any] = {}
    if cfg.init:
        model_cfg, vocab, weights, lowercase = load_init(cfg.init)
        if "model.dropout" in explicit:
            model_cfg = dataclasses.replace(model_cfg, dropout=cfg.model.dropout)
        state["weights"] = weights
    else:
        vocab = build_vocabulary(corpus(), d.vocab_size, lowercase=d.lowercase)
        model_cfg, lowercase = dataclasses.replace(cfg.model, vocab_size=len(vocab)), d.lowercase
    if d.sequence_length > model_cfg.max_sequence_length:
        raise ConfigError(f"data.sequence_length={d.sequence_length} exceeds the model's "
                          f"max_sequence_length={model_cfg.max_sequence_length}")
    cfg = dataclasses.replace(cfg, model=model_cfg, data=dataclasses.replace(d, lowercase=lowercase))
    return cfg, BertPreprocessor(vocab, sequence_length=d.sequence_length, lowercase=lowercase), state


def build_backbone(cfg: Any, data: Datasets) -> Any:
    """The run's BertBackbone, with the initial weights ``resolve_backbone`` loaded, if any."""
    from zoo.models.bert import build_bert

    backbone = build_bert(cfg.model)  # not via the registry: an imported checkpoint has its own name
    if "weights" in data.state:
        backbone.set_weights(data.state["weights"])
    return backbone


def text_dataset(texts: np.ndarray, labels: np.ndarray | None, preprocessor: Any, batch: int,
                 shuffle_seed: int | None = None) -> Any:
    """Batched (inputs dict, label) from raw texts ([N] or [N, 2] for pairs), tokenized in-graph."""
    import tensorflow as tf

    from zoo.data import slices

    targets = labels if labels is not None else np.zeros(len(texts), np.int32)
    ds = slices((texts, targets), shuffle_seed)
    ds = ds.batch(batch)

    def prepare(x, y):
        inputs = (x[:, 0], x[:, 1]) if texts.ndim == 2 else x
        return preprocessor(inputs), y

    return ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def stack_texts(texts: list[str], pairs: list[str] | None) -> np.ndarray:
    return np.asarray(list(zip(texts, pairs)) if pairs is not None else texts, dtype=str)


def prepare_data(cfg: BertClassifyConfig, explicit: frozenset) -> tuple[BertClassifyConfig, Datasets]:
    from zoo import data as zdata

    d = cfg.data
    if not d.source:
        raise DataError("no training data: pass --data FILE (CSV, TSV or JSONL with text and label columns)")
    pair = d.pair_column or None
    train = zdata.read_labelled_text(d.source, d.text_column, d.label_column, pair, d.format)
    names = zdata.label_names(train.labels)
    if len(names) < 2:
        raise DataError(f"{d.source!r} has a single label ({names[0]!r}); a classifier needs two or more")
    y = zdata.encode_labels(train, names)
    x = stack_texts(train.texts, train.pairs)
    if d.eval_source:
        evals = zdata.read_labelled_text(d.eval_source, d.text_column, d.label_column, pair, d.format)
        x_eval, y_eval = stack_texts(evals.texts, evals.pairs), zdata.encode_labels(evals, names)
        x_train, y_train = x, y
    else:
        train_idx, eval_idx = zdata.stratified_split(y, (d.validation_split,), cfg.train.seed)
        if len(eval_idx) == 0:
            raise DataError("no evaluation data: pass --eval-data or raise data.validation_split")
        x_train, y_train, x_eval, y_eval = x[train_idx], y[train_idx], x[eval_idx], y[eval_idx]

    cfg, pre, state = resolve_backbone(cfg, explicit, lambda: list(train.texts) + list(train.pairs or []))
    batch = cfg.train.batch_size
    train_ds = text_dataset(x_train, y_train, pre, batch, shuffle_seed=cfg.train.seed)
    eval_ds = text_dataset(x_eval, y_eval, pre, batch)
    state.update({"preprocessor": pre, "x_eval": x_eval, "y_eval": y_eval})
    n_eval = min(d.eval_sample_size, len(x_eval))
    info = {"class_names": names, "pair": pair is not None,
            "counts": {"train": int(len(x_train)), "eval": int(len(x_eval))}}
    return cfg, Datasets(
        train=train_ds, steps_per_epoch=max(1, math.ceil(len(x_train) / batch)), validation=eval_ds, test=None,
        eval_sample=(x_eval[:n_eval], y_eval[:n_eval]), calibration=x_train[:d.calibration_size], info=info,
        files={"vocab.txt": "\n".join(pre.vocabulary) + "\n"}, state=state)


def build_model(cfg: BertClassifyConfig, data: Datasets) -> Any:
    from zoo.models.bert import BertClassifier

    return BertClassifier(build_backbone(cfg, data), num_classes=len(data.info["class_names"]),
                          dropout=cfg.classifier_dropout, name="bert_classifier")


def compile_args(cfg: BertClassifyConfig) -> dict[str, Any]:
    import keras

    return {"loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            "metrics": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]}


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Unweighted mean of per-class F1 (classes absent from both count as F1 = 0 only if predicted)."""
    scores = []
    for c in range(num_classes):
        tp = np.sum((y_pred == c) & (y_true == c))
        fp = np.sum((y_pred == c) & (y_true != c))
        fn = np.sum((y_pred != c) & (y_true == c))
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def evaluate(cfg: BertClassifyConfig, model: Any, data: Datasets) -> dict[str, float]:
    x_eval, y_eval = data.state["x_eval"], data.state["y_eval"]
    ds = text_dataset(x_eval, None, data.state["preprocessor"], cfg.train.batch_size).map(lambda x, y: x)
    pred = np.asarray(model.predict(ds, verbose=0)).argmax(-1)
    return {"eval_accuracy": float((pred == y_eval).mean()),
            "eval_macro_f1": macro_f1(y_eval, pred, len(data.info["class_names"]))}


def run_info(cfg: BertClassifyConfig, data: Datasets) -> dict[str, Any]:
    return {"recipe": RECIPE.name, "task": "text_classification", "model": "bert_classifier",
            "backbone": cfg.model.name, "init": cfg.init,
            "input": {"name": "text", "pair_name": "text_pair" if data.info["pair"] else None, "dtype": "string",
                      "shape": [None]},
            "preprocessor": {"vocabulary_file": "vocab.txt", "sequence_length": cfg.data.sequence_length,
                             "lowercase": cfg.data.lowercase},
            "class_names": data.info["class_names"], "data": data.info}


RECIPE = Recipe(
    name="bert_classify",
    description="Fine-tune a BERT classifier on labelled texts or text pairs (CSV/TSV/JSONL).",
    config_class=BertClassifyConfig, prepare_data=prepare_data, build_model=build_model,
    compile_args=compile_args, run_info=run_info, evaluate=evaluate)


FLAGS = {
    "--data": ("data.source", "training file: CSV, TSV (header row) or JSONL"),
    "--eval-data": ("data.eval_source", "evaluation file of the same kind"),
    "--init": ("init", "hf:DIR, keras_hub:DIR or a run dir to start from"),
}


def main(argv: Sequence[str] | None = None) -> int:
    return main_for(RECIPE, argv, FLAGS)


if __name__ == "__main__":
    raise SystemExit(main())
