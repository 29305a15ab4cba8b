"""Labelled text files (CSV / TSV with a header row, JSONL) streamed: memory flat in the number of rows.

A file too big for Python lists (10 M rows of reviews, a web-scale NLI set) is read by ``tf.data``: no
list of texts, no array. One pass before training (:func:`scan_labelled`) parses every row once:
it counts the rows of each part, collects the distinct labels (the class names), checks every row
(an error names file and line, or ``data.on_error=skip`` counts it), and draws a seeded reservoir
sample of texts for learning a vocabulary. Then:

* **Segments.** The file is cut at line starts into byte ranges of about ``SEGMENT_BYTES`` (at least
  ``MIN_SEGMENTS``, at most ``MAX_SEGMENTS``); each epoch reads them in a fresh seeded order, several at once, interleaved. A
  file sorted by label (every negative review, then every positive one) so still gives batches of
  mixed labels, which a bounded shuffle buffer over one sequential reader would not.
* **Order** as for corpora (``zoo.data.stream.shuffled_epochs``): a pure function of ``(seed, epoch)``,
  then blocks of ``shuffle_buffer`` rows permuted, so a resumed run that skips the batches it has done
  sees what an uninterrupted run would have.
* **Validation by content**: a row is in the validation part when the FarmHash bucket of its text (and
  pair text) falls below ``validation_split`` of the range, as for corpora: deterministic, no index
  list, no second pass, and duplicate texts land on the same side.

Rows are parsed by the same code as the in-memory path (``zoo.data.text.labelled_rows``), in a Python
generator that hands ``tf.data`` chunks of rows.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from zoo.data.stream import HASH_BUCKETS, Reservoir, hash_buckets, shuffled_epochs, validation_threshold
from zoo.data.text import BadRows, label_names, labelled_rows, text_format
from zoo.errors import DataError

SEGMENT_BYTES = 1 << 20
MIN_SEGMENTS = 16  # files smaller than 16 MB are cut into 16 all the same (segments of at least 4 KB)
MAX_SEGMENTS = 64
CHUNK_ROWS = 1024  # rows per element the Python reader hands tf.data


@dataclass(frozen=True)
class LabelledSource:
    """One labelled file and how to read it."""

    path: str
    text_column: str = "text"
    label_column: str = "label"
    pair_column: str | None = None
    fmt: str = "auto"

    def rows(self, bad: BadRows, byte_range: tuple[int, int] | None = None) -> Any:
        return labelled_rows(self.path, self.text_column, self.label_column, self.pair_column, self.fmt, bad,
                             byte_range)


def example_key(text: str, pair: str | None) -> str:
    """What the validation hash reads: the text, or ``text<TAB>pair`` (as :func:`_key` does in-graph)."""
    return text if pair is None else f"{text}\t{pair}"


def _key(text: Any, pair: Any, paired: bool) -> Any:
    import tensorflow as tf

    return tf.strings.join([text, pair], separator="\t") if paired else text


@dataclass(frozen=True)
class LabelledScan:
    """What one pass over a labelled file learned."""

    train: int  # rows of the training part
    validation: int  # rows of the validation part
    class_names: tuple[str, ...]
    sample: tuple[str, ...]  # texts (pair sides included) of the training part, for a vocabulary


def scan_labelled(source: LabelledSource, validation_split: float, sample_lines: int, seed: int, bad: BadRows,
                  class_names: Sequence[str] | None = None, chunk: int = 8192) -> LabelledScan:
    """One pass over ``source``: rows per part, the class names (sorted, as the in-memory path numbers them;
    with ``class_names`` given, a row with another label is an error, as in memory: the data does not fit
    the model), every row checked, a reservoir sample of at most ``sample_lines`` training texts."""
    threshold = validation_threshold(validation_split)
    reservoir = Reservoir(sample_lines, seed)
    known = set(class_names) if class_names is not None else None
    seen: set[str] = set()
    train = validation = 0
    keys: list[str] = []
    texts: list[tuple[str, str | None]] = []

    def flush() -> None:
        nonlocal train, validation
        for (text, pair), bucket in zip(texts, hash_buckets(keys)):
            if bucket < threshold:
                validation += 1
                continue
            train += 1
            reservoir.add(text)
            if pair is not None:
                reservoir.add(pair)
        keys.clear()
        texts.clear()

    for number, text, pair, label in source.rows(bad):
        if known is not None and label not in known:
            raise DataError(f"{source.path}:{number}: label {label!r} was not seen in training "
                            f"(training labels: {', '.join(class_names)})")
        seen.add(label)
        keys.append(example_key(text, pair))
        texts.append((text, pair))
        if len(keys) >= chunk:
            flush()
    flush()
    if train + validation == 0:
        raise DataError(f"{source.path!r} holds no examples")
    names = tuple(class_names) if class_names is not None else tuple(label_names(seen))
    return LabelledScan(train, validation, names, tuple(reservoir.items))


def segments(source: LabelledSource) -> list[str]:
    """The file cut at line starts into byte ranges, as ``"start:end:path"`` strings (the header row of a
    CSV / TSV is in none of them)."""
    path = source.path
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        start = len(fh.readline()) if text_format(path, source.fmt) != "jsonl" else 0
        body = size - start
        count = max(1, min(MAX_SEGMENTS, max(MIN_SEGMENTS, body // SEGMENT_BYTES), body // 4096))
        cuts = [start]
        for k in range(1, count):
            fh.seek(start + k * (size - start) // count)
            fh.readline()  # to the next line start
            if cuts[-1] < fh.tell() < size:
                cuts.append(fh.tell())
    cuts.append(size)
    return [f"{a}:{b}:{path}" for a, b in zip(cuts[:-1], cuts[1:])]


def _segment_reader(source: LabelledSource, class_names: Sequence[str]) -> Any:
    """segment spec (a string tensor) -> dataset of ``(text, pair text or "", label id)`` rows."""
    import numpy as np
    import tensorflow as tf

    index = {name: i for i, name in enumerate(class_names)}

    def generate(spec: bytes) -> Any:
        start, end, path = spec.decode().split(":", 2)
        # The scan has raised on (or counted) every bad row already: here they are only left out.
        rows = LabelledSource(path, source.text_column, source.label_column, source.pair_column,
                              source.fmt).rows(BadRows("skip"), (int(start), int(end)))
        texts, pairs, labels = [], [], []
        for _, text, pair, label in rows:
            if label not in index:
                continue
            texts.append(text)
            pairs.append(pair or "")
            labels.append(index[label])
            if len(texts) >= CHUNK_ROWS:
                yield np.array(texts, object), np.array(pairs, object), np.array(labels, np.int32)
                texts, pairs, labels = [], [], []
        if texts:
            yield np.array(texts, object), np.array(pairs, object), np.array(labels, np.int32)

    signature = (tf.TensorSpec([None], tf.string), tf.TensorSpec([None], tf.string), tf.TensorSpec([None], tf.int32))
    return lambda spec: tf.data.Dataset.from_generator(generate, output_signature=signature, args=(spec,)).unbatch()


class StreamedLabelled:
    """A labelled file as ``tf.data`` datasets of ``(text, pair text, label id)`` rows (see the module doc)."""

    def __init__(self, source: LabelledSource, class_names: Sequence[str], validation_split: float):
        self.source, self.class_names = source, tuple(class_names)
        self.paired = source.pair_column is not None
        self.threshold = validation_threshold(validation_split)
        self.segments = segments(source)
        self._read = _segment_reader(source, self.class_names)

    def _in_validation(self, text: Any, pair: Any, label: Any) -> Any:
        import tensorflow as tf

        return tf.strings.to_hash_bucket_fast(_key(text, pair, self.paired), HASH_BUCKETS) < self.threshold

    def train(self, seed: int, shuffle_buffer: int, cycle_length: int = 16) -> Any:
        """Endless: the training part, a fresh seeded order every epoch."""
        return shuffled_epochs(self.segments, self._read, seed, shuffle_buffer, cycle_length,
                               keep=lambda *row: ~self._in_validation(*row))

    def part(self, which: str) -> Any:
        """One pass in file order over the "validation" part, the "train" part or "all" rows."""
        import tensorflow as tf

        ds = tf.data.Dataset.from_tensor_slices(self.segments).flat_map(self._read)
        if which == "validation":
            return ds.filter(self._in_validation)
        if which == "train":
            return ds.filter(lambda *row: ~self._in_validation(*row))
        return ds
