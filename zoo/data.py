"""Input pipelines: the real digits images scikit-learn ships, folders of images per class,
TFRecords of encoded images; deterministic stratified splits; tf.data with augmentation.

Bad data fails here, early, with the file named: a missing path, a corrupt image (skipped
with a warning or an error, by config), a folder with fewer than two classes.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zoo.errors import DataError

log = logging.getLogger(__name__)

# The formats tf.io.decode_image reads; other files in class folders are ignored with a warning.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


@dataclass
class ImageSource:
    """Images of one split: either in-memory arrays or files/records read by tf.data."""

    labels: np.ndarray
    arrays: np.ndarray | None = None            # (N, H, W, C) float32 pixel values
    files: list[str] | None = None              # image files, one per label
    records: tuple[list[str], np.ndarray] | None = None  # (tfrecord files, record indices)

    def __len__(self) -> int:
        return int(len(self.labels))


@dataclass
class ImageData:
    """Train / validation / test splits with class names and the native pixel range."""

    train: ImageSource
    validation: ImageSource | None
    test: ImageSource | None
    class_names: list[str]
    pixel_max: float
    native_size: tuple[int, int] | None = None
    channels: int = 3
    skipped: list[str] = field(default_factory=list)


def stratified_split(labels: np.ndarray, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Split indices into len(fractions)+1 parts, each class divided in the same proportions."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        start = 0
        for p, frac in enumerate(fractions):
            n = int(round(frac * len(idx)))
            parts[p + 1].extend(idx[start:start + n])
            start += n
        parts[0].extend(idx[start:])
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def _subset(src: ImageSource, idx: np.ndarray) -> ImageSource:
    return ImageSource(
        labels=src.labels[idx],
        arrays=None if src.arrays is None else src.arrays[idx],
        files=None if src.files is None else [src.files[i] for i in idx],
        records=None if src.records is None else (src.records[0], src.records[1][idx]),
    )


def split_source(src: ImageSource, validation_split: float, test_split: float, seed: int,
                 ) -> tuple[ImageSource, ImageSource | None, ImageSource | None]:
    """Split one source into train / validation / test (either fraction may be 0)."""
    train_idx, val_idx, test_idx = stratified_split(src.labels, (validation_split, test_split), seed)
    if len(train_idx) == 0:
        raise DataError("the training split is empty; lower data.validation_split / data.test_split")
    return (_subset(src, train_idx), _subset(src, val_idx) if len(val_idx) else None,
            _subset(src, test_idx) if len(test_idx) else None)


def load_digits_source() -> tuple[ImageSource, list[str]]:
    """The 1797 8x8 handwritten digits that scikit-learn ships (pixel values 0..16)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.images.astype("float32")[..., None]
    return ImageSource(labels=digits.target.astype("int32"), arrays=x), [str(n) for n in digits.target_names]


