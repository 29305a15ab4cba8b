"""What the text-classification recipes (bert_classify, distill) share: the data config, reading
train / eval splits of labelled files, and batches tokenized in-graph."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zoo.config import check_choice, check_range
from zoo.errors import DataError
from zoo.rundir import RunDir, SignatureTensor, WordPieceSpec
from zoo.tasks.text_classification import TextClassificationInfo


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
    on_error: str = "raise"  # a bad row (not UTF-8, malformed JSON, a missing field...): raise, or skip and count
    vocab_sample_lines: int = 200_000  # a vocabulary learned from the data reads a seeded sample this big
    lowercase: bool = True
    eval_sample_size: int = 512
    calibration_size: int = 128

    def __post_init__(self) -> None:
        check_choice("format", self.format, ("auto", "csv", "tsv", "jsonl"))
        check_range("validation_split", self.validation_split, 0.0, 1.0, high_inclusive=False)
        check_range("sequence_length", self.sequence_length, 8)
        check_range("vocab_size", self.vocab_size, 16)
        check_choice("on_error", self.on_error, ("raise", "skip"))
        check_range("vocab_sample_lines", self.vocab_sample_lines, 1)


@dataclass
class TextSplits:
    """Texts ([N] strings, or [N, 2] for pairs) and integer labels of the train, validation and eval splits.

    The validation split (model choice, early stopping, per-epoch metrics) is carved from the training
    file; the eval split (final metrics, the export sample) is ``--eval-data`` when given, else the
    validation split itself (no other held-out data exists then).
    """

    class_names: list[str]
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray
    pair: bool
    train_corpus: list[str]  # every training text, pair sides included (for learning a vocabulary)
    bad_rows: dict[str, Any] = field(default_factory=dict)  # data.on_error=skip: what was skipped

    @property
    def counts(self) -> dict[str, int]:
        return {"train": int(len(self.x_train)), "validation": int(len(self.x_val)), "eval": int(len(self.x_eval))}


def stack_texts(texts: list[str], pairs: list[str] | None) -> np.ndarray:
    """Texts ``[N]`` (or ``[N, 2]`` with pairs) as an object array of Python strings: each text keeps its
    own length (a ``str`` array pads every text to the longest one: one 100,000-character line among
    50,000 short ones made 20 GB of it)."""
    from zoo.data.order import text_array

    return text_array(list(zip(texts, pairs)) if pairs is not None else texts)


def read_splits(d: TextDataConfig, seed: int, class_names: Sequence[str] | None = None) -> TextSplits:
    """Read ``d.source`` (``d.validation_split`` of it held out for validation, stratified) and
    ``d.eval_source``; labels are numbered by ``class_names`` if given, else by the sorted training labels."""
    from zoo.data.splits import train_eval_split
    from zoo.data.text import BadRows, encode_labels, label_names, read_labelled_text

    if not d.source:
        raise DataError("no training data: pass --data FILE (CSV, TSV or JSONL with text and label columns)")
    pair = d.pair_column or None
    bad = BadRows(d.on_error)
    train = read_labelled_text(d.source, d.text_column, d.label_column, pair, d.format, bad)
    names = list(class_names) if class_names is not None else label_names(train.labels)
    if len(names) < 2:
        raise DataError(f"{d.source!r} has a single label ({names[0]!r}); a classifier needs two or more")
    x, y = stack_texts(train.texts, train.pairs), encode_labels(train, names)
    train_idx, val_idx = train_eval_split(len(y), d.validation_split, seed, labels=y)
    if len(val_idx) == 0:
        raise DataError(f"data.validation_split={d.validation_split} leaves no validation examples of the "
                        f"{len(y)} in {d.source!r}; raise it (e.g. 0.1)")
    x_train, y_train, x_val, y_val = x[train_idx], y[train_idx], x[val_idx], y[val_idx]
    if d.eval_source:
        evals = read_labelled_text(d.eval_source, d.text_column, d.label_column, pair, d.format, bad)
        x_eval, y_eval = stack_texts(evals.texts, evals.pairs), encode_labels(evals, names)
    else:
        x_eval, y_eval = x_val, y_val
    corpus = [str(t) for t in (x_train.reshape(-1) if x_train.ndim == 2 else x_train)]
    return TextSplits(names, x_train, y_train, x_val, y_val, x_eval, y_eval, pair is not None, corpus,
                      bad.report())


def text_dataset(texts: np.ndarray, labels: np.ndarray | None, preprocessor: Any, batch: int,
                 shuffle_seed: int | None = None) -> Any:
    """Batched (inputs dict, label) from raw texts ([N] or [N, 2] for pairs), tokenized in-graph."""
    import tensorflow as tf

    from zoo.data.order import slices

    targets = labels if labels is not None else np.zeros(len(texts), np.int32)
    ds = slices((texts, targets), shuffle_seed, batch_size=batch)

    def prepare(x, y):
        inputs = (x[:, 0], x[:, 1]) if texts.ndim == 2 else x
        return preprocessor(inputs), y

    return ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def predict_texts(model: Any, texts: np.ndarray, preprocessor: Any, batch: int = 64) -> np.ndarray:
    """The model's outputs (logits) on raw texts, batched."""
    ds = text_dataset(texts, None, preprocessor, batch).map(lambda x, y: x)
    return np.asarray(model.predict(ds, verbose=0), dtype=np.float32)


def text_classification_info(recipe: str, model: str, cfg: Any, data: Any, **extra: Any) -> TextClassificationInfo:
    """run.json of a classifier on raw strings (this recipe and distill)."""
    return TextClassificationInfo(
        recipe=recipe, model=model, data=data.info, class_names=tuple(data.info["class_names"]),
        input=SignatureTensor("text", "string", (None,), pair_name="text_pair" if data.info["pair"] else None),
        preprocessor=WordPieceSpec(RunDir.VOCAB, cfg.data.sequence_length, cfg.data.lowercase), **extra)
