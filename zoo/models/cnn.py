"""CNN baselines: a small MNIST-style CNN, ResNet v1 / v1.5 (18 to 152) and Kim's TextCNN.

Every builder takes the Keras module to build with (``keras`` for Keras 3, ``tf_keras``
for tensorflow-model-optimization), so one definition serves training, export, QAT and
pruning. The builders only use layer APIs the two modules share.

Models output float32 logits: the classifier layer is pinned to float32 so that mixed
precision never produces half-precision logits (the Keras mixed-precision guide's advice).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from zoo.config import check_choice, check_range
from zoo.errors import ConfigError

# Blocks per stage of ResNet v1 (He et al. 2015, table 1).
RESNET_STAGES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


def _keras(module: Any) -> Any:
    if module is None:
        import keras

        return keras
    return module


def _check_common(cfg: Any) -> None:
    if cfg.num_classes < 2:
        raise ConfigError(f"num_classes={cfg.num_classes}; a classifier needs at least 2 classes")
    check_range("dropout", cfg.dropout, 0.0, 1.0, high_inclusive=False)
    check_range("l1", cfg.l1, 0.0)
    check_range("l2", cfg.l2, 0.0)


def _check_image_shape(shape: tuple[int, ...]) -> None:
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"input_shape={shape}; expected (height, width, channels), e.g. (28, 28, 1)")


def _regularizer(keras: Any, cfg: Any) -> Any:
    if cfg.l1 == 0.0 and cfg.l2 == 0.0:
        return None
    return keras.regularizers.L1L2(l1=cfg.l1, l2=cfg.l2)


@dataclass(frozen=True)
class SmallCNNConfig:
    """Two conv layers, max pooling and a dense layer: the MNIST baseline of the Keras examples."""

    name: str = "small_cnn"
    input_shape: tuple[int, ...] = (28, 28, 1)
    num_classes: int = 10
    filters: tuple[int, ...] = (32, 64)
    kernel_size: int = 3
    dense_units: int = 128
    dropout: float = 0.25
    rescale: float = 1.0 / 255.0
    l1: float = 0.0
    l2: float = 0.0

    def __post_init__(self) -> None:
        _check_image_shape(self.input_shape)
        _check_common(self)
        if not self.filters or min(self.filters) < 1:
            raise ConfigError(f"filters={self.filters}; expected one or more positive channel counts")
        check_range("kernel_size", self.kernel_size, 1)
        check_range("dense_units", self.dense_units, 1)

    def parameter_count(self) -> int:
        """Weights of ``build_small_cnn``'s model, computed from the shapes (no model is built)."""
        h, w, channels = self.input_shape
        total = 0
        for filters in self.filters:
            total += self.kernel_size**2 * channels * filters + filters
            channels = filters
        if min(h, w) >= 2:  # the 2x2 max pool ("valid": floor)
            h, w = h // 2, w // 2
        total += h * w * channels * self.dense_units + self.dense_units
        return total + self.dense_units * self.num_classes + self.num_classes

    def trainable_parameter_count(self) -> int:
        return self.parameter_count()


def build_small_cnn(cfg: SmallCNNConfig, keras: Any = None) -> Any:
    """Build the small CNN as a functional model taking raw pixel values."""
    keras = _keras(keras)
    layers = keras.layers
    reg = _regularizer(keras, cfg)
    inputs = keras.Input(shape=cfg.input_shape, name="images")
    x = layers.Rescaling(cfg.rescale, name="rescale")(inputs)
    for i, filters in enumerate(cfg.filters):
        x = layers.Conv2D(filters, cfg.kernel_size, padding="same", activation="relu",
                          kernel_regularizer=reg, name=f"conv{i + 1}")(x)
    x = layers.MaxPooling2D(2, name="pool")(x) if min(cfg.input_shape[:2]) >= 2 else x
    x = layers.Dropout(cfg.dropout, name="dropout1")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(cfg.dense_units, activation="relu", kernel_regularizer=reg, name="dense")(x)
    x = layers.Dropout(cfg.dropout, name="dropout2")(x)
    logits = layers.Dense(cfg.num_classes, kernel_regularizer=reg, dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name=cfg.name)


