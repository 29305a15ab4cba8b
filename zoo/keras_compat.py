"""Every use of another package's private internals, fenced in one module.

No other module of zoo, zoo.recipes or zoo.export imports a ``*.src.*`` or TensorFlow-internal
module or reads another package's ``_private`` attribute (tests/layout checks it with ``ast``); what
they need is here, behind named accessors:

* :func:`encoder_sublayers` and :func:`attention_parts`: the sublayers of keras-hub's
  ``TransformerEncoder`` and of Keras' ``MultiHeadAttention``, which ``FastTransformerEncoder``
  reuses (same variables, seed generators and call order) to compute the first tokens only;
  :func:`merge_padding_and_attention_mask` and :func:`hub_gelu_approximate` from keras-hub's
  ``src`` tree;
* :func:`tflite_schema`, :func:`read_tflite_model`, :func:`write_tflite_model`: TensorFlow Lite's
  flatbuffer schema and object API (``tensorflow.lite.python`` / ``tensorflow.lite.tools``), for the
  weight-only rewrites of ``zoo.export.tflite_weights``.

Three work-arounds reach past the public APIs, each because the public path is broken or slow on
the pinned stack:

* :func:`multi_worker_fit`: Keras 3.15 ``fit`` fails under MultiWorkerMirroredStrategy
  (keras-team/keras#20585) at two points, patched for the duration of one run and undone after;
  :func:`per_replica_build`, one of the two, is needed under MirroredStrategy too (a validation batch
  split unevenly between replicas);
* :func:`int16x8_friendly_graph`: three Keras op forms swapped, while a graph is traced, for forms
  TFLite's 16x8 quantizer can handle (same values in float);
* :func:`fused_adam_update`: Adam's per-variable update as one ``ResourceApplyAdam`` kernel, which
  reads the optimizer's slot variables.

They were written against the versions in :data:`WRITTEN_FOR`; importing this module on any other
Keras, TensorFlow, keras-hub or tensorflow-text raises :class:`KerasCompatError` naming what to do
instead, rather than reaching into internals that may have changed shape.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator
from typing import Any, NamedTuple

from zoo.errors import ZooError

# Package -> the release series (major.minor) these work-arounds were written and tested against.
WRITTEN_FOR = {"keras": "3.15", "tensorflow": "2.21", "keras-hub": "0.32", "tensorflow-text": "2.21"}


class KerasCompatError(ZooError, ImportError):
    """The installed Keras / TensorFlow / keras-hub / tensorflow-text is not the one the private-API
    accessors and work-arounds were written for."""


def check_versions(found: dict[str, str]) -> None:
    """Raise KerasCompatError unless every package in ``found`` is of the series in WRITTEN_FOR."""
    wrong = {name: version for name, version in found.items()
             if ".".join(version.split(".")[:2]) != WRITTEN_FOR[name]}
    if wrong:
        have = ", ".join(f"{n} {v}" for n, v in sorted(wrong.items()))
        want = ", ".join(f"{n} {v}.x" for n, v in sorted(WRITTEN_FOR.items()))
        raise KerasCompatError(
            f"zoo.keras_compat reaches into private internals of {want}, but this environment has {have}. "
            "What needs it is unavailable here: BERT models (their encoder layers), the fused Adam update "
            "(set train.optimizer.fused=false), multi-worker fit, the tflite_int16x8 and tflite_int8_weights "
            "exports; install the pinned stack from setup.py (pip install -e .)")


def _installed_versions() -> dict[str, str]:
    from importlib import metadata

    import keras
    import tensorflow as tf

    found = {"keras": keras.__version__, "tensorflow": tf.__version__}
    for name in ("keras-hub", "tensorflow-text"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "(not installed)"
    return found


check_versions(_installed_versions())


# ----------------------------------------------------------------------------- multi-worker fit


def _local_first(strategy: Any, value: Any) -> Any:
    import tensorflow as tf

    if isinstance(value, tf.distribute.DistributedValues):
        return strategy.experimental_local_results(value)[0]
    return value


def _maybe_symbolic_build(self: Any, iterator: Any = None, data_batch: Any = None) -> None:
    """Keras builds the model from one batch it gets with ``strategy.reduce("MEAN", batch)``, which
    the collective strategy rejects for a per-replica batch; the build only needs shapes, so the first
    local replica's batch serves."""
    import tensorflow as tf

    if self._distribute_strategy is None:
        return
    if iterator is not None:
        for _, _, it in iterator:
            data_batch = tf.nest.map_structure(lambda v: _local_first(self.distribute_strategy, v), next(it))
            break
    with self.distribute_strategy.scope():
        self._symbolic_build(data_batch=data_batch)


