"""Fused element-wise blocks for training the Transformer encoder: bias + GELU, residual add + layer norm.

Why these exist: TensorFlow runs GELU (erfc or tanh and several multiplies), layer norm (moments,
rsqrt, scale, shift) and the gradients autodiff derives for them as one kernel per op, each a full
pass over a ``[tokens, width]`` tensor; in bfloat16 each of those ops also converts element by
element (Eigen has no vectorised bfloat16 erfc or exp). Compiling the whole step with XLA would
fuse them, but XLA's CPU backend also takes the matmuls away from oneDNN and its bfloat16 kernels
(a BERT-small bf16 step ran 1.45x slower with ``--xla``). So the matmuls stay with TensorFlow and
only these blocks are XLA-compiled, each as one forward and one hand-derived backward function:
one pass over memory each way, computed in float32 whatever the input dtype, rounded once.

Keras' own layers (``Dense`` with a GELU activation, ``Dropout``, ``LayerNormalization``) compute
the same functions; :func:`fusable_activation` and :func:`fusable_layer_norm` say when a layer can
take this path and :func:`worth_fusing` for which compute dtypes it pays. The encoder uses it in
training only: inference and exports keep Keras' ops, so a SavedModel or TFLite file never needs XLA.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import keras
import tensorflow as tf

_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_TANH_SCALE = math.sqrt(2.0 / math.pi)  # the tanh approximation: 0.5 x (1 + tanh(c (x + 0.044715 x^3)))
_CUBIC = 0.044715


@keras.saving.register_keras_serializable(package="zoo")
def gelu_approximate(x: Any) -> Any:
    """GELU, tanh approximation (Hendrycks & Gimpel); the activation of ``activation="gelu_approximate"``."""
    return keras.activations.gelu(x, approximate=True)


# Where the fused blocks pay, measured on BERT-small training steps (batch 8 x 128, 2-core EPYC with
# AVX-512 and bf16 units, alternating rounds): mixed_bfloat16 0.92x the unfused step time; float32
# 0.98-1.03x (Eigen's float32 element-wise ops are vectorised and oneDNN fuses some of them already, and
# XLA's CPU runtime blocks its calling thread, costing TensorFlow some inter-op overlap).
FUSED_DTYPES = ("bfloat16", "float16")


def worth_fusing(compute_dtype: str) -> bool:
    """Whether a layer computing in ``compute_dtype`` trains faster with the fused blocks."""
    return compute_dtype in FUSED_DTYPES


def fusable_activation(activation: Any) -> bool | None:
    """``approximate`` (False: exact erf GELU, True: tanh GELU) when ``activation`` is one this
    module fuses, else None."""
    if activation is keras.activations.gelu:
        return False
    if activation is gelu_approximate:
        return True
    from zoo.keras_compat import hub_gelu_approximate  # keras-hub's BERT builds its layers with its own tanh GELU

    hub = hub_gelu_approximate()
    return True if hub is not None and activation is hub else None


def fusable_layer_norm(layer: Any) -> bool:
    """Whether a ``keras.layers.LayerNormalization`` normalizes the last axis with a scale and a
    shift and no RMS scaling: the layer norm :func:`add_layer_norm` computes."""
    axis = list(layer.axis) if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    return axis == [-1] and layer.center and layer.scale and not layer.rms_scaling


# ----------------------------------------------------------------------------- bias + GELU


def _gelu_and_slope(z: Any, approximate: bool) -> tuple[Any, Any]:
    if approximate:
        t = tf.tanh(_TANH_SCALE * (z + _CUBIC * z * z * z))
        y = 0.5 * z * (1.0 + t)
        slope = 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * _TANH_SCALE * (1.0 + 3.0 * _CUBIC * z * z)
    else:
        cdf = 0.5 * tf.math.erfc(-z * _SQRT_HALF)
        y = z * cdf
        slope = cdf + z * tf.exp(-0.5 * z * z) * _INV_SQRT_2PI
    return y, slope


def _compiled(fn: Any) -> Any:
    return tf.function(fn, jit_compile=True, reduce_retracing=True, autograph=False)


@functools.cache
def _bias_gelu_kernels(approximate: bool) -> tuple[Any, Any]:
    """XLA forward and backward of ``gelu(h + bias)``: one pair per flavour, traced per shape and dtype."""

    def forward(h: Any, bias: Any) -> Any:
        y, _ = _gelu_and_slope(tf.cast(h, tf.float32) + tf.cast(bias, tf.float32), approximate)
        return tf.cast(y, h.dtype)

    def backward(h: Any, bias: Any, dy: Any) -> tuple[Any, Any]:
        _, slope = _gelu_and_slope(tf.cast(h, tf.float32) + tf.cast(bias, tf.float32), approximate)
        dz = tf.cast(dy, tf.float32) * slope
        return tf.cast(dz, h.dtype), tf.cast(tf.reduce_sum(dz, axis=0), bias.dtype)

    return _compiled(forward), _compiled(backward)


def bias_gelu(h: Any, bias: Any, approximate: bool = False) -> Any:
    """``gelu(h + bias)`` for a ``[rows, width]`` ``h``, forward and gradient each one XLA kernel."""
    forward, backward = _bias_gelu_kernels(bool(approximate))

    @tf.custom_gradient
    def fused(h: Any, bias: Any) -> Any:
        return forward(h, bias), lambda dy: backward(h, bias, dy)

    # Variables are read (and autocast) here, outside the custom gradient, which then sees tensors only.
    return fused(h, tf.convert_to_tensor(bias))


# ----------------------------------------------------------------------------- dropout + add + layer norm


def dropout_noise(layer: Any, like: Any) -> Any:
    """The uniform draws a ``keras.layers.Dropout`` compares with its rate to keep an element of
    ``like``, drawn in float32. Keras (``tf.nn.experimental.stateless_dropout``) draws them from
    the same stateless generator and seed in the input's dtype: in float32 the draws, so the masks,
    are identical (tested); under bfloat16 Keras' draws are 8-bit and keep an element with
    probability off by up to 1/256 (0.898 for rate 0.1), float32 draws keep it with 1 - rate."""
    seed = layer.seed_generator.next()  # what Keras' draw_seed does with a SeedGenerator
    if seed.dtype != tf.int32:  # and its _cast_seed: XLA's stateless ops take int32 seeds
        seed = tf.cast(tf.math.floormod(seed, tf.int32.max - 1), tf.int32)
    return tf.random.stateless_uniform(tf.shape(like), seed=seed, dtype=tf.float32)


def _normalized(s: Any, epsilon: float) -> tuple[Any, Any]:
    mean = tf.reduce_mean(s, axis=-1, keepdims=True)
    centred = s - mean
    rstd = tf.math.rsqrt(tf.reduce_mean(centred * centred, axis=-1, keepdims=True) + epsilon)
    return centred * rstd, rstd


@functools.cache
def _layer_norm_kernels(rate: float, epsilon: float) -> tuple[Any, Any]:
    """XLA forward and backward of ``LayerNormalization(dropout(x) + residual)`` for one dropout rate
    (0: no dropout, no noise argument) and epsilon."""

    def dropped(t: Any, noise: Any) -> Any:  # forward's dropout, and its gradient's mask
        return tf.where(noise >= rate, t * (1.0 / (1.0 - rate)), 0.0) if rate > 0.0 else t

    def dropped_sum(x: Any, residual: Any, noise: Any) -> Any:
        return dropped(tf.cast(x, tf.float32), noise) + tf.cast(residual, tf.float32)

    def forward(x: Any, residual: Any, gamma: Any, beta: Any, noise: Any) -> Any:
        xhat, _ = _normalized(dropped_sum(x, residual, noise), epsilon)
        return tf.cast(xhat * tf.cast(gamma, tf.float32) + tf.cast(beta, tf.float32), x.dtype)

    def backward(x: Any, residual: Any, gamma: Any, beta: Any, noise: Any, dy: Any) -> tuple[Any, ...]:
        xhat, rstd = _normalized(dropped_sum(x, residual, noise), epsilon)
        dy = tf.cast(dy, tf.float32)
        rows = list(range(dy.shape.rank - 1))
        d_gamma = tf.reduce_sum(dy * xhat, axis=rows)
        d_beta = tf.reduce_sum(dy, axis=rows)
        g = dy * tf.cast(gamma, tf.float32)
        ds = rstd * (g - tf.reduce_mean(g, axis=-1, keepdims=True)
                     - xhat * tf.reduce_mean(g * xhat, axis=-1, keepdims=True))
        return (tf.cast(dropped(ds, noise), x.dtype), tf.cast(ds, residual.dtype), tf.cast(d_gamma, gamma.dtype),
                tf.cast(d_beta, beta.dtype))

    return _compiled(forward), _compiled(backward)


def add_layer_norm(x: Any, residual: Any, gamma: Any, beta: Any, epsilon: float, noise: Any = None,
                   rate: float = 0.0) -> Any:
    """``LayerNormalization(dropout(x) + residual)`` over the last axis, forward and gradient each one
    XLA kernel; dropout keeps the elements whose ``noise`` (:func:`dropout_noise`) is ``>= rate``
    and scales them by ``1 / (1 - rate)``, as Keras' does; no ``noise``, no dropout."""
    if noise is None or rate <= 0.0:
        noise, rate = tf.zeros((), tf.float32), 0.0
    forward, backward = _layer_norm_kernels(float(rate), float(epsilon))

    @tf.custom_gradient
    def fused(x: Any, residual: Any, gamma: Any, beta: Any) -> Any:
        return forward(x, residual, gamma, beta, noise), lambda dy: backward(x, residual, gamma, beta, noise, dy)

    return fused(x, residual, tf.convert_to_tensor(gamma), tf.convert_to_tensor(beta))
