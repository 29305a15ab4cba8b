"""Recipe: train a CNN baseline (small_cnn, resnet18..152) on images.

Data: the 1797 real 8x8 digits scikit-learn ships (default), a folder with one sub-folder
of images per class, or TFRecords of encoded images (``image/encoded``, ``image/class/label``).

    zoo train image_classify                                   # small_cnn on digits
    zoo train image_classify --data photos/ --set model.name=resnet18 --set data.image_size=[64,64]
    python -m zoo.recipes.image_classify --help
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from zoo import registry
from zoo.config import check_choice, check_range
from zoo.errors import ConfigError, DataError
from zoo.recipes.engine.optim import OptimizerConfig
from zoo.recipes.engine.run import Datasets, Recipe, TrainConfig, main_for

FORMATS = ("auto", "digits", "folder", "tfrecord")
FLIPS = ("none", "horizontal", "vertical", "horizontal_and_vertical")


def _image_model_config(name: str) -> Any:
    if registry.get_entry(name).task != "image_classification":
        raise ConfigError(
            f"model '{name}' is not an image classifier; image_classify trains: "
            + ", ".join(registry.list_models("image_classification"))
        )
    return registry.default_config(name)


@dataclass(frozen=True)
class DataConfig:
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


@dataclass(frozen=True)
class AugmentConfig:
    """Keras augmentation layers applied to training batches (all off by default).

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


@dataclass(frozen=True)
class ImageClassifyConfig:
    """The whole recipe config: model, data, augmentation, training."""

    model: Any = field(default_factory=lambda: registry.default_config("small_cnn"),
                       metadata={"polymorphic": _image_model_config})
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        epochs=20, batch_size=32, optimizer=OptimizerConfig(name="adam", learning_rate=1e-3)))


def _detect_format(source: str, fmt: str) -> str:
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


def load_images(data_cfg: DataConfig, seed: int) -> Any:
    """Load and split the images a DataConfig describes."""
    from zoo import data as zdata

    fmt = _detect_format(data_cfg.source, data_cfg.format)
    skipped: list[str] = []
    if fmt == "digits":
        src, names = zdata.load_digits_source()
        pixel_max, native, channels = 16.0, (8, 8), 1
    elif fmt == "folder":
        src, names, skipped, native = zdata.scan_image_folder(data_cfg.source, data_cfg.on_corrupt)
        pixel_max, channels = 255.0, 3
    else:
        files = zdata.tfrecord_files(data_cfg.source)
        src = zdata.scan_tfrecord_labels(files, data_cfg.label_key)
        names = [str(i) for i in range(int(src.labels.max()) + 1)]
        pixel_max, channels = 255.0, 3
        native = None if data_cfg.image_size else zdata.tfrecord_image_size(files, data_cfg.image_key)
        if src.labels.min() < 0:
            raise DataError(f"TFRecords at {data_cfg.source!r} hold negative labels; labels must be 0..K-1")
    test_frac = 0.0 if data_cfg.eval_source else data_cfg.test_split
    # The validation fraction is of the whole data set, so it is rescaled when no test split is cut.
    train, val, test = zdata.split_source(src, data_cfg.validation_split, test_frac, seed)
    if data_cfg.eval_source:
        efmt = _detect_format(data_cfg.eval_source, "auto" if fmt != "digits" else "folder")
        if efmt == "folder":
            test, _, more, _ = zdata.scan_image_folder(data_cfg.eval_source, data_cfg.on_corrupt, class_names=names)
            skipped += more
        else:
            test = zdata.scan_tfrecord_labels(zdata.tfrecord_files(data_cfg.eval_source), data_cfg.label_key)
            if test.labels.max() >= len(names):
                raise DataError(f"eval data {data_cfg.eval_source!r} has label {int(test.labels.max())}, "
                                f"not seen in training (classes 0..{len(names) - 1})")
    return zdata.ImageData(train, val, test, names, pixel_max, native, channels, skipped), fmt