@contextlib.contextmanager
def per_replica_build(model: Any) -> Iterator[None]:
    """Inside the block, ``fit``/``evaluate`` build ``model`` from the first local replica's batch instead of
    the mean over replicas. Keras 3.15 reduces the first batch with ``strategy.reduce("MEAN", batch)`` at
    every ``evaluate`` (validation included) under any strategy, which fails when the replicas' parts of
    that batch differ in size: under MirroredStrategy, a validation set smaller than the global batch and
    not divisible by the replica count (15 examples on 2 replicas: 8 and 7 rows, ``AddN ... must have the
    same size and shape``)."""
    model._maybe_symbolic_build = types.MethodType(_maybe_symbolic_build, model)
    try:
        yield
    finally:
        del model._maybe_symbolic_build


@contextlib.contextmanager
def multi_worker_fit(model: Any) -> Iterator[None]:
    """Make ``model.fit`` / ``evaluate`` work under MultiWorkerMirroredStrategy inside the block.

    After each step Keras reduces the scalar metric results with ``strategy.reduce("MEAN", v, axis=0)``;
    a scalar has no axis 0, so scalars are reduced with ``axis=None`` (the mean over replicas). The
    module-level patch is undone when the block ends; the model's own build hook is removed too.
    """
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer

    original = trainer.reduce_per_replica

    def reduce_per_replica(values: Any, strategy: Any, reduction: str) -> Any:
        if not trainer._collective_all_reduce_multi_worker(strategy) or reduction not in ("auto", "mean"):
            return original(values, strategy, reduction)

        def reduce(v: Any) -> Any:
            rank = v.values[0].shape.rank if isinstance(v, tf.distribute.DistributedValues) else v.shape.rank
            return strategy.reduce("MEAN", v, axis=0 if rank else None)

        return tf.nest.map_structure(reduce, values)

    reduce_per_replica.zoo_patch = True
    trainer.reduce_per_replica = reduce_per_replica
    try:
        with per_replica_build(model):
            yield
    finally:
        trainer.reduce_per_replica = original


def multi_worker_patch_active() -> bool:
    """True while :func:`multi_worker_fit` has Keras' trainer patched."""
    from keras.src.backend.tensorflow import trainer

    return getattr(trainer.reduce_per_replica, "zoo_patch", False)


# ----------------------------------------------------------------------------- int16x8 tracing


@contextlib.contextmanager
def int16x8_friendly_graph() -> Iterator[None]:
    """While tracing the source graph of an int16x8 TFLite file, three Keras ops take forms TFLite's
    16x8 quantizer handles (each computes the same values in float):

    * ``take`` (embedding lookups) is a plain gather: Keras first wraps negative ids with int32
      LESS/ADD/SELECT, which the quantizer wants calibration ranges for and never gets;
    * LayerNorm's variance is ``mean(d * d)``: the quantizer makes SQUARED_DIFFERENCE int16, which
      LiteRT has no kernel for;
    * the additive attention mask is -30 instead of -1e9 (exp(-30) ~ 1e-13, nothing in float): -1e9
      stretches the int16 range of the attention scores until every real score rounds to zero
      (labels then agree only half the time on a fine-tuned MiniLM; 100% with -30).
    """
    import keras.src.backend.tensorflow.nn as knn
    import keras.src.backend.tensorflow.numpy as knp
    import keras.src.layers.activations.softmax as ksm
    import tensorflow as tf

    saved = (knp.take, knn._compute_moments, ksm._large_negative_number)
    real_take = knp.take

    def take(x: Any, indices: Any, axis: Any = None) -> Any:
        if axis is None or isinstance(indices, tf.SparseTensor):
            return real_take(x, indices, axis)
        return tf.gather(tf.convert_to_tensor(x), indices, axis=axis)

    def moments(x: Any, axes: Any, keepdims: bool) -> tuple[Any, Any]:
        mean = tf.reduce_mean(x, axis=axes, keepdims=True)
        centered = x - mean
        var = tf.reduce_mean(centered * centered, axis=axes, keepdims=True)
        if not keepdims:
            mean, var = tf.squeeze(mean, axes), tf.squeeze(var, axes)
        return mean, var

    knp.take, knn._compute_moments, ksm._large_negative_number = take, moments, lambda dtype: -30.0
    try:
        yield
    finally:
        knp.take, knn._compute_moments, ksm._large_negative_number = saved


# ----------------------------------------------------------------------------- fused Adam