@dataclass(frozen=True)
class ResNetConfig:
    """ResNet v1 (basic blocks for 18/34) and v1.5 (bottleneck, stride on the 3x3) for 50+.

    ``stem="imagenet"`` is the 7x7/2 convolution and 3x3/2 max pool of the paper;
    ``stem="small"`` is a 3x3/1 convolution without pooling, for 8x8 to 32x32 inputs.
    ``width`` is the channel count of the first stage (64 in the paper).
    """

    name: str = "resnet50"
    depth: int = 50
    input_shape: tuple[int, ...] = (224, 224, 3)
    num_classes: int = 1000
    width: int = 64
    stem: str = "imagenet"
    dropout: float = 0.0
    zero_init_residual: bool = False
    rescale: float = 1.0 / 255.0
    l1: float = 0.0
    l2: float = 0.0

    def __post_init__(self) -> None:
        check_choice("depth", self.depth, sorted(RESNET_STAGES))
        check_choice("stem", self.stem, ("imagenet", "small"))
        _check_image_shape(self.input_shape)
        _check_common(self)
        check_range("width", self.width, 1)

    def _counts(self) -> tuple[int, int]:
        """(trainable, all) weights of ``build_resnet``'s model from the shapes: convolutions have
        no bias; BatchNormalization has 2 trainable and 2 moving statistics per channel."""
        expansion = 4 if self.depth >= 50 else 1
        convs = bn_channels = 0
        stem = 7 if self.stem == "imagenet" else 3
        convs += stem * stem * self.input_shape[-1] * self.width
        bn_channels += self.width
        channels = self.width
        for stage, blocks in enumerate(RESNET_STAGES[self.depth]):
            filters = self.width * 2**stage
            out = filters * expansion
            for b in range(blocks):
                stride = 2 if (b == 0 and stage > 0) else 1
                if stride != 1 or channels != out:
                    convs += channels * out
                    bn_channels += out
                if expansion == 4:
                    convs += channels * filters + 9 * filters * filters + filters * out
                    bn_channels += 2 * filters + out
                else:
                    convs += 9 * channels * filters + 9 * filters * filters
                    bn_channels += 2 * filters
                channels = out
        dense = channels * self.num_classes + self.num_classes
        trainable = convs + 2 * bn_channels + dense
        return trainable, trainable + 2 * bn_channels

    def parameter_count(self) -> int:
        """All weights (BatchNormalization's moving statistics included), without building the model."""
        return self._counts()[1]

    def trainable_parameter_count(self) -> int:
        """The published parameter count (25,557,032 for ResNet-50 on ImageNet)."""
        return self._counts()[0]


def build_resnet(cfg: ResNetConfig, keras: Any = None) -> Any:
    """Build a ResNet; padding mirrors the reference (symmetric), so imported weights line up."""
    keras = _keras(keras)
    layers = keras.layers
    reg = _regularizer(keras, cfg)
    bottleneck = cfg.depth >= 50
    expansion = 4 if bottleneck else 1

    def conv(x, filters, kernel, stride, name):
        # Explicit symmetric padding: Keras "same" pads stride-2 convolutions asymmetrically.
        pad = kernel // 2
        if stride > 1 and pad:
            x = layers.ZeroPadding2D(pad, name=name + "_pad")(x)
            padding = "valid"
        else:
            padding = "same"
        return layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=False,
                             kernel_regularizer=reg, name=name)(x)

    def bn(x, name, zero=False):
        return layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name,
                                         gamma_initializer="zeros" if zero else "ones")(x)

    def block(x, filters, stride, name):
        out_channels = filters * expansion
        shortcut = x
        if stride != 1 or x.shape[-1] != out_channels:
            shortcut = layers.Conv2D(out_channels, 1, strides=stride, use_bias=False,
                                     kernel_regularizer=reg, name=name + "_down_conv")(x)
            shortcut = bn(shortcut, name + "_down_bn")
        if bottleneck:
            y = conv(x, filters, 1, 1, name + "_conv1")
            y = layers.ReLU(name=name + "_relu1")(bn(y, name + "_bn1"))
            y = conv(y, filters, 3, stride, name + "_conv2")  # v1.5: stride on the 3x3
            y = layers.ReLU(name=name + "_relu2")(bn(y, name + "_bn2"))
            y = conv(y, out_channels, 1, 1, name + "_conv3")
            y = bn(y, name + "_bn3", zero=cfg.zero_init_residual)
        else:
            y = conv(x, filters, 3, stride, name + "_conv1")
            y = layers.ReLU(name=name + "_relu1")(bn(y, name + "_bn1"))
            y = conv(y, filters, 3, 1, name + "_conv2")
            y = bn(y, name + "_bn2", zero=cfg.zero_init_residual)
        y = layers.Add(name=name + "_add")([shortcut, y])
        return layers.ReLU(name=name + "_out")(y)

    inputs = keras.Input(shape=cfg.input_shape, name="images")
    x = layers.Rescaling(cfg.rescale, name="rescale")(inputs)
    if cfg.stem == "imagenet":
        x = conv(x, cfg.width, 7, 2, "stem_conv")
        x = layers.ReLU(name="stem_relu")(bn(x, "stem_bn"))
        x = layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
        x = layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)
    else:
        x = conv(x, cfg.width, 3, 1, "stem_conv")
        x = layers.ReLU(name="stem_relu")(bn(x, "stem_bn"))
    for stage, blocks in enumerate(RESNET_STAGES[cfg.depth]):
        filters = cfg.width * 2**stage
        for b in range(blocks):
            stride = 2 if (b == 0 and stage > 0) else 1
            x = block(x, filters, stride, f"stage{stage + 1}_block{b + 1}")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if cfg.dropout:
        x = layers.Dropout(cfg.dropout, name="dropout")(x)
    logits = layers.Dense(cfg.num_classes, kernel_regularizer=reg, dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name=cfg.name)


