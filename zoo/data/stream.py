"""Plain-text corpora streamed from their files: memory flat in the corpus size.

A corpus too big for a Python list (a Wikipedia dump, a crawl) is read with ``tf.data``:
``TextLineDataset`` over the files, interleaved; no list of lines, no array. What needs the whole
corpus is done in one pass over the bytes before training (:func:`scan_corpus`): count the lines,
check that every line is UTF-8 (an error names file and line), draw the vocabulary's sample.

* **Train / validation split by content**: a line is in the validation part when a 64-bit fingerprint of
  its bytes (``tf.strings.to_hash_bucket_fast``, FarmHash) falls below ``validation_split`` of the range.
  Deterministic, the same on every machine and worker, no second pass and no index list; a line that
  occurs twice is on the same side both times (no leak of duplicates between the parts).
* **Order**: every epoch a fresh, seeded order of the files, their lines interleaved, then shuffled in
  blocks of ``shuffle_buffer`` lines (each block a stateless permutation of ``(seed, epoch, block)``).
  The order is a pure function of ``(seed, epoch)``, so a resumed run that skips the batches it has done
  sees what an uninterrupted run would have, as the in-memory path (``zoo.data.order``) does.
* **Vocabulary sample**: a seeded reservoir sample of at most ``sample_lines`` lines (Algorithm R), drawn
  in the same pass.
* **Step mode, no pass first** (:func:`sample_corpus`): a run that counts optimizer steps needs no line
  counts, so a corpus over ``SAMPLE_BYTES`` is not scanned before training: the vocabulary's sample
  comes from ``SAMPLE_BLOCKS`` seeded byte ranges spread over the files (``SAMPLE_BYTES`` read in all),
  and lines that are not UTF-8 are caught by the input pipeline as it reaches them (``check``: an error
  naming file and line, :func:`bad_line_error`, or left out under ``data.on_error=skip``).

Line handling matches ``zoo.data.text.read_text_corpus``: ``\\n`` and a trailing ``\\r`` end a line, a
UTF-8 byte-order mark at the start of a line is dropped, lines of ASCII whitespace only are skipped.
"""

from __future__ import annotations

import bisect
import os
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from zoo.errors import DataError

STREAM_BYTES = 64 * 2**20  # data.streaming unset (null): recipes stream data files larger than this
SAMPLE_BYTES = 64 * 2**20  # step mode: a corpus larger than this is sampled (this much read), not scanned
SAMPLE_BLOCKS = 256
BAD_LINE = "zoo: a line that is not UTF-8"  # the input pipeline's assertion (check="raise"), see bad_line_error
HASH_BUCKETS = 1 << 30
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class CorpusScan:
    """What one pass over a corpus learned: its files, line counts per part, the vocabulary sample.
    From :func:`sample_corpus` (no pass), the counts are estimates from the sample (``counted`` False)."""

    files: tuple[str, ...]
    bytes: int
    train_lines: int
    validation_lines: int
    sample: tuple[str, ...]
    counted: bool = True
    bytes_read: int = 0  # of the corpus: all of it when counted, the sampled ranges otherwise


def validation_threshold(validation_split: float) -> int:
    return int(round(validation_split * HASH_BUCKETS))


def hash_buckets(keys: Sequence[str]) -> Any:
    """The FarmHash bucket of each key, as the input pipeline computes it in-graph (``_in_validation``)."""
    import numpy as np
    import tensorflow as tf

    if not keys:
        return np.zeros([0], np.int64)
    return tf.strings.to_hash_bucket_fast(tf.constant(list(keys), tf.string), HASH_BUCKETS).numpy()


class Reservoir:
    """A seeded uniform sample of at most ``size`` of the items added (Algorithm R): the n-th item
    replaces a kept one with probability size / n."""

    def __init__(self, size: int, seed: int):
        self.size, self.seen, self.items = size, 0, []
        self._rng = random.Random(seed)

    def add(self, item: Any) -> None:
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append(item)
        elif self.size:
            j = self._rng.randrange(self.seen)
            if j < self.size:
                self.items[j] = item


