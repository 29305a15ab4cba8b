"""Prepared datasets: a corpus tokenized once, packed, shuffled and sharded into TFRecord files.

``zoo data prepare bert_pretrain --data 'corpus/*.txt' --out data/wiki`` writes::

    data/wiki/
      manifest.json                  schema version, recipe, tokenizer and its hash, sequence length, counts,
                                     padding before/after packing, cleaning counts, source files and sizes
      vocab.txt                      the WordPiece vocabulary the ids are in
      train-00000-of-00008.tfrecord  tf.train.Example: token_ids (int64 list, [CLS] ... [SEP]) and id
      validation-00000-of-00001.tfrecord

and ``zoo train bert_pretrain --data data/wiki`` trains on it with no tokenization in the input pipeline.

* **Packing** (RoBERTa's FULL-SENTENCES, Liu et al. 2019): consecutive lines (sentences) of the corpus
  fill one sequence up to ``sequence_length``; documents are separated by blank lines (and files), and a
  document that ends inside a sequence is followed by one ``[SEP]``. A line longer than a whole sequence
  is cut into sequence-sized pieces, so every token of the corpus is kept, in order: reading the
  sequences by ``id`` and dropping ``[CLS]``/``[SEP]`` gives back the tokenized corpus.
* **Validation part**: a seeded ``validation_split`` of the packed sequences.
* **Shuffling**: each sequence goes to a seeded random shard, then each shard is permuted in memory (one
  shard at a time, so memory is bounded by the shard size, not the corpus). Training adds file-order
  shuffling and a shuffle buffer on top.
* **Cleaning** (optional, counted in the manifest): exact-duplicate lines dropped by a 64-bit
  fingerprint (the first occurrence kept; 8 bytes of memory per line while preparing), and lines with
  fewer than ``min_line_tokens`` or more than ``max_line_tokens`` WordPiece tokens.
* **Atomic**: everything is written into ``<out>.partial-<pid>`` beside ``out`` and renamed to ``out`` at
  the end, so a killed prepare leaves no ``out`` (and no manifest); the next prepare of the same ``out``
  removes such leftovers.
* **Parallel over input files**: with ``workers > 1`` each file is tokenized and packed in its own
  process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from zoo.errors import DataError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
VOCAB = "vocab.txt"
PARTS = ("train", "validation")
FORMAT = "packed_token_ids"
# Default shard count: one shard per this many bytes of input text (at least one, at most 1024).
BYTES_PER_SHARD = 128 * 2**20
PARALLEL_BYTES = 64 * 2**20  # workers unset (0): one per core above this much input, else in this process


def vocabulary_hash(vocabulary: Sequence[str]) -> str:
    """sha256 of the vocabulary file's text (one token per line): what a prepared dataset is tied to."""
    return hashlib.sha256(("\n".join(vocabulary) + "\n").encode("utf-8")).hexdigest()


class Packer:
    """FULL-SENTENCES packing of token-id lists into sequences of at most ``sequence_length``.

    ``add(tokens)`` appends a line; ``end_document()`` marks a document boundary; ``finish()`` flushes.
    Each returns the sequences completed, as ``[CLS] ... [SEP]`` lists. Inside a sequence, documents are
    separated by one ``[SEP]``.
    """

    def __init__(self, sequence_length: int, cls_id: int, sep_id: int):
        if sequence_length < 3:
            raise DataError(f"sequence_length={sequence_length} leaves no room for tokens; use 8 or more")
        self.budget = sequence_length - 2  # [CLS] and the closing [SEP]
        self.cls_id, self.sep_id = cls_id, sep_id
        self.current: list[int] = []
        self.boundary = False

    def _emit(self) -> list[list[int]]:
        done = [[self.cls_id, *self.current, self.sep_id]] if self.current else []
        self.current, self.boundary = [], False
        return done

    def add(self, tokens: Sequence[int]) -> list[list[int]]:
        if not len(tokens):
            return []
        done: list[list[int]] = []
        gap = 1 if (self.boundary and self.current) else 0
        if len(self.current) + gap + len(tokens) > self.budget:
            done += self._emit()
            gap = 0
        elif gap:
            self.current.append(self.sep_id)
        self.boundary = False
        tokens = list(tokens)
        while len(tokens) > self.budget:  # longer than a sequence: cut into full pieces, keep the rest
            done.append([self.cls_id, *tokens[:self.budget], self.sep_id])
            tokens = tokens[self.budget:]
        self.current.extend(tokens)
        return done

    def end_document(self) -> None:
        self.boundary = bool(self.current)

    def finish(self) -> list[list[int]]:
        return self._emit()