def _check_image_file(path: str) -> tuple[str | None, tuple[int, int] | None]:
    """(None, (height, width)) if ``path`` decodes as an image, else (the reason it does not, None)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            return None, (img.size[1], img.size[0])
    except Exception as exc:  # PIL raises many types for bad files; all mean "not decodable"
        return f"{type(exc).__name__}: {exc}", None


def most_common_size(sizes: Sequence[tuple[int, int]]) -> tuple[int, int] | None:
    """The (height, width) most images have: the default size images are resized to."""
    if not sizes:
        return None
    values, counts = np.unique(np.asarray(sizes), axis=0, return_counts=True)
    h, w = values[int(np.argmax(counts))]
    if len(values) > 1:
        log.info("images come in %d sizes; resizing all to the most common, %dx%d (set data.image_size to choose)",
                 len(values), h, w)
    return int(h), int(w)


def scan_image_folder(path: str, on_corrupt: str = "skip", class_names: Sequence[str] | None = None,
                      ) -> tuple[ImageSource, list[str], list[str], tuple[int, int] | None]:
    """List ``path/<class>/<image>`` files; returns (source, class names, skipped files, common size).

    Every file is decoded once here so that a corrupt image is reported by name before
    training starts rather than as a TensorFlow error deep inside an epoch.
    """
    if not os.path.isdir(path):
        raise DataError(f"image folder {path!r} does not exist or is not a directory")
    found = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)) and not d.startswith("."))
    names = list(class_names) if class_names is not None else found
    if class_names is not None:
        unknown = sorted(set(found) - set(names))
        if unknown:
            raise DataError(f"{path!r} has classes not seen in training: {', '.join(unknown)}")
    files: list[str] = []
    labels: list[int] = []
    skipped: list[str] = []
    sizes: list[tuple[int, int]] = []
    ignored = 0
    for label, name in enumerate(names):
        folder = os.path.join(path, name)
        if not os.path.isdir(folder):
            continue
        for fname in sorted(os.listdir(folder)):
            fpath = os.path.join(folder, fname)
            if not os.path.isfile(fpath):
                continue
            if not fname.lower().endswith(IMAGE_EXTENSIONS):
                ignored += 1
                continue
            problem, size = _check_image_file(fpath)
            if problem:
                if on_corrupt == "error":
                    raise DataError(
                        f"corrupt image {fpath!r} ({problem}); remove it, "
                        "or set data.on_corrupt=skip to skip such files"
                    )
                log.warning("skipping corrupt image %s (%s)", fpath, problem)
                skipped.append(fpath)
                continue
            files.append(fpath)
            labels.append(label)
            sizes.append(size)
    if ignored:
        log.warning("ignored %d files in %s that are not %s images", ignored, path, "/".join(IMAGE_EXTENSIONS))
    if class_names is None:
        counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(names)) if labels else []
        empty = [n for n, c in zip(names, counts) if c == 0] if len(labels) else names
        if empty:
            raise DataError(f"class folders without readable images in {path!r}: {', '.join(empty)}")
        if len(names) < 2:
            raise DataError(
                f"{path!r} has {len(names)} class folder(s); an image folder dataset needs one sub-folder "
                "per class and at least two classes"
            )
    source = ImageSource(labels=np.asarray(labels, dtype=np.int32), files=files)
    return source, names, skipped, most_common_size(sizes)


def tfrecord_files(pattern: str) -> list[str]:
    """Files matched by a path, directory or glob of TFRecords; DataError when there are none."""
    if os.path.isdir(pattern):
        files = sorted(glob.glob(os.path.join(pattern, "*.tfrecord*")))
    else:
        files = sorted(glob.glob(pattern))
    if not files:
        raise DataError(f"no TFRecord files at {pattern!r}; pass a file, a glob such as data/*.tfrecord, or a folder")
    return files


def scan_tfrecord_labels(files: list[str], label_key: str) -> ImageSource:
    """Read only the labels of every record (to count classes and split by index)."""
    import tensorflow as tf

    spec = {label_key: tf.io.FixedLenFeature([], tf.int64)}
    labels = []
    try:
        for rec in tf.data.TFRecordDataset(files):
            labels.append(int(tf.io.parse_single_example(rec, spec)[label_key]))
    except tf.errors.OpError as exc:
        raise DataError(
            f"could not read labels '{label_key}' from TFRecords {files[:3]}: {exc.message.splitlines()[0]}; "
            "set data.label_key to the feature that holds the integer class"
        ) from None
    if not labels:
        raise DataError(f"TFRecord files {files[:3]} hold no records")
    arr = np.asarray(labels, dtype=np.int32)
    return ImageSource(labels=arr, records=(files, np.arange(len(arr), dtype=np.int64)))


def tfrecord_image_size(files: list[str], image_key: str) -> tuple[int, int]:
    """(height, width) of the first record's image: the default size for the whole set."""
    import tensorflow as tf

    spec = {image_key: tf.io.FixedLenFeature([], tf.string)}
    try:
        rec = next(iter(tf.data.TFRecordDataset(files[:1])))
        img = tf.io.decode_image(tf.io.parse_single_example(rec, spec)[image_key], expand_animations=False)
    except (tf.errors.OpError, StopIteration) as exc:
        raise DataError(f"could not decode the image feature '{image_key}' of {files[0]!r} ({exc}); "
                        "set data.image_key to the feature holding encoded images") from None
    return int(img.shape[0]), int(img.shape[1])


def write_image_tfrecord(path: str, encoded_images: Sequence[bytes], labels: Sequence[int],
                         image_key: str = "image/encoded", label_key: str = "image/class/label") -> None:
    """Write encoded images and integer labels as tf.train.Examples (the Model Garden keys)."""
    import tensorflow as tf

    with tf.io.TFRecordWriter(path) as writer:
        for img, label in zip(encoded_images, labels):
            ex = tf.train.Example(features=tf.train.Features(feature={
                image_key: tf.train.Feature(bytes_list=tf.train.BytesList(value=[img])),
                label_key: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
            }))
            writer.write(ex.SerializeToString())