def streams(setting: bool | None, files: Sequence[str]) -> bool:
    """``data.streaming``: as set, or (unset) whether ``files`` hold more than ``STREAM_BYTES`` together."""
    if setting is not None:
        return setting
    return sum(os.path.getsize(f) for f in files if os.path.isfile(f)) > STREAM_BYTES


def split_rows(rows: Iterable[Any], key: Callable[[Any], str], validation_split: float,
               chunk: int = 8192) -> Iterator[tuple[Any, bool]]:
    """``(row, in the validation part)`` for each row: the FarmHash bucket of ``key(row)`` below
    ``validation_split`` of the range, computed in chunks, as the input pipeline computes it in-graph."""
    threshold = validation_threshold(validation_split)
    batch: list[Any] = []

    def flush() -> Iterator[tuple[Any, bool]]:
        for row, bucket in zip(batch, hash_buckets([key(r) for r in batch])):
            yield row, bool(bucket < threshold)
        batch.clear()

    for row in rows:
        batch.append(row)
        if len(batch) >= chunk:
            yield from flush()
    yield from flush()


def check_parts(train: int, validation: int, source: str, validation_split: float, unit: str, by: str) -> None:
    """A streamed split needs rows on both sides: one ``DataError`` saying which setting to change."""
    if validation == 0:
        raise DataError(f"no {unit} of {source!r} fell in the validation part (data.validation_split="
                        f"{validation_split}, by a hash of each {by}); raise it, or use data.streaming=false for "
                        "a small file")
    if train == 0:
        raise DataError(f"every {unit} of {source!r} fell in the validation part; lower data.validation_split")


def _clean(raw: bytes) -> bytes:
    raw = raw.rstrip(b"\n")
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    return raw[3:] if raw.startswith(_BOM) else raw


def corpus_lines(path: str, bad: Any) -> Iterator[tuple[int, str | None]]:
    """``(line number, text)`` for each line of ``path``, cleaned as the stream cleans it; ``(number, None)``
    for a blank line (a document boundary, where documents matter). Lines that are not UTF-8 go to ``bad``
    (a ``zoo.data.text.BadRows``: an error naming file and line, or counted and left out)."""
    from zoo.data.text import utf8_error

    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            line = _clean(raw)
            if not line.strip():
                yield number, None
                continue
            try:
                yield number, line.decode("utf-8")
            except UnicodeDecodeError as exc:
                bad.bad(utf8_error(path, number, exc), exc)


def scan_corpus(files: Sequence[str], validation_split: float, sample_lines: int, seed: int,
                chunk: int = 8192, bad: Any = None) -> CorpusScan:
    """One pass over ``files``: counts per part, UTF-8 checked (errors name file and line; under ``bad``'s
    skip policy, a ``zoo.data.text.BadRows``, such lines are counted and left out, as the stream leaves
    them out), a seeded reservoir sample of at most ``sample_lines`` lines of the training part."""

    from zoo.data.text import BadRows

    bad = bad or BadRows()

    reservoir = Reservoir(sample_lines, seed)
    counts = [0, 0]
    total = 0

    def lines() -> Iterator[str]:
        nonlocal total
        for path in files:
            if not os.path.isfile(path):
                raise DataError(f"corpus file {path!r} does not exist")
            total += os.path.getsize(path)
            yield from (line for _, line in corpus_lines(path, bad) if line is not None)

    for line, in_validation in split_rows(lines(), lambda line: line, validation_split, chunk):
        counts[in_validation] += 1
        if not in_validation:
            reservoir.add(line)
    train, validation = counts
    if train + validation == 0:
        raise DataError(f"the corpus {', '.join(files)} has no non-empty lines")
    return CorpusScan(tuple(files), total, train, validation, tuple(reservoir.items), bytes_read=total)