def unpack(sequences: Sequence[Sequence[int]], cls_id: int, sep_id: int) -> list[int]:
    """The corpus tokens of packed sequences (in order): ``[CLS]`` and ``[SEP]`` dropped."""
    return [t for seq in sequences for t in seq if t not in (cls_id, sep_id)]


def fingerprint(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


@dataclass(frozen=True)
class PackTask:
    """One input file's share of a prepare (picklable: it crosses to a worker process)."""

    index: int
    path: str
    vocabulary: tuple[str, ...]
    lowercase: bool
    sequence_length: int
    validation_split: float
    seed: int
    shards: dict[str, int]
    tmp_dir: str
    keep_path: str | None = None  # a .npy bool array over the file's text lines (dedup), or None
    min_line_tokens: int = 0
    max_line_tokens: int = 0
    on_error: str = "raise"
    batch_lines: int = 2048


def file_fingerprints(path: str, on_error: str) -> np.ndarray:
    """uint64 fingerprints of the file's text lines, in order (for exact-duplicate removal)."""
    from zoo.data.stream import corpus_lines
    from zoo.data.text import BadRows

    bad = BadRows(on_error)
    values = [fingerprint(text) for _, text in corpus_lines(path, bad) if text is not None]
    return np.asarray(values, dtype=np.uint64)


def _example(tokens: Sequence[int], ident: int) -> bytes:
    import tensorflow as tf

    feature = {"token_ids": tf.train.Feature(int64_list=tf.train.Int64List(value=tokens)),
               "id": tf.train.Feature(int64_list=tf.train.Int64List(value=[ident]))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def pack_file(task: PackTask) -> dict[str, Any]:
    """Tokenize and pack one file, writing each sequence to a seeded random part and shard of
    ``task.tmp_dir`` (``f<index>-<part>-<shard>.tfrecord``). Returns the file's counts."""
    import tensorflow as tf

    from zoo.data.stream import corpus_lines
    from zoo.data.text import BadRows
    from zoo.tokenizers import BertPreprocessor

    pre = BertPreprocessor(list(task.vocabulary), sequence_length=task.sequence_length, lowercase=task.lowercase)
    packer = Packer(task.sequence_length, pre.cls_id, pre.sep_id)
    keep = np.load(task.keep_path) if task.keep_path else None
    rng = np.random.default_rng([task.seed, task.index])
    writers: dict[tuple[str, int], Any] = {}
    bad = BadRows(task.on_error)
    counts = {"lines": 0, "documents": 0, "duplicates": 0, "too_short": 0, "too_long": 0, "tokens": 0,
              "sequences": {p: 0 for p in PARTS}, "sequence_tokens": 0, "unpacked_tokens": 0, "unpacked_lines": 0}
    sequence_number = 0
    in_document = False

    def write(sequences: list[list[int]]) -> None:
        nonlocal sequence_number
        for seq in sequences:
            part = "validation" if rng.random() < task.validation_split else "train"
            shard = int(rng.integers(task.shards[part]))
            key = (part, shard)
            if key not in writers:
                writers[key] = tf.io.TFRecordWriter(os.path.join(task.tmp_dir, f"f{task.index:05d}-{part}-{shard:05d}"
                                                                              ".tfrecord"))
            writers[key].write(_example(seq, (task.index << 40) | sequence_number))
            sequence_number += 1
            counts["sequences"][part] += 1
            counts["sequence_tokens"] += len(seq)

    def flush(batch: list[str | None]) -> None:
        nonlocal in_document
        texts = [t for t in batch if t is not None]
        ids = iter(pre.tokenize(texts).to_list() if texts else [])
        for item in batch:
            if item is None:
                if in_document:
                    counts["documents"] += 1
                    in_document = False
                packer.end_document()
                continue
            tokens = next(ids)
            if task.min_line_tokens and len(tokens) < task.min_line_tokens:
                counts["too_short"] += 1
                continue
            if task.max_line_tokens and len(tokens) > task.max_line_tokens:
                counts["too_long"] += 1
                continue
            counts["lines"] += 1
            counts["tokens"] += len(tokens)
            if tokens:
                counts["unpacked_lines"] += 1
                counts["unpacked_tokens"] += min(len(tokens), task.sequence_length - 2) + 2
            in_document = True
            write(packer.add(tokens))

    batch: list[str | None] = []
    text_index = 0
    try:
        for _, text in corpus_lines(task.path, bad):
            if text is not None:
                kept = keep is None or bool(keep[text_index])
                text_index += 1
                if not kept:
                    counts["duplicates"] += 1
                    continue
            batch.append(text)
            if len(batch) >= task.batch_lines:
                flush(batch)
                batch = []
        flush(batch)
        if in_document:
            counts["documents"] += 1
        write(packer.finish())
    finally:
        for w in writers.values():
            w.close()
    counts.update(bad.report())
    return counts


def _die_with_parent(parent: int) -> None:
    """Worker initializer: on Linux, the kernel kills this worker when the prepare process dies (even by
    SIGKILL), so a killed prepare leaves no orphan tokenizing on."""
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGKILL)


def _pack_all(tasks: list[PackTask], workers: int, fn: Any = pack_file) -> list[Any]:
    if workers <= 1 or len(tasks) <= 1:
        return [fn(t) for t in tasks]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn: a fork of a process that has run TensorFlow is not safe.
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=multiprocessing.get_context("spawn"),
                             initializer=_die_with_parent, initargs=(os.getpid(),)) as pool:
        return list(pool.map(fn, tasks))


