"""Text inputs: labelled CSV / TSV / JSONL files, plain-text corpora and ``source<TAB>target`` pairs.

Every error names the file and the line: bytes that are not UTF-8, a missing column, a line
without a tab, an empty text.
"""

from __future__ import annotations

import csv
import glob
import json
import os
from collections.abc import Sequence
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


def _decoded_lines(path: str) -> list[tuple[int, str]]:
    """(line number, text) of every line; a DataError naming file and line for bytes that are not UTF-8."""
    if not os.path.isfile(path):
        raise DataError(f"data file {path!r} does not exist")
    out = []
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}:{number}: not valid UTF-8 ({exc.reason} at byte {exc.start}); "
                                "re-encode the file as UTF-8") from exc
            if number == 1 and line.startswith("\ufeff"):
                line = line[1:]  # byte-order mark
            out.append((number, line.rstrip("\n").rstrip("\r")))
    return out


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


def read_labelled_text(path: str, text_column: str = "text", label_column: str = "label",
                       pair_column: str | None = None, fmt: str = "auto") -> TextExamples:
    """Read CSV / TSV (with a header row) or JSONL of texts and labels; errors name file and line."""

    fmt = text_format(path, fmt)
    lines = _decoded_lines(path)
    columns = [text_column, label_column] + ([pair_column] if pair_column else [])
    rows: list[tuple[int, dict[str, Any]]] = []
    if fmt == "jsonl":
        for number, line in lines:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise DataError(f"{path}:{number}: not valid JSON ({exc})") from exc
            if not isinstance(record, dict):
                raise DataError(f"{path}:{number}: expected a JSON object per line")
            rows.append((number, record))
    else:
        delimiter = "," if fmt == "csv" else "\t"
        if not lines:
            raise DataError(f"{path!r} is empty; expected a header row naming the columns")
        reader = csv.reader([text for _, text in lines], delimiter=delimiter)
        header = next(reader)
        for (number, _), values in zip(lines[1:], reader):
            if not values:
                continue
            if len(values) != len(header):
                raise DataError(f"{path}:{number}: {len(values)} fields but the header has {len(header)} "
                                f"({delimiter!r}-separated); quote fields that contain the separator")
            rows.append((number, dict(zip(header, values))))
        missing = [c for c in columns if c not in header]
        if missing:
            raise DataError(f"{path!r} has no column {', '.join(map(repr, missing))}; its header has "
                            f"{', '.join(header)} (set data.text_column / data.label_column)")
    texts, labels, pairs, numbers = [], [], [], []
    for number, record in rows:
        for column in columns:
            if column not in record:
                raise DataError(f"{path}:{number}: no field {column!r}")
        label = record[label_column]
        if label is None or str(label).strip() == "":
            raise DataError(f"{path}:{number}: empty label")
        texts.append("" if record[text_column] is None else str(record[text_column]))
        labels.append(str(label).strip())
        if pair_column:
            pairs.append("" if record[pair_column] is None else str(record[pair_column]))
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


def read_text_corpus(paths: Sequence[str]) -> list[str]:
    """Non-empty lines of plain text files (globs allowed), for pretraining and vocabularies."""
    files = corpus_files(paths)
    lines = []
    for path in files:
        lines.extend(text for _, text in _decoded_lines(path) if text.strip())
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


def read_text_pairs(path: str) -> tuple[list[str], list[str], list[int]]:
    """(sources, targets, line numbers) from a TSV of ``source<TAB>target`` lines (no header).

    Blank lines are skipped; a line without a tab, or with an empty source or target, is a
    DataError naming the file and line. Text after a second tab stays part of the target.
    """
    sources, targets, numbers = [], [], []
    for number, line in _decoded_lines(path):
        if not line.strip():
            continue
        if "\t" not in line:
            raise DataError(f"{path}:{number}: no tab; each line must be 'source<TAB>target'")
        source, target = line.split("\t", 1)
        if not source.strip():
            raise DataError(f"{path}:{number}: empty source text")
        if not target.strip():
            raise DataError(f"{path}:{number}: empty target text")
        sources.append(source.strip())
        targets.append(target.strip())
        numbers.append(number)
    if not sources:
        raise DataError(f"{path!r} has no 'source<TAB>target' lines")
    return sources, targets, numbers