_FUSABLE_DTYPES = ("float16", "bfloat16", "float32", "float64")


def fused_adam_update(optimizer: Any, gradient: Any, variable: Any, learning_rate: Any) -> bool:
    """Adam's update of ``variable`` as one ``ResourceApplyAdam``; False where it cannot be used.

    The kernel computes exactly Keras' Adam: m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2);
    var -= lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps). A sparse gradient (embedding
    lookups) is made dense first, as Keras' update also touches every row of m and v. Reads the
    optimizer's private slot lists (``_momentums``, ``_velocities``, ``_get_variable_index``).
    """
    import tensorflow as tf

    dtype = tf.as_dtype(variable.dtype)
    if optimizer.amsgrad or dtype.name not in _FUSABLE_DTYPES or not hasattr(variable, "handle"):
        return False
    if isinstance(gradient, tf.IndexedSlices):
        gradient = tf.convert_to_tensor(gradient)
    index = optimizer._get_variable_index(variable)
    m, v = optimizer._momentums[index], optimizer._velocities[index]
    step = tf.cast(optimizer.iterations + 1, dtype)
    beta_1, beta_2 = tf.cast(optimizer.beta_1, dtype), tf.cast(optimizer.beta_2, dtype)
    tf.raw_ops.ResourceApplyAdam(
        var=variable.handle, m=m.value.handle, v=v.value.handle,
        beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
        lr=tf.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2,
        epsilon=tf.cast(optimizer.epsilon, dtype), grad=tf.cast(gradient, dtype), use_locking=False)
    return True


# ----------------------------------------------------------------------------- keras-hub / Keras layer internals


class EncoderSublayers(NamedTuple):
    """The sublayers of keras-hub's ``TransformerEncoder``, in its call order."""

    attention: Any  # keras.layers.MultiHeadAttention
    attention_dropout: Any
    attention_norm: Any
    intermediate: Any  # the feed-forward's first Dense (with the activation)
    output: Any
    feedforward_dropout: Any
    feedforward_norm: Any


def encoder_sublayers(layer: Any) -> EncoderSublayers:
    """The built sublayers of a keras-hub ``TransformerEncoder`` (private attributes of keras-hub 0.32)."""
    return EncoderSublayers(layer._self_attention_layer, layer._self_attention_dropout,
                            layer._self_attention_layer_norm, layer._feedforward_intermediate_dense,
                            layer._feedforward_output_dense, layer._feedforward_dropout, layer._feedforward_layer_norm)


class AttentionParts(NamedTuple):
    """What Keras' ``MultiHeadAttention`` computes with: its four projections, softmax, dropout and
    the query scale."""

    query: Any  # EinsumDense
    key: Any
    value: Any
    output: Any
    softmax: Any  # keras.layers.Softmax (takes the mask)
    dropout: Any
    inverse_sqrt_key_dim: float


def attention_parts(mha: Any) -> AttentionParts:
    """The built parts of a ``keras.layers.MultiHeadAttention`` (private attributes of Keras 3.15)."""
    return AttentionParts(mha._query_dense, mha._key_dense, mha._value_dense, mha._output_dense, mha._softmax,
                          mha._dropout_layer, mha._inverse_sqrt_key_dim)


def merge_padding_and_attention_mask(inputs: Any, padding_mask: Any, attention_mask: Any) -> Any:
    """keras-hub's own merge of a padding mask and an attention mask (what its encoder layers use)."""
    from keras_hub.src.layers.modeling.transformer_layer_utils import merge_padding_and_attention_mask as merge

    return merge(inputs, padding_mask, attention_mask)


def hub_gelu_approximate() -> Any:
    """keras-hub's tanh GELU, which its BERT builds its feed-forward layers with (None if it moved)."""
    try:
        from keras_hub.src.utils.keras_utils import gelu_approximate
    except ImportError:
        return None
    return gelu_approximate


# ----------------------------------------------------------------------------- TFLite flatbuffers


def tflite_schema() -> Any:
    """TensorFlow Lite's generated flatbuffer schema module (object API classes, builtin op codes)."""
    from tensorflow.lite.python import schema_py_generated

    return schema_py_generated


def read_tflite_model(content: bytes) -> Any:
    """A ``.tflite`` file's bytes as a mutable ``ModelT`` object."""
    from tensorflow.lite.tools import flatbuffer_utils

    return flatbuffer_utils.read_model_from_bytearray(bytearray(content))


def write_tflite_model(model: Any) -> bytes:
    """A ``ModelT`` object back to ``.tflite`` bytes."""
    from tensorflow.lite.tools import flatbuffer_utils

    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
