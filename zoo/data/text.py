"""Text inputs: labelled CSV / TSV / JSONL files, plain-text corpora and ``source<TAB>target`` pairs.

Every error names the file and the line: bytes that are not UTF-8, a missing column, a line
without a tab, an empty text.
"""

from __future__ import annotations

import csv
import glob
import itertools
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zoo.errors import DataError


@dataclass
class TextExamples:
    """Labelled texts (and optional second texts, for pairs) read from one file."""

    texts: list[str]
    labels: list[str]
    pairs: list[str] | None = None
    lines: list[int] = field(default_factory=list)  # source line of each example, for error messages
    source: str = ""

    def __len__(self) -> int:
        return len(self.texts)


ON_ERROR = ("raise", "skip")


class BadRows:
    """What happens to a bad row (bytes that are not UTF-8, malformed JSON, a missing field, a line
    without a tab...): ``data.on_error=raise`` (the default) stops with a DataError naming file and line;
    ``skip`` drops the row, counts it and keeps the first few messages for the run's report."""

    KEPT = 5

    def __init__(self, policy: str = "raise"):
        if policy not in ON_ERROR:
            raise DataError(f"data.on_error={policy!r}; use one of {', '.join(ON_ERROR)}")
        self.policy, self.count, self.first = policy, 0, []

    def bad(self, message: str, cause: BaseException | None = None) -> None:
        if self.policy == "raise":
            raise DataError(message) from cause
        self.count += 1
        if len(self.first) < self.KEPT:
            self.first.append(message)

    def report(self) -> dict[str, Any]:
        """``{"skipped_rows": n, "first_skipped": [...]}`` for run.json (and a warning in the log)."""
        if self.count:
            import logging

            logging.getLogger("zoo").warning("skipped %d bad row(s) (data.on_error=skip); first: %s", self.count,
                                             self.first[0])
        return {"skipped_rows": self.count, "first_skipped": list(self.first)}


def utf8_error(path: str, number: int, exc: UnicodeDecodeError) -> str:
    return f"{path}:{number}: not valid UTF-8 ({exc.reason} at byte {exc.start}); re-encode the file as UTF-8"


def decoded_lines(path: str, bad: BadRows | None = None, byte_range: tuple[int, int] | None = None,
                  ) -> Iterator[tuple[int, str]]:
    """(line number, text) of every line, streamed; a DataError naming file and line for bytes that are not
    UTF-8 (or the line skipped and counted, under ``bad``'s skip policy). ``byte_range`` ``(start, end)``
    reads the lines that start in it (``start`` at a line start; numbers then count from it)."""
    if not os.path.isfile(path):
        raise DataError(f"data file {path!r} does not exist" if not os.path.isdir(path) else
                        f"{path!r} is a directory; pass a data file")
    bad = bad or BadRows()
    start, end = byte_range or (0, None)
    with open(path, "rb") as fh:
        fh.seek(start)
        position = start
        for number, raw in enumerate(fh, start=1):
            if end is not None and position >= end:
                break
            position += len(raw)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                bad.bad(utf8_error(path, number, exc), exc)
                continue
            if number == 1 and start == 0 and line.startswith("\ufeff"):
                line = line[1:]  # byte-order mark
            yield number, line.rstrip("\n").rstrip("\r")


def text_format(path: str, fmt: str = "auto") -> str:
    """csv, tsv or jsonl, from ``fmt`` or the file extension."""
    if fmt != "auto":
        return fmt
    ext = os.path.splitext(path)[1].lower()
    formats = {".csv": "csv", ".tsv": "tsv", ".txt": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}
    if ext not in formats:
        raise DataError(f"cannot tell the format of {path!r} from its extension; use .csv, .tsv or .jsonl, "
                        "or set data.format")
    return formats[ext]


def labelled_rows(path: str, text_column: str = "text", label_column: str = "label",
                  pair_column: str | None = None, fmt: str = "auto", bad: BadRows | None = None,
                  byte_range: tuple[int, int] | None = None) -> Iterator[tuple[int, str, str | None, str]]:
    """``(line number, text, pair text or None, label)`` of each row of a CSV / TSV (with a header row) or
    JSONL file, streamed (one row in memory at a time). Errors name file and line; under ``bad``'s skip
    policy bad rows are counted and left out instead. A missing column is always an error, raised before
    the first row. ``byte_range`` reads the rows that start in it (a CSV / TSV header is read from the
    file's first line; a range must start after it)."""
    bad = bad or BadRows()
    fmt = text_format(path, fmt)
    lines = decoded_lines(path, bad, byte_range)
    if byte_range is not None and fmt != "jsonl":
        lines = itertools.chain(itertools.islice(decoded_lines(path, bad), 1), lines)
    columns = [text_column, label_column] + ([pair_column] if pair_column else [])
    if fmt == "jsonl":
        records = _json_records(path, lines, bad)
    else:
        records = _delimited_records(path, lines, "," if fmt == "csv" else "\t", columns, bad)
    for number, record in records:
        missing = [c for c in columns if c not in record]
        if missing:
            bad.bad(f"{path}:{number}: no field {missing[0]!r}")
            continue
        label = record[label_column]
        if label is None or str(label).strip() == "":
            bad.bad(f"{path}:{number}: empty label")
            continue
        text = "" if record[text_column] is None else str(record[text_column])
        pair = ("" if record[pair_column] is None else str(record[pair_column])) if pair_column else None
        yield number, text, pair, str(label).strip()


