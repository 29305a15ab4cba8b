"""Image inputs: the real digits images scikit-learn ships, folders of images per class,
TFRecords of encoded images; tf.data pipelines with the images' own size by default.

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

from zoo.config import check_choice, check_range
from zoo.data.order import gathers_per_epoch, slices
from zoo.data.splits import stratified_split
from zoo.errors import ConfigError, DataError

log = logging.getLogger(__name__)

# The formats tf.io.decode_image reads; other files in class folders are ignored with a warning.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
FORMATS = ("auto", "digits", "folder", "tfrecord")
FLIPS = ("none", "horizontal", "vertical", "horizontal_and_vertical")


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
        ) from exc
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
                        "set data.image_key to the feature holding encoded images") from exc
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


# In-memory images whose float32 copy at the training size fits in this many bytes are cast and
# resized once up front; larger arrays are cast and resized batch by batch as they stream.
PREFIT_BYTES = 256 * 2**20


def image_dataset(src: ImageSource, image_size: tuple[int, int], channels: int,
                  image_key: str = "image/encoded", label_key: str = "image/class/label",
                  shuffle_seed: int | None = None, shuffle_buffer: int = 4096, batch_size: int | None = None,
                  augment: AugmentConfig | None = None) -> Any:
    """A tf.data.Dataset of (float32 image with pixel values, int32 label), batched with ``batch_size``.

    With ``shuffle_seed`` the dataset is endless and reshuffled every epoch (deterministically
    for arrays and files; with a ``shuffle_buffer`` for TFRecords, which cannot be indexed).
    In-memory arrays are gathered a whole batch at a time; cast and resized once up front when the
    float32 copy fits in ``PREFIT_BYTES``, else batch by batch.

    With an active ``augment`` (training streams: needs ``shuffle_seed`` and ``batch_size``) every image
    is augmented (``zoo.data.augment``): a whole epoch at once where the shuffled arrays are gathered per
    epoch (one warp per epoch rather than a map call per batch), else batch by batch.
    """
    import tensorflow as tf

    from zoo.data.augment import augment_batch, augment_batches, stream_seed

    augmenting = augment is not None and augment.active
    if augmenting and (shuffle_seed is None or batch_size is None):
        raise ValueError("augmentation is for training streams: give shuffle_seed and batch_size")

    def augmented(ds):  # batch by batch, seeded (shuffle_seed, batch index)
        return augment_batches(ds, augment, shuffle_seed) if augmenting else ds

    size = tf.constant(image_size, dtype=tf.int32)

    def fit_size(img):  # [H, W, C] or [B, H, W, C]
        img = tf.cast(img, tf.float32)
        if img.shape[-3] != image_size[0] or img.shape[-2] != image_size[1]:
            img = tf.image.resize(img, size)
        return tf.ensure_shape(img, (*img.shape[:-3], *image_size, channels))

    def batched(ds):
        return ds if batch_size is None else ds.batch(batch_size)

    if src.arrays is not None:
        arrays = src.arrays
        if arrays.shape[-1] != channels:
            arrays = np.repeat(arrays, channels, axis=-1) if arrays.shape[-1] == 1 else arrays[..., :channels]
        prefit = len(arrays) * image_size[0] * image_size[1] * channels * 4 <= PREFIT_BYTES
        if prefit:  # cast and resize once, not every epoch (same values)
            arrays = np.concatenate([fit_size(arrays[i:i + 1024]).numpy() for i in range(0, len(arrays), 1024)]
                                    or [np.zeros((0, *image_size, channels), np.float32)])
        if prefit and augmenting and gathers_per_epoch((arrays, src.labels), batch_size):
            def per_epoch(epoch, data):  # seeded (shuffle_seed, epoch)
                return augment_batch(data[0], augment, stream_seed(shuffle_seed, epoch)), data[1]

            return slices((arrays, src.labels), shuffle_seed, batch_size=batch_size, per_epoch=per_epoch)
        ds = slices((arrays, src.labels), shuffle_seed, batch_size=batch_size)
        return augmented(ds if prefit else ds.map(lambda x, y: (fit_size(x), y), num_parallel_calls=tf.data.AUTOTUNE))

    def decode(data):
        img = tf.io.decode_image(data, channels=channels, expand_animations=False)
        img.set_shape((None, None, channels))
        return tf.image.resize(tf.cast(img, tf.float32), size)

    if src.files is not None:
        ds = slices((np.asarray(src.files), src.labels), shuffle_seed)
        return augmented(batched(ds.map(
            lambda f, y: (tf.ensure_shape(decode(tf.io.read_file(f)), (*image_size, channels)), y),
            num_parallel_calls=tf.data.AUTOTUNE)))
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
    return augmented(batched(ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE)))


@dataclass(frozen=True)
class ImageDataConfig:
    """Where the images come from and how they are split.

    ``source`` is ``digits``, a folder of class sub-folders, or TFRecord file(s) / glob.
    ``eval_source`` (same kinds) becomes the test split; otherwise ``test_split`` of the data is held out.
    ``image_size`` () means the images' own size (the most common one), unless model.input_shape is set.
    """

    source: str = "digits"
    format: str = "auto"
    eval_source: str | None = None
    image_size: tuple[int, ...] = ()
    channels: int = 0
    validation_split: float = 0.1
    test_split: float = 0.2
    on_corrupt: str = "skip"
    image_key: str = "image/encoded"
    label_key: str = "image/class/label"
    shuffle_buffer: int = 4096
    eval_sample_size: int = 512
    calibration_size: int = 256

    def __post_init__(self) -> None:
        check_choice("format", self.format, FORMATS)
        check_choice("on_corrupt", self.on_corrupt, ("skip", "error"))
        check_range("validation_split", self.validation_split, 0.0, 1.0, high_inclusive=False)
        check_range("test_split", self.test_split, 0.0, 1.0, high_inclusive=False)
        if self.validation_split + self.test_split >= 1.0:
            raise ConfigError("validation_split + test_split must be below 1 to leave training data")
        if self.image_size and (len(self.image_size) != 2 or min(self.image_size) < 1):
            raise ConfigError(f"image_size={list(self.image_size)}; expected [height, width]")
        check_choice("channels", self.channels, (0, 1, 3))


def detect_format(source: str, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    if source == "digits":
        return "digits"
    if os.path.isdir(source):
        has_records = any(f.endswith((".tfrecord", ".tfrecords")) or ".tfrecord-" in f for f in os.listdir(source))
        return "tfrecord" if has_records else "folder"
    if "*" in source or os.path.isfile(source):
        return "tfrecord"
    raise DataError(f"data path {source!r} does not exist; pass --data with a folder of class folders, "
                    "TFRecord file(s), or 'digits'")


def load_images(data_cfg: ImageDataConfig, seed: int) -> Any:
    """Load and split the images an ImageDataConfig describes; returns (ImageData, the detected format)."""
    fmt = detect_format(data_cfg.source, data_cfg.format)
    skipped: list[str] = []
    if fmt == "digits":
        src, names = load_digits_source()
        pixel_max, native, channels = 16.0, (8, 8), 1
    elif fmt == "folder":
        src, names, skipped, native = scan_image_folder(data_cfg.source, data_cfg.on_corrupt)
        pixel_max, channels = 255.0, 3
    else:
        files = tfrecord_files(data_cfg.source)
        src = scan_tfrecord_labels(files, data_cfg.label_key)
        names = [str(i) for i in range(int(src.labels.max()) + 1)]
        pixel_max, channels = 255.0, 3
        native = None if data_cfg.image_size else tfrecord_image_size(files, data_cfg.image_key)
        if src.labels.min() < 0:
            raise DataError(f"TFRecords at {data_cfg.source!r} hold negative labels; labels must be 0..K-1")
    test_frac = 0.0 if data_cfg.eval_source else data_cfg.test_split
    # The validation fraction is of the whole data set, so it is rescaled when no test split is cut.
    train, val, test = split_source(src, data_cfg.validation_split, test_frac, seed)
    if data_cfg.eval_source:
        efmt = detect_format(data_cfg.eval_source, "auto" if fmt != "digits" else "folder")
        if efmt == "folder":
            test, _, more, _ = scan_image_folder(data_cfg.eval_source, data_cfg.on_corrupt, class_names=names)
            skipped += more
        else:
            test = scan_tfrecord_labels(tfrecord_files(data_cfg.eval_source), data_cfg.label_key)
            if test.labels.max() >= len(names):
                raise DataError(f"eval data {data_cfg.eval_source!r} has label {int(test.labels.max())}, "
                                f"not seen in training (classes 0..{len(names) - 1})")
    return ImageData(train, val, test, names, pixel_max, native, channels, skipped), fmt


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation of training batches (all off by default), with the ranges of Keras' layers.

    ``rotation`` and ``zoom`` are fractions (of a full turn, of the size); ``crop_padding``
    pads by that many pixels and randomly crops back (the CIFAR recipe).
    """

    flip: str = "none"
    rotation: float = 0.0
    zoom: float = 0.0
    crop_padding: int = 0

    def __post_init__(self) -> None:
        check_choice("flip", self.flip, FLIPS)
        check_range("rotation", self.rotation, 0.0, 1.0)
        check_range("zoom", self.zoom, 0.0, 1.0, high_inclusive=False)
        check_range("crop_padding", self.crop_padding, 0)

    @property
    def active(self) -> bool:
        return self.flip != "none" or self.rotation > 0 or self.zoom > 0 or self.crop_padding > 0


