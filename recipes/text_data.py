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
    # Streaming (zoo.data.labelled): null (auto) streams a training file over 64 MB from disk, true always,
    # false reads it into memory (a stratified split and an exact seeded permutation every epoch).
    streaming: bool | None = None
    shuffle_buffer: int = 10_000  # streamed: rows shuffled together, after a seeded order of file segments

    def __post_init__(self) -> None:
        check_choice("format", self.format, ("auto", "csv", "tsv", "jsonl"))
        check_range("validation_split", self.validation_split, 0.0, 1.0, high_inclusive=False)
        check_range("sequence_length", self.sequence_length, 8)
        check_range("vocab_size", self.vocab_size, 16)
        check_choice("on_error", self.on_error, ("raise", "skip"))
        check_range("vocab_sample_lines", self.vocab_sample_lines, 1)
        check_range("shuffle_buffer", self.shuffle_buffer, 1)


@dataclass
class TextSplits:
    """Texts ([N] strings, or [N, 2] for pairs) and integer labels of the train, validation and eval splits,
    in memory.

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
    bad_rows: dict[str, Any] = field(default_factory=dict)  # data.on_error=skip: what was skipped
    streamed = False

    @property
    def counts(self) -> dict[str, int]:
        return {"train": int(len(self.x_train)), "validation": int(len(self.x_val)), "eval": int(len(self.x_eval))}

    def corpus(self) -> list[str]:
        """Every training text, pair sides included (for learning a vocabulary)."""
        return [str(t) for t in (self.x_train.reshape(-1) if self.x_train.ndim == 2 else self.x_train)]

    def train_dataset(self, pre: Any, batch: int, seed: int) -> Any:
        return text_dataset(self.x_train, self.y_train, pre, batch, shuffle_seed=seed)

    def validation_dataset(self, pre: Any, batch: int) -> Any:
        return text_dataset(self.x_val, self.y_val, pre, batch)

    def eval_dataset(self, pre: Any, batch: int) -> Any:
        return text_dataset(self.x_eval, self.y_eval, pre, batch)

    def eval_sample(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        return self.x_eval[:n], self.y_eval[:n]

    def calibration(self, n: int) -> np.ndarray:
        return self.x_train[:n]


@dataclass
class StreamedSplits:
    """The same splits read from their files by ``tf.data`` (``zoo.data.labelled``): the validation part by a
    hash of each example, the counts and class names from one scan; memory flat in the number of rows."""

    class_names: list[str]
    pair: bool
    counts: dict[str, int]
    train_data: Any  # zoo.data.labelled.StreamedRows
    eval_data: Any  # the same, of --eval-data, or None: the eval split is the validation part
    sample: tuple[str, ...]
    shuffle_buffer: int
    bad_rows: dict[str, Any] = field(default_factory=dict)
    streamed = True

    def corpus(self) -> list[str]:
        return list(self.sample)

    def _batches(self, rows: Any, pre: Any, batch: int, count: int | None = None) -> Any:
        import math

        import tensorflow as tf

        ds = rows.batch(batch)
        if count is not None:  # the scan counted the rows; a filtered stream cannot say how many batches
            ds = ds.apply(tf.data.experimental.assert_cardinality(math.ceil(count / batch)))

        def prepare(text, pair, label):
            return pre((text, pair) if self.pair else text), label

        return ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

    def train_dataset(self, pre: Any, batch: int, seed: int, shard: Any = None) -> Any:
        return self._batches(self.train_data.train(seed, self.shuffle_buffer, shard=shard), pre, batch)

    def validation_dataset(self, pre: Any, batch: int) -> Any:
        return self._batches(self.train_data.part("validation"), pre, batch, self.counts["validation"])

    def _eval_rows(self) -> Any:
        return self.eval_data.part("all") if self.eval_data is not None else self.train_data.part("validation")

    def eval_dataset(self, pre: Any, batch: int) -> Any:
        return self._batches(self._eval_rows(), pre, batch, self.counts["eval"])

    @staticmethod
    def _arrays(rows: Any, n: int, pair: bool) -> tuple[np.ndarray, np.ndarray]:
        from zoo.data.order import text_array

        texts, pairs, labels = [], [], []
        for text, second, label in rows.take(n).as_numpy_iterator():
            texts.append(text.decode())
            pairs.append(second.decode())
            labels.append(label)
        return stack_texts(texts, pairs if pair else None) if texts else text_array([]), np.asarray(labels, np.int32)

    def eval_sample(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        return self._arrays(self._eval_rows(), n, self.pair)

    def calibration(self, n: int) -> np.ndarray:
        return self._arrays(self.train_data.part("train"), n, self.pair)[0]


def stack_texts(texts: list[str], pairs: list[str] | None) -> np.ndarray:
    """Texts ``[N]`` (or ``[N, 2]`` with pairs) as an object array of Python strings: each text keeps its
    own length (a ``str`` array pads every text to the longest one: one 100,000-character line among
    50,000 short ones made 20 GB of it)."""
    from zoo.data.order import text_array

    return text_array(list(zip(texts, pairs)) if pairs is not None else texts)


def read_splits(d: TextDataConfig, seed: int, class_names: Sequence[str] | None = None,
                ) -> TextSplits | StreamedSplits:
    """The train / validation / eval splits of ``d.source`` (``d.validation_split`` of it held out for
    validation) and ``d.eval_source``: in memory (a stratified split) or streamed from the files
    (``d.streaming``; by default above ``STREAM_BYTES``). Labels are numbered by ``class_names`` if given,
    else by the sorted training labels."""
    from zoo.data.stream import streams

    if not d.source:
        raise DataError("no training data: pass --data FILE (CSV, TSV or JSONL with text and label columns)")
    streamed = streams(d.streaming, [d.source])
    return (stream_splits if streamed else memory_splits)(d, seed, class_names)


def _check_names(d: TextDataConfig, names: Sequence[str]) -> None:
    if len(names) < 2:
        raise DataError(f"{d.source!r} has a single label ({names[0]!r}); a classifier needs two or more")


def memory_splits(d: TextDataConfig, seed: int, class_names: Sequence[str] | None = None) -> TextSplits:
    from zoo.data.splits import train_eval_split
    from zoo.data.text import BadRows, encode_labels, label_names, read_labelled_text

    pair = d.pair_column or None
    bad = BadRows(d.on_error)
    train = read_labelled_text(d.source, d.text_column, d.label_column, pair, d.format, bad)
    names = list(class_names) if class_names is not None else label_names(train.labels)
    _check_names(d, names)
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
    return TextSplits(names, x_train, y_train, x_val, y_val, x_eval, y_eval, pair is not None, bad.report())


def stream_splits(d: TextDataConfig, seed: int, class_names: Sequence[str] | None = None) -> StreamedSplits:
    from zoo.data.labelled import LabelledSource, scan_labelled, streamed_labelled
    from zoo.data.stream import check_parts
    from zoo.data.text import BadRows

    bad = BadRows(d.on_error)
    source = LabelledSource(d.source, d.text_column, d.label_column, d.pair_column or None, d.format)
    scan = scan_labelled(source, d.validation_split, d.vocab_sample_lines, seed, bad, class_names)
    names = list(scan.class_names)
    _check_names(d, names)
    check_parts(scan.train, scan.validation, d.source, d.validation_split, "row", "text")
    eval_data, n_eval = None, scan.validation
    if d.eval_source:
        eval_source = LabelledSource(d.eval_source, d.text_column, d.label_column, d.pair_column or None, d.format)
        n_eval = scan_labelled(eval_source, 0.0, 0, seed, bad, names).train
        eval_data = streamed_labelled(eval_source, names, 0.0)
    counts = {"train": scan.train, "validation": scan.validation, "eval": n_eval}
    return StreamedSplits(names, source.pair_column is not None, counts,
                          streamed_labelled(source, names, d.validation_split), eval_data, scan.sample,
                          d.shuffle_buffer, bad.report())


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


def logits_and_labels(models: Sequence[Any], batches: Any) -> tuple[list[np.ndarray], np.ndarray]:
    """Each model's logits on a dataset of ``(inputs, label)`` batches (a deterministic order), and the labels.
    ``predict`` per model, not ``predict_on_batch``: under MirroredStrategy the latter splits one batch
    across the replicas and returns a copy per replica."""
    inputs = batches.map(lambda x, y: x)
    logits = [np.asarray(model.predict(inputs, verbose=0), np.float32) for model in models]
    labels = np.concatenate([np.asarray(y) for y in batches.map(lambda x, y: y).as_numpy_iterator()])
    return logits, labels


def text_classification_info(recipe: str, model: str, cfg: Any, data: Any, **extra: Any) -> TextClassificationInfo:
    """run.json of a classifier on raw strings (this recipe and distill)."""
    return TextClassificationInfo(
        recipe=recipe, model=model, data=data.info, class_names=tuple(data.info["class_names"]),
        input=SignatureTensor("text", "string", (None,), pair_name="text_pair" if data.info["pair"] else None),
        preprocessor=WordPieceSpec(RunDir.VOCAB, cfg.data.sequence_length, cfg.data.lowercase), **extra)