def sample_corpus(files: Sequence[str], validation_split: float, sample_lines: int, seed: int, bad: Any = None,
                  sample_bytes: int | None = None, blocks: int | None = None) -> CorpusScan:
    """What a step-mode run needs before its first step, without a pass over a large corpus: up to
    ``sample_bytes`` the corpus is scanned (:func:`scan_corpus`, exact counts); beyond, ``blocks`` seeded
    byte ranges of ``sample_bytes / blocks`` each, one in each of ``blocks`` equal slices of the corpus,
    give the vocabulary's sample (their whole lines of the training part, a reservoir of ``sample_lines``)
    and estimates of the line counts (``counted`` False). A sampled line that is not UTF-8 is an error
    naming the file and its byte offset (or, under ``bad``'s skip policy, left out)."""
    from zoo.data.text import BadRows

    bad = bad or BadRows()
    sample_bytes = sample_bytes or SAMPLE_BYTES
    blocks = max(1, min(blocks or SAMPLE_BLOCKS, sample_bytes // 4096))  # ranges of whole lines: 4 KB at least
    sizes = []
    for path in files:
        if not os.path.isfile(path):
            raise DataError(f"corpus file {path!r} does not exist")
        sizes.append(os.path.getsize(path))
    total = sum(sizes)
    if total <= sample_bytes:
        return scan_corpus(files, validation_split, sample_lines, seed, bad=bad)
    rng = random.Random(seed)
    block = max(1, sample_bytes // blocks)
    starts, at = [], 0
    for size in sizes:
        starts.append(at)
        at += size

    read_bytes = 0

    def read(offset: int) -> Iterator[str]:
        """The whole lines inside ``block`` bytes from ``offset`` of the concatenated corpus."""
        nonlocal read_bytes
        index = bisect.bisect_right(starts, offset) - 1
        path, local = files[index], offset - starts[index]
        with open(path, "rb") as fh:
            fh.seek(max(0, local - 1))
            data = fh.read(block + (1 if local else 0))
        read_bytes += len(data) - (1 if local else 0)  # the range itself: less than a block where a file ends
        pieces = data.split(b"\n")
        # A piece is a whole line when a newline (or the file's start) precedes it and one (or the end) follows.
        first = 0 if local == 0 else 1
        last = len(pieces) if local - (1 if local else 0) + len(data) >= sizes[index] else len(pieces) - 1
        position = max(0, local - 1)
        for k, raw in enumerate(pieces):
            if first <= k < last:
                line = _clean(raw)
                if line.strip():
                    try:
                        yield line.decode("utf-8")
                    except UnicodeDecodeError as exc:
                        bad.bad(f"{path}: the line at byte {position}: not valid UTF-8 ({exc.reason}); re-encode "
                                "the file as UTF-8, or set data.on_error=skip to leave such lines out", exc)
            position += len(raw) + 1

    slice_bytes = total / blocks
    offsets = sorted({int(i * slice_bytes + rng.random() * max(0.0, slice_bytes - block)) for i in range(blocks)})
    reservoir = Reservoir(sample_lines, seed)
    counts = [0, 0]
    for line, in_validation in split_rows((line for o in offsets for line in read(o)), lambda line: line,
                                          validation_split):
        counts[in_validation] += 1
        if not in_validation:
            reservoir.add(line)
    scale = total / max(1, read_bytes)
    return CorpusScan(tuple(files), total, round(counts[0] * scale), round(counts[1] * scale),
                      tuple(reservoir.items), counted=False, bytes_read=read_bytes)


def bad_line_error(exc: BaseException) -> str | None:
    """The ``DataError`` message for the input pipeline's assertion on a line that is not UTF-8 (``check=
    "raise"``): file and line number, and what to do; None for any other error."""
    import re

    m = re.search(r"assertion failed: \[" + re.escape(BAD_LINE) + r"\] \[(.*?)\] \[(\d+)\]", str(exc))
    if not m:
        return None
    return (f"{m.group(1)}:{m.group(2)}: not valid UTF-8; re-encode the file as UTF-8, or run the same command with "
            "--set data.on_error=skip to leave such lines out (an unfinished run resumes from its newest checkpoint)")


def _lines(files: Any, cycle_length: int, check: str | None = None) -> Any:
    """Cleaned, non-blank lines of ``files`` (a string tensor or dataset of paths), interleaved. Lines that
    are not UTF-8 are left out (a scan refused or counted them before), or with ``check`` "raise" stop the
    pipeline with an assertion naming file and line (:func:`bad_line_error`), "skip" leaves them out."""
    import tensorflow as tf

    ds = files if isinstance(files, tf.data.Dataset) else tf.data.Dataset.from_tensor_slices(files)
    parallel = {"num_parallel_calls": tf.data.AUTOTUNE, "deterministic": True} if cycle_length > 1 else {}
    if check == "raise":  # each line with its file and number, for the error
        def numbered(path: Any) -> Any:
            return tf.data.TextLineDataset(path).enumerate(start=1).map(lambda n, line: (line, path, n))

        ds = ds.interleave(numbered, cycle_length=cycle_length, block_length=1, **parallel)
    else:
        ds = ds.interleave(tf.data.TextLineDataset, cycle_length=cycle_length, block_length=1, **parallel)

    def clean(line: Any, *where: Any) -> Any:
        line = tf.strings.regex_replace(line, "\r$", "")
        line = tf.strings.regex_replace(line, "^\ufeff", "")  # the pattern is UTF-8: bytes EF BB BF
        return (line, *where) if where else line

    def valid(line: Any) -> Any:  # a line is UTF-8 exactly when replacing its invalid bytes changes nothing
        return tf.equal(tf.strings.unicode_transcode(line, "UTF-8", "UTF-8", errors="replace"), line)

    ds = ds.map(clean, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.filter(lambda line, *_: tf.strings.length(tf.strings.strip(line)) > 0)
    if check != "raise":
        return ds.filter(valid)

    def checked(line: Any, path: Any, number: Any) -> Any:
        with tf.control_dependencies([tf.debugging.Assert(valid(line), [BAD_LINE, path, number])]):
            return tf.identity(line)

    return ds.map(checked, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _in_validation(line: Any, threshold: int) -> Any:
    import tensorflow as tf

    return tf.strings.to_hash_bucket_fast(line, HASH_BUCKETS) < threshold


Shard = tuple  # (number of input pipelines, this one's index): one per worker of a multi-worker job


def shard_policy(n_files: int, workers: int) -> str:
    """How ``shuffled_epochs`` splits an epoch between ``workers``: "FILE" (each reads its own files) when
    every worker gets one, else "DATA" (each reads every file and keeps every ``workers``-th record)."""
    return "FILE" if n_files >= workers else "DATA"


def shuffled_epochs(files: Sequence[str], kind: Any, seed: int, shuffle_buffer: int, cycle_length: int = 4,
                    keep: Any = None, shard: Shard | None = None, epochs: int | None = None,
                    check: str | None = None) -> Any:
    """Endless dataset of the records of ``files``, a fresh seeded order every epoch: the files in a
    stateless permutation of ``(seed, epoch)``, interleaved, then shuffled in blocks of ``shuffle_buffer``
    (each block a stateless permutation of ``(seed + epoch, block)``). ``kind``: "text" lines,
    "tfrecord" records, or a function from one file name (a string tensor) to a dataset of its records
    (a tensor or a tuple of tensors each). ``keep`` optionally filters the records first.

    ``shard=(n, i)``: input pipeline ``i`` of ``n`` (a worker) reads its part of every epoch, the parts
    disjoint and together the whole epoch, each exactly once (:func:`shard_policy`: the files of the
    epoch's order at ``i, i + n, ...``, or with fewer files than pipelines every ``n``-th record).
    ``epochs``: that many epochs instead of endless ones. ``check``: text lines that are not UTF-8 stop
    the pipeline ("raise") or are left out (see :func:`_lines`)."""
    import tensorflow as tf

    paths = tf.constant(list(files), tf.string)
    n_files = len(files)
    pipelines, index = shard or (1, 0)
    by_file = pipelines > 1 and shard_policy(n_files, pipelines) == "FILE"
    cycle = max(1, min(cycle_length, -(-n_files // pipelines) if by_file else n_files))
    seed_t = tf.constant(seed, tf.int64)

    def records(ordered: Any) -> Any:
        if kind == "text":
            return _lines(ordered, cycle, check)
        opener = tf.data.TFRecordDataset if kind == "tfrecord" else kind
        parallel = {"num_parallel_calls": tf.data.AUTOTUNE, "deterministic": True} if cycle > 1 else {}
        return tf.data.Dataset.from_tensor_slices(ordered).interleave(opener, cycle_length=cycle, block_length=1,
                                                                      **parallel)

    def permuted(i: Any, e: Any, block: Any) -> Any:
        block_seed = tf.stack([seed_t + e, i])
        if not isinstance(block, tuple):
            return tf.random.experimental.stateless_shuffle(block, seed=block_seed)
        order = tf.random.experimental.stateless_shuffle(tf.range(tf.shape(block[0])[0]), seed=block_seed)
        return tuple(tf.gather(t, order) for t in block)

    def epoch(e: Any) -> Any:
        order = tf.random.experimental.stateless_shuffle(tf.range(n_files, dtype=tf.int64),
                                                          seed=tf.stack([seed_t, e]))
        if by_file:
            order = order[index::pipelines]
        ds = records(tf.gather(paths, order))
        if keep is not None:
            ds = ds.filter(keep)
        if pipelines > 1 and not by_file:
            ds = ds.shard(pipelines, index)
        if shuffle_buffer <= 1:
            return ds
        # Seeds (seed + epoch, block): distinct for every block of every epoch of this run.
        return ds.batch(shuffle_buffer).enumerate().map(lambda i, block: permuted(i, e, block)).unbatch()

    counter = tf.data.Dataset.counter(dtype=tf.int64) if epochs is None else tf.data.Dataset.range(epochs)
    ds = counter.flat_map(epoch)
    if pipelines > 1:  # sharded here: tf.distribute must not shard it again
        import logging

        logging.getLogger("zoo").info(
            "input pipeline %d of %d: %s", index, pipelines,
            f"its own files of every epoch ({n_files} files, AutoShardPolicy FILE)" if by_file else
            f"every {pipelines}th record of every epoch ({n_files} file(s) < {pipelines} pipelines, AutoShardPolicy "
            "DATA: each reads every file)")
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        ds = ds.with_options(options)
    return ds


def train_lines(files: Sequence[str], validation_split: float, seed: int, shuffle_buffer: int,
                cycle_length: int = 4, shard: Shard | None = None, check: str | None = None) -> Any:
    """Endless dataset of the training part's lines, a fresh seeded order every epoch (see the module doc)."""
    threshold = validation_threshold(validation_split)
    return shuffled_epochs(files, "text", seed, shuffle_buffer, cycle_length,
                           keep=lambda line: ~_in_validation(line, threshold), shard=shard, check=check)


def validation_lines(files: Sequence[str], validation_split: float, limit: int | None = None,
                     check: str | None = None) -> Any:
    """The validation part's lines in file order (at most ``limit``)."""
    import tensorflow as tf

    threshold = validation_threshold(validation_split)
    ds = _lines(tf.constant(list(files), tf.string), 1, check).filter(lambda line: _in_validation(line, threshold))
    return ds.take(limit) if limit else ds


def all_lines(files: Sequence[str], check: str | None = None) -> Any:
    """Every non-blank line of ``files``, in file order (an evaluation corpus)."""
    import tensorflow as tf

    return _lines(tf.constant(list(files), tf.string), 1, check)