def _json_records(path: str, lines: Iterator[tuple[int, str]], bad: BadRows) -> Iterator[tuple[int, dict]]:
    for number, line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            bad.bad(f"{path}:{number}: not valid JSON ({exc})", exc)
            continue
        if not isinstance(record, dict):
            bad.bad(f"{path}:{number}: expected a JSON object per line")
            continue
        yield number, record


def _delimited_records(path: str, lines: Iterator[tuple[int, str]], delimiter: str, columns: Sequence[str],
                       bad: BadRows) -> Iterator[tuple[int, dict]]:
    first = next(lines, None)
    if first is None:
        raise DataError(f"{path!r} is empty; expected a header row naming the columns")
    header = next(csv.reader([first[1]], delimiter=delimiter), [])
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(f"{path!r} has no column {', '.join(map(repr, missing))}; its header has "
                        f"{', '.join(header)} (set data.text_column / data.label_column)")
    for number, line in lines:
        values = next(csv.reader([line], delimiter=delimiter), [])
        if not values:
            continue
        if len(values) != len(header):
            bad.bad(f"{path}:{number}: {len(values)} fields but the header has {len(header)} "
                    f"({delimiter!r}-separated); quote fields that contain the separator")
            continue
        yield number, dict(zip(header, values))


def read_labelled_text(path: str, text_column: str = "text", label_column: str = "label",
                       pair_column: str | None = None, fmt: str = "auto", bad: BadRows | None = None) -> TextExamples:
    """Every row of a CSV / TSV (with a header row) or JSONL file of texts and labels (see
    :func:`labelled_rows`), in memory."""
    texts, labels, pairs, numbers = [], [], [], []
    for number, text, pair, label in labelled_rows(path, text_column, label_column, pair_column, fmt, bad):
        texts.append(text)
        labels.append(label)
        pairs.append(pair)
        numbers.append(number)
    if not texts:
        raise DataError(f"{path!r} holds no examples")
    return TextExamples(texts, labels, pairs if pair_column else None, numbers, path)


def label_names(labels: Sequence[str]) -> list[str]:
    """Sorted distinct labels (numerically when they are all integers)."""
    distinct = set(labels)
    try:
        return sorted(distinct, key=int)
    except ValueError:
        return sorted(distinct)


def encode_labels(examples: TextExamples, names: Sequence[str]) -> np.ndarray:
    """Label ids; a label outside ``names`` is a DataError naming the file and line."""
    index = {n: i for i, n in enumerate(names)}
    ids = []
    for label, number in zip(examples.labels, examples.lines or range(1, len(examples) + 1)):
        if label not in index:
            raise DataError(f"{examples.source}:{number}: label {label!r} was not seen in training "
                            f"(training labels: {', '.join(names)})")
        ids.append(index[label])
    return np.asarray(ids, dtype=np.int32)


def corpus_files(paths: Sequence[str]) -> list[str]:
    """The files that ``paths`` (file names and globs) name, globs sorted; an unmatched glob is an error."""
    files: list[str] = []
    for pattern in paths:
        matched = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
        if not matched:
            raise DataError(f"no files match {pattern!r}")
        files.extend(matched)
    return files


def read_text_corpus(paths: Sequence[str], bad: BadRows | None = None) -> list[str]:
    """Non-empty lines of plain text files (globs allowed), for pretraining and vocabularies."""
    files = corpus_files(paths)
    lines = []
    for path in files:
        lines.extend(text for _, text in decoded_lines(path, bad) if text.strip())
    if not lines:
        raise DataError(f"the corpus {', '.join(files)} has no non-empty lines")
    return lines


def vocabulary_sample(lines: Sequence[str], limit: int, seed: int) -> list[str]:
    """At most ``limit`` of ``lines`` for learning a vocabulary: all of them if they fit, else a seeded
    uniform sample kept in corpus order (the same lines for the same seed)."""
    if limit <= 0 or len(lines) <= limit:
        return list(lines)
    import random

    keep = sorted(random.Random(seed).sample(range(len(lines)), limit))
    return [lines[i] for i in keep]


def text_pairs(path: str, bad: BadRows | None = None, byte_range: tuple[int, int] | None = None,
               ) -> Iterator[tuple[int, str, str]]:
    """``(line number, source, target)`` of each ``source<TAB>target`` line (no header), streamed.

    Blank lines are skipped; a line without a tab, or with an empty source or target, is a
    DataError naming the file and line (or skipped and counted under ``bad``'s skip policy). Text after
    a second tab stays part of the target.
    """
    bad = bad or BadRows()
    for number, line in decoded_lines(path, bad, byte_range):
        if not line.strip():
            continue
        if "\t" not in line:
            bad.bad(f"{path}:{number}: no tab; each line must be 'source<TAB>target'")
            continue
        source, target = line.split("\t", 1)
        if not source.strip() or not target.strip():
            bad.bad(f"{path}:{number}: empty {'source' if not source.strip() else 'target'} text")
            continue
        yield number, source.strip(), target.strip()


def read_text_pairs(path: str, bad: BadRows | None = None) -> tuple[list[str], list[str], list[int]]:
    """(sources, targets, line numbers) of every pair of a TSV (see :func:`text_pairs`), in memory."""
    sources, targets, numbers = [], [], []
    for number, source, target in text_pairs(path, bad):
        sources.append(source)
        targets.append(target)
        numbers.append(number)
    if not sources:
        raise DataError(f"{path!r} has no 'source<TAB>target' lines")
    return sources, targets, numbers