@dataclass(frozen=True)
class TextCNNConfig:
    """Kim (2014): embeddings, parallel 1-D convolutions of several widths, max-over-time pooling."""

    name: str = "text_cnn"
    sequence_length: int = 128
    vocab_size: int = 20000
    embedding_dim: int = 128
    filter_sizes: tuple[int, ...] = (3, 4, 5)
    num_filters: int = 100
    num_classes: int = 2
    dropout: float = 0.5
    l1: float = 0.0
    l2: float = 0.0

    def __post_init__(self) -> None:
        _check_common(self)
        check_range("sequence_length", self.sequence_length, 1)
        check_range("vocab_size", self.vocab_size, 2)
        check_range("embedding_dim", self.embedding_dim, 1)
        check_range("num_filters", self.num_filters, 1)
        if not self.filter_sizes or min(self.filter_sizes) < 1:
            raise ConfigError(f"filter_sizes={self.filter_sizes}; expected positive widths such as (3, 4, 5)")
        if max(self.filter_sizes) > self.sequence_length:
            raise ConfigError(
                f"filter_sizes={self.filter_sizes} has a width larger than sequence_length={self.sequence_length}"
            )

    def parameter_count(self) -> int:
        """Weights of ``build_text_cnn``'s model, computed from the shapes (no model is built)."""
        convs = sum(width * self.embedding_dim * self.num_filters + self.num_filters for width in self.filter_sizes)
        features = self.num_filters * len(self.filter_sizes)
        return (self.vocab_size * self.embedding_dim + convs + features * self.num_classes + self.num_classes)

    def trainable_parameter_count(self) -> int:
        return self.parameter_count()


def build_text_cnn(cfg: TextCNNConfig, keras: Any = None) -> Any:
    """Build TextCNN on int32 token ids of shape (batch, sequence_length)."""
    keras = _keras(keras)
    layers = keras.layers
    reg = _regularizer(keras, cfg)
    inputs = keras.Input(shape=(cfg.sequence_length,), dtype="int32", name="token_ids")
    x = layers.Embedding(cfg.vocab_size, cfg.embedding_dim, name="embedding")(inputs)
    pooled = []
    for width in cfg.filter_sizes:
        y = layers.Conv1D(cfg.num_filters, width, activation="relu", kernel_regularizer=reg,
                          name=f"conv_w{width}")(x)
        pooled.append(layers.GlobalMaxPooling1D(name=f"max_over_time_w{width}")(y))
    x = pooled[0] if len(pooled) == 1 else layers.Concatenate(name="concat")(pooled)
    x = layers.Dropout(cfg.dropout, name="dropout")(x)
    logits = layers.Dense(cfg.num_classes, kernel_regularizer=reg, dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name=cfg.name)


def resnet_config(depth: int) -> ResNetConfig:
    """Default config of ResNet-``depth``."""
    return dataclasses.replace(ResNetConfig(), name=f"resnet{depth}", depth=depth)


__all__ = [
    "SmallCNNConfig", "ResNetConfig", "TextCNNConfig", "build_small_cnn", "build_resnet",
    "build_text_cnn", "resnet_config", "RESNET_STAGES",
]
