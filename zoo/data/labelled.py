"""Labelled text files (CSV / TSV with a header row, JSONL; ``source<TAB>target`` pairs) streamed: memory
flat in the number of rows.

A file too big for Python lists (10 M rows of reviews, a web-scale NLI set) is read by ``tf.data``: no
list of texts, no array. One pass before training (:func:`scan_labelled`) parses every row once:
it counts the rows of each part, collects the distinct labels (the class names), checks every row
(an error names file and line, or ``data.on_error=skip`` counts it), and draws a seeded reservoir
sample of texts for learning a vocabulary. Then:

* **Segments.** The file is cut at line starts into byte ranges of about ``SEGMENT_BYTES`` (at least
  ``MIN_SEGMENTS``, at most ``MAX_SEGMENTS``); each epoch reads them in a fresh seeded order, several
  at once, interleaved. A file sorted by label (every negative review, then every positive one) so
  still gives batches of mixed labels, which a bounded shuffle buffer over one sequential reader would
  not. Under a multi-worker job each worker reads its own segments of every epoch.
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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from zoo.data.stream import HASH_BUCKETS, Reservoir, shuffled_epochs, split_rows, validation_threshold
from zoo.data.text import BadRows, label_names, labelled_rows, text_format, text_pairs
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
    """What the validation hash reads: the text, or ``text<TAB>pair`` (as ``streamed_labelled`` keys rows in-graph)."""
    return text if pair is None else f"{text}\t{pair}"


@dataclass(frozen=True)
class LabelledScan:
    """What one pass over a labelled file learned."""

    train: int  # rows of the training part
    validation: int  # rows of the validation part
    class_names: tuple[str, ...]
    sample: tuple[str, ...]  # texts (pair sides included) of the training part, for a vocabulary


def scan_labelled(source: LabelledSource, validation_split: float, sample_lines: int, seed: int, bad: BadRows,
                  class_names: Sequence[str] | None = None) -> LabelledScan:
    """One pass over ``source``: rows per part, the class names (sorted, as the in-memory path numbers them;
    with ``class_names`` given, a row with another label is an error, as in memory: the data does not fit
    the model), every row checked, a reservoir sample of at most ``sample_lines`` training texts."""
    reservoir = Reservoir(sample_lines, seed)
    known = set(class_names) if class_names is not None else None
    seen: set[str] = set()
    counts = [0, 0]

    def rows() -> Iterator[tuple]:
        for number, text, pair, label in source.rows(bad):
            if known is not None and label not in known:
                raise DataError(f"{source.path}:{number}: label {label!r} was not seen in training "
                                f"(training labels: {', '.join(class_names)})")
            seen.add(label)
            yield text, pair

    for (text, pair), validation in split_rows(rows(), lambda r: example_key(*r), validation_split):
        counts[validation] += 1
        if not validation:
            reservoir.add(text)
            if pair is not None:
                reservoir.add(pair)
    if sum(counts) == 0:
        raise DataError(f"{source.path!r} holds no examples")
    names = tuple(class_names) if class_names is not None else tuple(label_names(seen))
    return LabelledScan(counts[0], counts[1], names, tuple(reservoir.items))


def segments(path: str, header: bool) -> list[str]:
    """The file cut at line starts into byte ranges, as ``"start:end:path"`` strings (a ``header`` row is
    in none of them)."""
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        start = len(fh.readline()) if header else 0
        body = size - start
        count = max(1, min(MAX_SEGMENTS, max(MIN_SEGMENTS, body // SEGMENT_BYTES), body // 4096))
        cuts = [start]
        for k in range(1, count):
            fh.seek(start + k * body // count)
            fh.readline()  # to the next line start
            if cuts[-1] < fh.tell() < size:
                cuts.append(fh.tell())
    cuts.append(size)
    return [f"{a}:{b}:{path}" for a, b in zip(cuts[:-1], cuts[1:])]


class StreamedRows:
    """A file's rows as ``tf.data`` datasets (see the module doc): ``read(path, byte_range)`` yields the rows
    of one segment as tuples of Python values (bad rows left out), ``signature`` their dtypes, and
    ``key(*row tensors)`` the string the validation hash reads."""

    def __init__(self, path: str, read: Callable[[str, tuple[int, int]], Iterable[tuple]],
                 signature: Sequence[Any], key: Callable[..., Any], validation_split: float, header: bool = False):
        self.path, self.key = path, key
        self.threshold = validation_threshold(validation_split)
        self.segments = segments(path, header)
        self._read = _segment_reader(read, tuple(signature))

    def _in_validation(self, *row: Any) -> Any:
        import tensorflow as tf

        return tf.strings.to_hash_bucket_fast(self.key(*row), HASH_BUCKETS) < self.threshold

    def train(self, seed: int, shuffle_buffer: int, cycle_length: int = 16, shard: Any = None) -> Any:
        """Endless: the training part, a fresh seeded order every epoch (``shard``: one worker's part)."""
        return shuffled_epochs(self.segments, self._read, seed, shuffle_buffer, cycle_length,
                               keep=lambda *row: ~self._in_validation(*row), shard=shard)

    def part(self, which: str) -> Any:
        """One pass in file order over the "validation" part, the "train" part or "all" rows."""
        import tensorflow as tf

        ds = tf.data.Dataset.from_tensor_slices(self.segments).flat_map(self._read)
        if which == "validation":
            return ds.filter(self._in_validation)
        if which == "train":
            return ds.filter(lambda *row: ~self._in_validation(*row))
        return ds


def _segment_reader(read: Callable[[str, tuple[int, int]], Iterable[tuple]], signature: tuple) -> Any:
    """segment spec (a string tensor) -> dataset of rows, handed to ``tf.data`` ``CHUNK_ROWS`` at a time."""
    import numpy as np
    import tensorflow as tf

    def generate(spec: bytes) -> Any:
        start, end, path = spec.decode().split(":", 2)
        columns: list[list[Any]] = [[] for _ in signature]

        def chunk() -> tuple:
            return tuple(np.array(c, object if dtype == tf.string else dtype.as_numpy_dtype)
                         for c, dtype in zip(columns, signature))

        for row in read(path, (int(start), int(end))):
            for column, value in zip(columns, row):
                column.append(value)
            if len(columns[0]) >= CHUNK_ROWS:
                yield chunk()
                columns = [[] for _ in signature]
        if columns[0]:
            yield chunk()

    specs = tuple(tf.TensorSpec([None], dtype) for dtype in signature)
    return lambda spec: tf.data.Dataset.from_generator(generate, output_signature=specs, args=(spec,)).unbatch()


def streamed_labelled(source: LabelledSource, class_names: Sequence[str], validation_split: float) -> StreamedRows:
    """``(text, pair text or "", label id)`` rows of a labelled file."""
    import tensorflow as tf

    index = {name: i for i, name in enumerate(class_names)}
    paired = source.pair_column is not None

    def read(path: str, byte_range: tuple[int, int]) -> Iterator[tuple]:
        # The scan has raised on (or counted) every bad row already: here they are only left out.
        for _, text, pair, label in source.rows(BadRows("skip"), byte_range):
            if label in index:
                yield text, pair or "", index[label]

    def key(text: Any, pair: Any, label: Any) -> Any:
        return tf.strings.join([text, pair], separator="\t") if paired else text

    return StreamedRows(source.path, read, (tf.string, tf.string, tf.int32), key, validation_split,
                        header=text_format(source.path, source.fmt) != "jsonl")


@dataclass(frozen=True)
class PairScan:
    """What one pass over a ``source<TAB>target`` file learned."""

    train: int
    validation: int
    sample: tuple[tuple[str, str], ...]  # training pairs, for the vocabularies
    first_validation: tuple[tuple[str, str], ...]  # the validation part's first pairs, in file order


def scan_pairs(path: str, validation_split: float, sample_lines: int, seed: int, bad: BadRows,
               keep_validation: int) -> PairScan:
    """One pass over a pairs file: pairs per part (the validation part by a hash of the source, so a source
    that occurs twice is on one side), every line checked, a reservoir sample of at most ``sample_lines``
    training pairs, and the first ``keep_validation`` validation pairs."""
    reservoir = Reservoir(sample_lines, seed)
    counts, first = [0, 0], []
    rows = ((source, target) for _, source, target in text_pairs(path, bad))
    for pair, validation in split_rows(rows, lambda r: r[0], validation_split):
        counts[validation] += 1
        if not validation:
            reservoir.add(pair)
        elif len(first) < keep_validation:
            first.append(pair)
    if sum(counts) == 0:
        raise DataError(f"{path!r} has no 'source<TAB>target' lines")
    return PairScan(counts[0], counts[1], tuple(reservoir.items), tuple(first))


def streamed_pairs(path: str, validation_split: float) -> StreamedRows:
    """``(source, target)`` rows of a pairs file."""
    import tensorflow as tf

    def read(segment_path: str, byte_range: tuple[int, int]) -> Iterator[tuple]:
        for _, source, target in text_pairs(segment_path, BadRows("skip"), byte_range):
            yield source, target

    return StreamedRows(path, read, (tf.string, tf.string), lambda source, target: source, validation_split)