def epoch_permutations(n: int, seed: int) -> Any:
    """An endless dataset of indices: a fresh permutation of 0..n-1 for every epoch.

    Each epoch's order is a pure function of (seed, epoch), unlike ``Dataset.shuffle``, whose
    order depends on how many iterators were opened before (Keras' MirroredStrategy path opens
    one extra to peek, which made 1-replica and 2-replica runs see different batches).
    """
    import tensorflow as tf

    def one_epoch(epoch):
        perm = tf.random.experimental.stateless_shuffle(
            tf.range(n, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
        return tf.data.Dataset.from_tensor_slices(perm)

    return tf.data.Dataset.counter(dtype=tf.int64).flat_map(one_epoch)


def slices(tensors: Any, shuffle_seed: int | None = None) -> Any:
    """``Dataset.from_tensor_slices(tensors)``; with ``shuffle_seed`` endless, in a fresh
    ``epoch_permutations`` order every epoch (``tensors`` is an array or a tuple of arrays)."""
    import tensorflow as tf

    if shuffle_seed is None:
        return tf.data.Dataset.from_tensor_slices(tensors)
    constants = tf.nest.map_structure(tf.constant, tensors)
    n = len(tf.nest.flatten(tensors)[0])
    return epoch_permutations(n, shuffle_seed).map(
        lambda i: tf.nest.map_structure(lambda t: tf.gather(t, i), constants))


def image_dataset(src: ImageSource, image_size: tuple[int, int], channels: int,
                  image_key: str = "image/encoded", label_key: str = "image/class/label",
                  shuffle_seed: int | None = None, shuffle_buffer: int = 4096) -> Any:
    """A tf.data.Dataset of (float32 image with pixel values, int32 label).

    With ``shuffle_seed`` the dataset is endless and reshuffled every epoch (deterministically
    for arrays and files; with a ``shuffle_buffer`` for TFRecords, which cannot be indexed).
    """
    import tensorflow as tf

    size = tf.constant(image_size, dtype=tf.int32)

    def fit_size(img):
        img = tf.cast(img, tf.float32)
        if img.shape[0] != image_size[0] or img.shape[1] != image_size[1]:
            img = tf.image.resize(img, size)
        return tf.ensure_shape(img, (*image_size, channels))

    if src.arrays is not None:
        arrays = src.arrays
        if arrays.shape[-1] != channels:
            arrays = np.repeat(arrays, channels, axis=-1) if arrays.shape[-1] == 1 else arrays[..., :channels]
        ds = slices((arrays, src.labels), shuffle_seed)
        return ds.map(lambda x, y: (fit_size(x), y), num_parallel_calls=tf.data.AUTOTUNE)

    def decode(data):
        img = tf.io.decode_image(data, channels=channels, expand_animations=False)
        img.set_shape((None, None, channels))
        return tf.image.resize(tf.cast(img, tf.float32), size)

    if src.files is not None:
        ds = slices((np.asarray(src.files), src.labels), shuffle_seed)
        return ds.map(lambda f, y: (tf.ensure_shape(decode(tf.io.read_file(f)), (*image_size, channels)), y),
                      num_parallel_calls=tf.data.AUTOTUNE)
    files, keep = src.records
    keep_table = np.zeros(int(keep.max()) + 1 if len(keep) else 1, dtype=bool)
    keep_table[keep] = True
    keep_t = tf.constant(keep_table)
    spec = {image_key: tf.io.FixedLenFeature([], tf.string), label_key: tf.io.FixedLenFeature([], tf.int64)}
    ds = tf.data.TFRecordDataset(files).enumerate()
    n = len(keep_table)
    ds = ds.filter(lambda i, rec: tf.logical_and(i < n, tf.gather(keep_t, tf.minimum(i, n - 1))))

    def parse(i, rec):
        ex = tf.io.parse_single_example(rec, spec)
        return tf.ensure_shape(decode(ex[image_key]), (*image_size, channels)), tf.cast(ex[label_key], tf.int32)

    if shuffle_seed is not None:
        ds = ds.shuffle(min(shuffle_buffer, len(keep)), seed=shuffle_seed, reshuffle_each_iteration=True).repeat()
    return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE)


# ----------------------------------------------------------------------------- text


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
                                "re-encode the file as UTF-8") from None
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
    import csv
    import json

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
                raise DataError(f"{path}:{number}: not valid JSON ({exc})") from None
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


def read_text_corpus(paths: Sequence[str]) -> list[str]:
    """Non-empty lines of plain text files (globs allowed), for pretraining and vocabularies."""
    files: list[str] = []
    for pattern in paths:
        matched = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
        if not matched:
            raise DataError(f"no files match {pattern!r}")
        files.extend(matched)
    lines = []
    for path in files:
        lines.extend(text for _, text in _decoded_lines(path) if text.strip())
    if not lines:
        raise DataError(f"the corpus {', '.join(files)} has no non-empty lines")
    return lines


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


def length_bucketed_batches(lengths: np.ndarray, batch: int, epochs: int, seed: int, window: int = 50) -> np.ndarray:
    """Index batches ``[epochs * steps, batch]`` that keep padding small, in a seeded order.

    Each epoch: a fresh permutation (a pure function of ``(seed, epoch)``), cut into windows of
    ``window`` batches; inside a window examples are sorted by length and cut into batches, and
    the batches of the epoch are shuffled. Every epoch has the same number of batches,
    ``len(lengths) // batch`` (the few examples left over differ from epoch to epoch).
    """
    n = len(lengths)
    batch = min(batch, n)
    steps = n // batch
    out = np.empty((epochs * steps, batch), np.int64)
    for epoch in range(epochs):
        rng = np.random.default_rng([seed, epoch])
        perm = rng.permutation(n)[:steps * batch]
        span = window * batch
        for start in range(0, len(perm), span):
            chunk = perm[start:start + span]
            perm[start:start + span] = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches = perm.reshape(steps, batch)
        out[epoch * steps:(epoch + 1) * steps] = batches[rng.permutation(steps)]
    return out
