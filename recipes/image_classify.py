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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from zoo import registry
from zoo.data.images import AugmentConfig, ImageDataConfig
from zoo.errors import ConfigError, DataError
from zoo.recipes.engine.cli import main_for
from zoo.recipes.engine.config import OptimizerConfig, TrainConfig
from zoo.recipes.engine.run import Datasets, Recipe
from zoo.rundir import SignatureTensor
from zoo.tasks.image_classification import ImageClassificationInfo


def _image_model_config(name: str) -> Any:
    if registry.get_entry(name).task != "image_classification":
        raise ConfigError(
            f"model '{name}' is not an image classifier; image_classify trains: "
            + ", ".join(registry.list_models("image_classification"))
        )
    return registry.default_config(name)


@dataclass(frozen=True)
class ImageClassifyConfig:
    """The whole recipe config: model, data, augmentation, training."""

    model: Any = field(default_factory=lambda: registry.default_config("small_cnn"),
                       metadata={"polymorphic": _image_model_config})
    data: ImageDataConfig = field(default_factory=ImageDataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        epochs=20, batch_size=32, optimizer=OptimizerConfig(name="adam", learning_rate=1e-3)))


def prepare_data(cfg: ImageClassifyConfig, explicit: frozenset) -> tuple[ImageClassifyConfig, Datasets]:
    import numpy as np
    import tensorflow as tf

    from zoo.data.images import image_dataset, load_images, training_batches

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

    def make(src):
        return image_dataset(src, size, channels, cfg.data.image_key, cfg.data.label_key,
                             shuffle_buffer=cfg.data.shuffle_buffer)

    batch = cfg.train.batch_size
    # The same stream zoo compress rebuilds from config.yaml.
    train_ds = training_batches(images.train, size, channels, cfg.data, cfg.augment, cfg.train.seed, batch)
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


def build_model(cfg: ImageClassifyConfig, data: Datasets) -> Any:
    return registry.build_from_config(cfg.model)


def compile_args(cfg: ImageClassifyConfig) -> dict[str, Any]:
    import keras

    return {"loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            "metrics": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]}


def run_info(cfg: ImageClassifyConfig, data: Datasets) -> ImageClassificationInfo:
    return ImageClassificationInfo(
        recipe=RECIPE.name, model=cfg.model.name, data=data.info,
        input=SignatureTensor("images", "float32", (None, *cfg.model.input_shape),
                        pixel_range=(0.0, 1.0 / cfg.model.rescale)),
        class_names=tuple(data.info["class_names"]))


FLAGS = {
    "--data": ("data.source", "'digits' (default), a folder of class folders, or TFRecord file(s)"),
    "--eval-data": ("data.eval_source", "held-out data of the same kind, used as the test split"),
    "--model": ("model.name", "shortcut for --set model.name=... (small_cnn, resnet18, ...)"),
}

RECIPE = Recipe(
    name="image_classify",
    description="Train a CNN baseline (small_cnn, resnet18/34/50/101/152) on digits, an image folder or TFRecords.",
    config_class=ImageClassifyConfig,
    prepare_data=prepare_data,
    build_model=build_model,
    compile_args=compile_args,
    run_info=run_info, flags=FLAGS)


def main(argv: Sequence[str] | None = None) -> int:
    return main_for(RECIPE, argv)


if __name__ == "__main__":
    raise SystemExit(main())