def prepare_data(cfg: ImageClassifyConfig, explicit: frozenset) -> tuple[ImageClassifyConfig, Datasets]:
    import numpy as np
    import tensorflow as tf

    from zoo import data as zdata

    images, fmt = load_images(cfg.data, cfg.train.seed)
    model_cfg = cfg.model
    num_classes = len(images.class_names)
    if "model.num_classes" in explicit and model_cfg.num_classes != num_classes:
        raise DataError(
            f"model.num_classes={model_cfg.num_classes} but the data has {num_classes} classes "
            f"({', '.join(images.class_names[:10])}{'...' if num_classes > 10 else ''}); "
            "drop the override (it is inferred) or fix the data"
        )
    channels = cfg.data.channels or images.channels
    if cfg.data.image_size:
        size = tuple(cfg.data.image_size)
    elif "model.input_shape" in explicit:
        size = tuple(model_cfg.input_shape[:2])
    else:
        size = images.native_size or (224, 224)
    shape = (*size, channels)
    if "model.input_shape" in explicit and tuple(model_cfg.input_shape) != shape:
        raise DataError(f"model.input_shape={list(model_cfg.input_shape)} does not match the data's "
                        f"{list(shape)} (data.image_size x data.channels); make them agree")
    changes: dict[str, Any] = {"num_classes": num_classes, "input_shape": shape}
    if "model.rescale" not in explicit:
        changes["rescale"] = 1.0 / images.pixel_max
    model_cfg = dataclasses.replace(model_cfg, **changes)
    data_cfg = dataclasses.replace(cfg.data, image_size=size, channels=channels, format=fmt)
    cfg = dataclasses.replace(cfg, model=model_cfg, data=data_cfg)

    def make(src, shuffle_seed=None):
        return zdata.image_dataset(src, size, channels, cfg.data.image_key, cfg.data.label_key,
                                   shuffle_seed=shuffle_seed, shuffle_buffer=cfg.data.shuffle_buffer)

    batch = cfg.train.batch_size
    train_ds = make(images.train, shuffle_seed=cfg.train.seed).batch(batch)
    if cfg.augment.active:
        augment = build_augmenter(cfg.augment, shape)
        train_ds = train_ds.map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    train_ds = train_ds.prefetch(tf.data.AUTOTUNE)
    val_ds = make(images.validation).batch(batch).cache().prefetch(tf.data.AUTOTUNE) if images.validation else None
    test_ds = make(images.test).batch(batch).cache().prefetch(tf.data.AUTOTUNE) if images.test else None

    def take_arrays(src, n):
        xs, ys = [], []
        for x, y in make(src).take(n).batch(256):
            xs.append(x.numpy())
            ys.append(y.numpy())
        return np.concatenate(xs), np.concatenate(ys)

    eval_src = images.test or images.validation or images.train
    eval_sample = take_arrays(eval_src, cfg.data.eval_sample_size)
    calibration = take_arrays(images.train, cfg.data.calibration_size)[0]
    info = {"format": fmt, "class_names": images.class_names, "skipped_files": images.skipped,
            "counts": {"train": len(images.train), "validation": len(images.validation or []),
                       "test": len(images.test or [])}}
    steps = max(1, math.ceil(len(images.train) / batch))
    return cfg, Datasets(train_ds, steps, val_ds, test_ds, eval_sample, calibration, info)


def build_augmenter(aug: AugmentConfig, shape: tuple[int, ...]) -> Any:
    """A Keras Sequential of the configured augmentation layers (active only with training=True)."""
    import keras

    layers: list[Any] = []
    if aug.crop_padding:
        layers += [keras.layers.ZeroPadding2D(aug.crop_padding), keras.layers.RandomCrop(shape[0], shape[1])]
    if aug.flip != "none":
        layers.append(keras.layers.RandomFlip(aug.flip))
    if aug.rotation:
        layers.append(keras.layers.RandomRotation(aug.rotation, fill_mode="constant"))
    if aug.zoom:
        layers.append(keras.layers.RandomZoom(aug.zoom, fill_mode="constant"))
    return keras.Sequential(layers, name="augment")


def build_model(cfg: ImageClassifyConfig, data: Datasets) -> Any:
    return registry.build_from_config(cfg.model)


def compile_args(cfg: ImageClassifyConfig) -> dict[str, Any]:
    import keras

    return {"loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            "metrics": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]}


def run_info(cfg: ImageClassifyConfig, data: Datasets) -> dict[str, Any]:
    return {"recipe": RECIPE.name, "task": "image_classification", "model": cfg.model.name,
            "input": {"name": "images", "shape": [None, *cfg.model.input_shape], "dtype": "float32",
                      "pixel_range": [0.0, 1.0 / cfg.model.rescale]},
            "class_names": data.info["class_names"], "data": data.info}


RECIPE = Recipe(
    name="image_classify",
    description="Train a CNN baseline (small_cnn, resnet18/34/50/101/152) on digits, an image folder or TFRecords.",
    config_class=ImageClassifyConfig,
    prepare_data=prepare_data,
    build_model=build_model,
    compile_args=compile_args,
    run_info=run_info,
)


FLAGS = {
    "--data": ("data.source", "'digits' (default), a folder of class folders, or TFRecord file(s)"),
    "--eval-data": ("data.eval_source", "held-out data of the same kind, used as the test split"),
    "--model": ("model.name", "shortcut for --set model.name=... (small_cnn, resnet18, ...)"),
}


def main(argv: Sequence[str] | None = None) -> int:
    return main_for(RECIPE, argv, FLAGS)


if __name__ == "__main__":
    raise SystemExit(main())