def _fingerprints_of(task: PackTask) -> np.ndarray:
    return file_fingerprints(task.path, task.on_error)


def _shuffle_shards(tmp_dir: str, out_dir: str, part: int, part_name: str, shards: int, seed: int,
                    n_files: int) -> list[dict[str, Any]]:
    """Merge each shard's pieces from every file and permute it (seeded), one shard in memory at a time:
    the final shard files (empty shards are left out)."""
    import tensorflow as tf

    pieces = {}
    for shard in range(shards):
        found = [os.path.join(tmp_dir, f"f{i:05d}-{part_name}-{shard:05d}.tfrecord") for i in range(n_files)]
        found = [p for p in found if os.path.exists(p)]
        if found:
            pieces[shard] = found
    written = []
    for k, (shard, found) in enumerate(sorted(pieces.items())):
        records = [r.numpy() for r in tf.data.TFRecordDataset(found)]
        order = np.random.default_rng([seed, part, shard]).permutation(len(records))
        name = f"{part_name}-{k:05d}-of-{len(pieces):05d}.tfrecord"
        with tf.io.TFRecordWriter(os.path.join(out_dir, name)) as writer:
            for i in order:
                writer.write(records[i])
        del records
        written.append({"file": name, "examples": int(len(order)),
                        "bytes": os.path.getsize(os.path.join(out_dir, name))})
        for p in found:
            os.remove(p)
    return written


def _remove_stale_partials(out: str) -> None:
    parent, base = os.path.split(os.path.abspath(out))
    if not os.path.isdir(parent):
        return
    for name in os.listdir(parent):
        if not name.startswith(base + ".partial-"):
            continue
        pid = name.rsplit("-", 1)[-1]
        alive = False
        if pid.isdigit():
            try:
                os.kill(int(pid), 0)
                alive = int(pid) != os.getpid()
            except OSError:
                alive = False
        if not alive:
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


