"""Recipe: fine-tune BERT for extractive question answering on SQuAD-format data.

    zoo train bert_qa --data train.json --eval-data dev.json --init hf:path/to/hf_bert_dir
    zoo train bert_qa --data train.jsonl --init runs/<bert_pretrain run> --set data.sequence_length=256

SQuAD v1.1 / v2.0 JSON or JSON Lines (see ``zoo.data.squad``). Long contexts are cut into overlapping
windows; the model predicts a start and an end token; answers are the best span over all windows of
a question. Reports SQuAD's exact match and F1 (official normalization), per epoch on the validation
questions (``val_exact_match``, ``val_f1``) and at the end on ``--eval-data``. Data with unanswerable
questions (v2.0) turns on the no-answer rule: the answer is empty when [CLS] beats the best span by
more than ``data.null_threshold``.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zoo import registry
from zoo.config import check_range
from zoo.errors import ConfigError, DataError
from zoo.recipes.bert_setup import bert_model_config, build_backbone, resolve_backbone
from zoo.recipes.engine.cli import main_for
from zoo.recipes.engine.config import OptimizerConfig, ScheduleConfig, TrainConfig
from zoo.recipes.engine.run import Datasets, Recipe
from zoo.rundir import RunDir, WordPieceSpec
from zoo.tasks.question_answering import QuestionAnsweringInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QADataConfig:
    source: str = ""
    eval_source: str | None = None
    validation_split: float = 0.1       # of the training questions (split by context, so no passage leaks)
    sequence_length: int = 384
    doc_stride: int = 128               # tokens between the starts of consecutive windows of a context
    max_query_length: int = 64          # question tokens kept (at most half of sequence_length)
    max_answer_length: int = 30         # tokens
    null_threshold: float = 0.0         # SQuAD 2.0 data only
    vocab_size: int = 8000              # without --init: the WordPiece vocabulary learned from the data
    vocab_sample_lines: int = 200_000   # ... from a seeded sample of this many texts
    lowercase: bool = True
    eval_sample_size: int = 256

    def __post_init__(self) -> None:
        check_range("validation_split", self.validation_split, 0.0, 1.0, high_inclusive=False)
        check_range("sequence_length", self.sequence_length, 16)
        check_range("doc_stride", self.doc_stride, 1)
        check_range("max_query_length", self.max_query_length, 1)
        check_range("max_answer_length", self.max_answer_length, 1)
        check_range("vocab_sample_lines", self.vocab_sample_lines, 1)

    @property
    def query_limit(self) -> int:
        """Question tokens kept: max_query_length, at most half the sequence (the rest is the context)."""
        return min(self.max_query_length, self.sequence_length // 2)


@dataclass(frozen=True)
class BertQAConfig:
    model: Any = field(default_factory=lambda: registry.default_config("bert_tiny"),
                       metadata={"polymorphic": bert_model_config})
    init: str = ""
    data: QADataConfig = field(default_factory=QADataConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        epochs=2, batch_size=32, optimizer=OptimizerConfig(name="adamw", learning_rate=5e-5, weight_decay=0.01),
        schedule=ScheduleConfig(name="linear", warmup_epochs=0.1)))


def _split(examples: list, fraction: float, seed: int) -> tuple[list, list]:
    """Validation questions carved from the training file, whole contexts at a time."""
    contexts = sorted({e.context for e in examples})
    random.Random(seed).shuffle(contexts)
    held = set(contexts[:max(1, round(len(contexts) * fraction))]) if fraction > 0 and len(contexts) > 1 else set()
    return [e for e in examples if e.context not in held], [e for e in examples if e.context in held]


def featurize(cfg: BertQAConfig, preprocessor: Any, examples: Sequence[Any]) -> Any:
    from zoo.data.squad import build_features
    from zoo.tokenizers import fast_bert_tokenizer

    d = cfg.data
    features = build_features(examples, fast_bert_tokenizer(preprocessor.vocabulary, preprocessor.lowercase),
                              sequence_length=d.sequence_length, doc_stride=d.doc_stride,
                              max_query_length=d.query_limit, cls_id=preprocessor.cls_id,
                              sep_id=preprocessor.sep_id, pad_id=preprocessor.pad_id)
    if features.truncated_questions:
        log.warning("%d question(s) longer than %d tokens were truncated (data.max_query_length)",
                    features.truncated_questions, d.query_limit)
    return features


EXAMPLES_PER_CHUNK = 256  # questions tokenized and cut into windows together in the training pipeline


def _train_batches(cfg: BertQAConfig, preprocessor: Any, examples: Sequence[Any]) -> tuple[Any, int]:
    """The training batches, featurized in tf.data (``zoo.data.squad.training_windows``): each pass a fresh
    seeded permutation of the questions (``zoo.data.order``: a resumed run sees the same batches), taken
    EXAMPLES_PER_CHUNK at a time, their windows built in the graph in that order. A question's windows stay
    together, as in BERT's own SQuAD input (features written in example order, then a shuffle buffer of
    100); at 384 tokens most SQuAD questions fit one window. Only the questions, the distinct
    contexts and the answer offsets are held; no feature array of the dataset (at SQuAD's 88k questions
    and 384 tokens those took 2 GB). Returns (endless dataset, windows per pass), the count from one
    tokenizing pass that builds no windows."""
    import tensorflow as tf

    from zoo.data.order import slices, text_array
    from zoo.data.squad import answer_bytes, training_windows, window_counts
    from zoo.tokenizers import fast_bert_tokenizer

    d = cfg.data
    contexts = list(dict.fromkeys(e.context for e in examples))
    index = {c: i for i, c in enumerate(contexts)}
    spans = np.array([answer_bytes(e) for e in examples], np.int32).reshape(-1, 2)
    table = (text_array([e.question for e in examples]), np.array([index[e.context] for e in examples], np.int32),
             spans[:, 0], spans[:, 1])
    context_of = tf.constant(text_array(contexts))
    tokenizer = fast_bert_tokenizer(preprocessor.vocabulary, preprocessor.lowercase)
    shape = {"sequence_length": d.sequence_length, "doc_stride": d.doc_stride, "max_query_length": d.query_limit}
    windows = truncated = 0
    for n, cut in tf.data.Dataset.from_tensor_slices(table[:2]).batch(1024).map(
            lambda q, c: window_counts(q, tf.gather(context_of, c), tokenizer, **shape)):
        windows, truncated = windows + int(tf.reduce_sum(n)), truncated + int(tf.reduce_sum(tf.cast(cut, tf.int32)))
    if truncated:
        log.warning("%d question(s) longer than %d tokens were truncated (data.max_query_length)", truncated,
                    d.query_limit)

    def featurize(q: Any, c: Any, begin: Any, end: Any) -> Any:
        return training_windows(q, tf.gather(context_of, c), begin, end, tokenizer, cls_id=preprocessor.cls_id,
                                sep_id=preprocessor.sep_id, pad_id=preprocessor.pad_id, **shape)

    ds = slices(table, cfg.train.seed, batch_size=EXAMPLES_PER_CHUNK).map(featurize, tf.data.AUTOTUNE)
    return ds.rebatch(cfg.train.batch_size).prefetch(tf.data.AUTOTUNE), windows


def _validation(features: Any, batch: int) -> Any:
    """The validation windows (built in Python with their character spans, which scoring needs) in order."""
    import tensorflow as tf

    x = {"token_ids": features.token_ids, "segment_ids": features.segment_ids, "padding_mask": features.padding_mask}
    y = {"start_logits": features.start_positions, "end_logits": features.end_positions}
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).prefetch(tf.data.AUTOTUNE)


@dataclass(frozen=True)
class QAState:
    """What prepare_data hands build_model, the per-epoch scoring and evaluate."""

    preprocessor: Any
    initial_weights: list[Any] | None  # the backbone's, from --init
    span_heads: dict[str, list[Any]]   # the start and end heads' weights, from a bert_qa run given as --init
    val: tuple[list[Any], Any]         # (examples, features)
    eval: tuple[list[Any], Any]
    null_threshold: float | None       # set for SQuAD 2.0 data


def prepare_data(cfg: BertQAConfig, explicit: frozenset) -> tuple[BertQAConfig, Datasets]:
    from zoo.data.squad import read_squad

    d = cfg.data
    if not d.source:
        raise ConfigError("bert_qa needs training data: --data train.json (SQuAD JSON or JSON Lines)")
    train_examples, val_examples = _split(read_squad(d.source), d.validation_split, cfg.train.seed)
    if not train_examples:
        raise DataError(f"{d.source}: no training questions are left after holding out data.validation_split="
                        f"{d.validation_split:g} of its contexts; lower it or pass --eval-data")
    eval_examples = read_squad(d.eval_source) if d.eval_source else val_examples
    if not val_examples:
        val_examples = eval_examples
    corpus = lambda: [e.question for e in train_examples] + sorted({e.context for e in train_examples})  # noqa: E731
    cfg, pre, weights = resolve_backbone(cfg, explicit, corpus)
    train, train_windows = _train_batches(cfg, pre, train_examples)
    val_f = featurize(cfg, pre, val_examples)
    eval_f = val_f if eval_examples is val_examples else featurize(cfg, pre, eval_examples)
    batch = cfg.train.batch_size
    version_2 = any(e.impossible for e in train_examples)
    state = QAState(pre, weights, span_heads_of(cfg.init), (val_examples, val_f), (eval_examples, eval_f),
                    d.null_threshold if version_2 else None)
    n = min(d.eval_sample_size, len(eval_examples))
    sample_x = np.array([[e.question, e.context] for e in eval_examples[:n]], dtype=str)
    sample_y = np.array([e.answers[0] if e.answers else "" for e in eval_examples[:n]], dtype=str)
    info = {"train_questions": len(train_examples), "train_windows": train_windows,
            "validation_questions": len(val_examples), "eval_questions": len(eval_examples),
            "squad_version": "2.0" if version_2 else "1.1"}
    return cfg, Datasets(
        train=train, steps_per_epoch=max(1, math.ceil(train_windows / batch)),
        validation=_validation(val_f, batch), eval_sample=(sample_x, sample_y), info=info,
        files={RunDir.VOCAB: "\n".join(pre.vocabulary) + "\n"}, state=state)


def build_model(cfg: BertQAConfig, data: Datasets) -> Any:
    from zoo.models.bert import BertQuestionAnswerer

    backbone = build_backbone(cfg, data.state.initial_weights)
    # The [CLS] pooler feeds no span logit: frozen, it is not trained, decayed, or warned about by the
    # optimizer ("Gradients do not exist for variables ['pooled_dense/kernel', ...]") on every run.
    backbone.pooled_dense.trainable = False
    model = BertQuestionAnswerer(backbone, name="bert_question_answerer")
    for name, weights in data.state.span_heads.items():
        model.get_layer(name).set_weights(weights)
    return model


SPAN_HEADS = ("start_dense", "end_dense")


def span_heads_of(init: str) -> dict[str, list[Any]]:
    """The start and end heads of an earlier bert_qa run given as --init (fine-tuning SQuAD 1.1 -> 2.0
    keeps them, as it keeps the backbone); nothing for any other starting point."""
    import os

    if not init or not os.path.isdir(init):
        return {}
    run = RunDir.open(init)
    if not isinstance(run.info, QuestionAnsweringInfo):
        return {}
    model = run.load_model()
    return {name: model.get_layer(name).get_weights() for name in SPAN_HEADS}


def compile_args(cfg: BertQAConfig) -> dict[str, Any]:
    import keras

    # The mean of the start and the end cross-entropy, as the original BERT.
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return {"loss": {"start_logits": loss, "end_logits": loss}, "loss_weights": {"start_logits": 0.5,
                                                                                   "end_logits": 0.5}}


def answer(cfg: BertQAConfig, model: Any, examples: Sequence[Any], features: Any,
           null_threshold: float | None) -> list[Any]:
    """The best answer of every example (all its windows through the model)."""
    from zoo.data.squad import best_answers

    out = model.predict(features.inputs(), batch_size=max(cfg.train.batch_size, 32), verbose=0)
    return best_answers(examples, features, np.asarray(out["start_logits"]), np.asarray(out["end_logits"]),
                        max_answer_length=cfg.data.max_answer_length,
                        null_threshold=null_threshold)


def score(cfg: BertQAConfig, model: Any, split: tuple[Sequence[Any], Any], null_threshold: float | None) -> dict:
    from zoo.metrics import squad_scores

    examples, features = split
    predicted = answer(cfg, model, examples, features, null_threshold)
    return squad_scores([a.text for a in predicted], [list(e.answers) for e in examples])


def callbacks(cfg: BertQAConfig, data: Datasets) -> list[Any]:
    import keras

    class EvalSpans(keras.callbacks.Callback):
        """SQuAD exact match and F1 on the validation questions after every epoch."""

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            scores = score(cfg, self.model, data.state.val, data.state.null_threshold)
            if logs is not None:
                logs.update({f"val_{k}": v for k, v in scores.items()})

    return [EvalSpans()]


def evaluate(cfg: BertQAConfig, model: Any, data: Datasets) -> dict[str, float]:
    return {f"eval_{k}": v for k, v in score(cfg, model, data.state.eval, data.state.null_threshold).items()}


def run_info(cfg: BertQAConfig, data: Datasets) -> QuestionAnsweringInfo:
    d = cfg.data
    return QuestionAnsweringInfo(
        recipe=RECIPE.name, model="bert_question_answerer", data=data.info,
        preprocessor=WordPieceSpec(RunDir.VOCAB, d.sequence_length, d.lowercase), doc_stride=d.doc_stride,
        max_query_length=d.query_limit, max_answer_length=d.max_answer_length,
        null_threshold=data.state.null_threshold, backbone=cfg.model.name, init=cfg.init)


FLAGS = {
    "--data": ("data.source", "training questions: SQuAD JSON or JSON Lines"),
    "--eval-data": ("data.eval_source", "evaluation questions of the same kind (e.g. SQuAD dev)"),
    "--init": ("init", "hf:DIR, keras_hub:DIR or a run dir to start from (a bert_qa run: its span heads too)"),
}

RECIPE = Recipe(
    name="bert_qa",
    description="Fine-tune BERT for extractive question answering (SQuAD v1.1 / v2.0 JSON or JSON Lines).",
    config_class=BertQAConfig, prepare_data=prepare_data, build_model=build_model,
    compile_args=compile_args, run_info=run_info, evaluate=evaluate, callbacks=callbacks, flags=FLAGS)


def main(argv: Sequence[str] | None = None) -> int:
    return main_for(RECIPE, argv)


if __name__ == "__main__":
    raise SystemExit(main())