def training_batches(src: ImageSource, size: tuple[int, ...], channels: int, data_cfg: ImageDataConfig,
                     augment: AugmentConfig, seed: int, batch_size: int) -> Any:
    """The endless training stream: a fresh seeded order every epoch, batched, augmented when configured."""
    return image_dataset(src, size, channels, data_cfg.image_key, data_cfg.label_key, shuffle_seed=seed,
                         shuffle_buffer=data_cfg.shuffle_buffer, batch_size=batch_size, augment=augment)


def training_arrays(data_cfg: ImageDataConfig, augment: AugmentConfig, seed: int, batch_size: int,
                    max_examples: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``max_examples`` training images and labels as arrays, in the order and with the
    augmentation of the recipe's first epoch: what fine-tuning outside the recipe (``zoo compress``)
    trains on."""
    images, _ = load_images(data_cfg, seed)
    size = tuple(data_cfg.image_size) or images.native_size or (224, 224)
    channels = data_cfg.channels or images.channels
    ds = training_batches(images.train, size, channels, data_cfg, augment, seed, batch_size)
    xs, ys, n = [], [], 0
    for x, y in ds.take(max(1, -(-len(images.train) // batch_size))):
        xs.append(x.numpy())
        ys.append(y.numpy())
        n += len(xs[-1])
        if n >= max_examples:
            break
    return np.concatenate(xs)[:max_examples], np.concatenate(ys)[:max_examples]