@dataclass(frozen=True)
class PrepareSpec:
    """What to prepare: the recipe's choices, resolved (vocabulary included)."""

    recipe: str
    files: tuple[str, ...]
    vocabulary: tuple[str, ...]
    lowercase: bool
    sequence_length: int
    validation_split: float = 0.05
    seed: int = 0
    dedup: bool = False
    min_line_tokens: int = 0
    max_line_tokens: int = 0
    on_error: str = "raise"
    shards: int = 0    # 0: one per BYTES_PER_SHARD of input (train part; validation gets its share)
    workers: int = 0   # 0: one per core for inputs over PARALLEL_BYTES, else 1
    source: str = ""   # what the user passed (for the manifest)
    extra: dict[str, Any] = field(default_factory=dict)


def check_out(out: str) -> None:
    """Refuse an ``--out`` that holds anything (checked before any work, and again before writing)."""
    if os.path.exists(os.path.join(out, MANIFEST)):
        raise DataError(f"{out!r} already holds a prepared dataset; pass another --out, or delete it first")
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise DataError(f"--out {out!r} exists and is not an empty directory; pass a new path")


def default_shards(total_bytes: int) -> int:
    return max(1, min(1024, math.ceil(total_bytes / BYTES_PER_SHARD)))


def prepare(spec: PrepareSpec, out: str, log: Any = None) -> dict[str, Any]:
    """Write the prepared dataset of ``spec`` to ``out`` (see the module doc); returns the manifest."""
    from zoo.atomic import write_json_atomic, write_text_atomic

    log = log or (lambda message: None)
    check_out(out)
    _remove_stale_partials(out)
    sizes = [os.path.getsize(f) for f in spec.files]
    total = sum(sizes)
    train_shards = spec.shards or default_shards(total)
    # Each worker process imports TensorFlow (seconds): worth it for inputs of real size only.
    workers = spec.workers or ((os.cpu_count() or 1) if total > PARALLEL_BYTES else 1)
    validation_shards = max(1, math.ceil(train_shards * spec.validation_split)) if spec.validation_split else 1
    shards = {"train": train_shards, "validation": validation_shards}
    tmp_root = f"{os.path.abspath(out)}.partial-{os.getpid()}"
    tmp = os.path.join(tmp_root, ".pieces")
    os.makedirs(tmp)
    try:
        tasks = [PackTask(index=i, path=p, vocabulary=spec.vocabulary, lowercase=spec.lowercase,
                          sequence_length=spec.sequence_length, validation_split=spec.validation_split,
                          seed=spec.seed, shards=shards, tmp_dir=tmp, min_line_tokens=spec.min_line_tokens,
                          max_line_tokens=spec.max_line_tokens, on_error=spec.on_error)
                 for i, p in enumerate(spec.files)]
        if spec.dedup:
            log(f"fingerprinting the lines of {len(tasks)} file(s) for duplicate removal")
            prints = _pack_all(tasks, workers, _fingerprints_of)
            flat = np.concatenate(prints) if prints else np.zeros(0, np.uint64)
            keep = np.zeros(len(flat), bool)
            keep[np.unique(flat, return_index=True)[1]] = True  # the first occurrence of each line
            offsets = np.cumsum([0] + [len(p) for p in prints])
            for i, t in enumerate(tasks):
                path = os.path.join(tmp, f"keep-{i:05d}.npy")
                np.save(path, keep[offsets[i]:offsets[i + 1]])
                tasks[i] = replace(t, keep_path=path)
        log(f"tokenizing and packing {len(tasks)} file(s) ({total / 2**20:.1f} MiB) with "
            f"{min(workers, len(tasks))} worker process(es)")
        per_file = _pack_all(tasks, workers)
        written = {}
        for k, part in enumerate(PARTS):
            log(f"shuffling the {part} part into {shards[part]} shard(s)")
            written[part] = _shuffle_shards(tmp, tmp_root, k, part, shards[part], spec.seed, len(tasks))
        shutil.rmtree(tmp)
        counts = {key: sum(c[key] for c in per_file) for key in ("lines", "documents", "tokens", "duplicates",
                                                                 "too_short", "too_long", "skipped_rows")}
        sequences = {p: sum(c["sequences"][p] for c in per_file) for p in PARTS}
        n_seq = sum(sequences.values())
        if sequences["train"] == 0:
            raise DataError(f"no training sequence came out of {spec.source or ', '.join(spec.files)}: "
                            + ("every line was blank, filtered or a duplicate" if n_seq == 0 else
                               "every sequence fell in the validation part; lower data.validation_split"))
        unpacked_lines = sum(c["unpacked_lines"] for c in per_file)
        padding = {
            "unpacked": 1 - sum(c["unpacked_tokens"] for c in per_file) / max(1, unpacked_lines * spec.sequence_length),
            "packed": 1 - sum(c["sequence_tokens"] for c in per_file) / max(1, n_seq * spec.sequence_length)}
        first_skipped = [m for c in per_file for m in c["first_skipped"]][:5]
        manifest = {
            "schema_version": SCHEMA_VERSION, "recipe": spec.recipe, "format": FORMAT,
            "packing": "full_sentences",
            "tokenizer": {"kind": "wordpiece", "vocabulary_file": VOCAB, "vocabulary_size": len(spec.vocabulary),
                          "vocabulary_sha256": vocabulary_hash(spec.vocabulary), "lowercase": spec.lowercase},
            "sequence_length": spec.sequence_length,
            "examples": sequences,
            "shards": written,
            "lines": counts["lines"], "documents": counts["documents"], "tokens": counts["tokens"],
            "padding_fraction": {k: round(v, 6) for k, v in padding.items()},
            "cleaning": {"dedup": spec.dedup, "duplicates_removed": counts["duplicates"],
                         "min_line_tokens": spec.min_line_tokens, "max_line_tokens": spec.max_line_tokens,
                         "too_short": counts["too_short"], "too_long": counts["too_long"],
                         "skipped_rows": counts["skipped_rows"], "first_skipped": first_skipped},
            "validation_split": spec.validation_split, "seed": spec.seed,
            "source": spec.source, "sources": [{"path": os.path.abspath(f), "bytes": s}
                                               for f, s in zip(spec.files, sizes)],
            **spec.extra,
        }
        write_text_atomic(os.path.join(tmp_root, VOCAB), "\n".join(spec.vocabulary) + "\n")
        write_json_atomic(os.path.join(tmp_root, MANIFEST), manifest)  # last: a dir with a manifest is complete
        if os.path.isdir(out):
            os.rmdir(out)  # empty (checked above)
        os.replace(tmp_root, out)
    except BaseException:
        shutil.rmtree(tmp_root, ignore_errors=True)
        raise
    return manifest


@dataclass(frozen=True)
class Prepared:
    """A prepared dataset opened for reading: its manifest, vocabulary and shard paths."""

    path: str
    manifest: dict[str, Any]
    vocabulary: tuple[str, ...]

    @property
    def sequence_length(self) -> int:
        return int(self.manifest["sequence_length"])

    @property
    def lowercase(self) -> bool:
        return bool(self.manifest["tokenizer"]["lowercase"])

    @property
    def vocabulary_sha256(self) -> str:
        return self.manifest["tokenizer"]["vocabulary_sha256"]

    def examples(self, part: str) -> int:
        return int(self.manifest["examples"].get(part, 0))

    def files(self, part: str) -> list[str]:
        return [os.path.join(self.path, s["file"]) for s in self.manifest["shards"].get(part, [])]

    def parse(self, record: Any) -> Any:
        """A serialized example -> ``{"token_ids", "segment_ids", "padding_mask"}`` (int32, padded)."""
        import tensorflow as tf

        parsed = tf.io.parse_single_example(record, {"token_ids": tf.io.VarLenFeature(tf.int64)})
        ids = tf.cast(tf.sparse.to_dense(parsed["token_ids"]), tf.int32)
        ids = tf.pad(ids, [[0, self.sequence_length - tf.shape(ids)[0]]])
        ids = tf.ensure_shape(ids, [self.sequence_length])
        return {"token_ids": ids, "segment_ids": tf.zeros_like(ids), "padding_mask": tf.cast(ids != 0, tf.int32)}

    def train_dataset(self, seed: int, shuffle_buffer: int, cycle_length: int = 4, shard: Any = None) -> Any:
        """Endless, seeded: every epoch a fresh file order, records interleaved, shuffled in blocks (``shard``:
        one worker's part, see ``stream.shuffled_epochs``)."""
        import tensorflow as tf

        from zoo.data.stream import shuffled_epochs

        return shuffled_epochs(self.files("train"), "tfrecord", seed, shuffle_buffer, cycle_length,
                               shard=shard).map(self.parse, num_parallel_calls=tf.data.AUTOTUNE)

    def service_dataset(self, seed: int, shuffle_buffer: int, first_pass: int, passes: int,
                        cycle_length: int = 4) -> Any:
        """The training records of passes ``first_pass..`` for a tf.data service (``zoo.data.service``): its
        source is the passes' files, each pass in its seeded order, which the dispatcher hands out one at a
        time; each service worker interleaves the files it gets and shuffles their records in a buffer."""
        import tensorflow as tf

        from zoo.data.service import pass_files

        files = self.files("train")
        ds = tf.data.Dataset.from_tensor_slices(pass_files(files, seed, first_pass, passes))
        ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=max(1, min(cycle_length, len(files))),
                           num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
        if shuffle_buffer > 1:
            ds = ds.shuffle(shuffle_buffer, seed=seed)
        return ds.map(self.parse, num_parallel_calls=tf.data.AUTOTUNE)

    def validation_dataset(self, limit: int | None = None) -> Any:
        import tensorflow as tf

        ds = tf.data.TFRecordDataset(self.files("validation"))
        return (ds.take(limit) if limit else ds).map(self.parse, num_parallel_calls=tf.data.AUTOTUNE)


def open_prepared(path: str, recipe: str) -> Prepared:
    """Open ``path`` as a prepared dataset for ``recipe``: a clear error for a directory that is not one."""
    manifest_path = os.path.join(path, MANIFEST)
    if not os.path.isfile(manifest_path):
        raise DataError(f"{path!r} is a directory without {MANIFEST}: not a prepared dataset (an interrupted "
                        f"`zoo data prepare` leaves none); prepare it with `zoo data prepare {recipe} --data ... "
                        f"--out {path}`, or pass the text files (e.g. '{path}/*.txt')")
    try:
        with open(manifest_path, encoding="utf-8") as fh:
            manifest = json.load(fh)
    except (OSError, ValueError) as exc:
        raise DataError(f"{manifest_path}: not readable JSON ({exc}); prepare the dataset again") from exc
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise DataError(f"{manifest_path}: schema version {version!r}, this zoo reads {SCHEMA_VERSION}; "
                        "prepare the dataset again with this version")
    if manifest.get("recipe") != recipe:
        raise DataError(f"{path!r} was prepared for {manifest.get('recipe')!r}, not {recipe!r}")
    with open(os.path.join(path, VOCAB), encoding="utf-8") as fh:
        vocabulary = tuple(fh.read().splitlines())
    prepared = Prepared(path, manifest, vocabulary)
    if vocabulary_hash(vocabulary) != prepared.vocabulary_sha256:
        raise DataError(f"{path}/{VOCAB} does not match the manifest's vocabulary hash; prepare the dataset again")
    missing = [f for p in PARTS for f in prepared.files(p) if not os.path.isfile(f)]
    if missing:
        raise DataError(f"{path!r} is missing shard(s) {', '.join(os.path.basename(m) for m in missing[:3])}; "
                        "prepare the dataset again")
    return prepared
