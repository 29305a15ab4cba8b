"""The fused training kernels compute what Keras' GELU, Dropout and LayerNormalization compute, with
the same gradients; the encoder takes them under half precision and still matches keras-hub."""

from __future__ import annotations

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from zoo.models import fused
from zoo.models.encoder import FastTransformerEncoder
from zoo.recipes.engine.precision import precision_scope


def _value_and_grads(fn, *inputs):
    weights = tf.cos(tf.reshape(tf.range(tf.size(inputs[0]), dtype=tf.float32), inputs[0].shape))
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        out = fn(*inputs)
        loss = tf.reduce_sum(tf.cast(out, tf.float32) * weights)
    return out, tape.gradient(loss, inputs)


@pytest.mark.parametrize("approximate", [False, True])
def test_bias_gelu_matches_keras_gelu_forward_and_backward(approximate):
    h = tf.random.stateless_normal((24, 40), seed=(1, 1)) * 3.0
    bias = tf.random.stateless_normal((40,), seed=(1, 2))
    want, want_grads = _value_and_grads(lambda a, b: keras.activations.gelu(a + b, approximate=approximate), h, bias)
    got, got_grads = _value_and_grads(lambda a, b: fused.bias_gelu(a, b, approximate), h, bias)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)
    for a, b in zip(got_grads, want_grads):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-4, rtol=1e-5)
    # and the other flavour really differs (so the flag reaches the kernel)
    other = fused.bias_gelu(h, bias, not approximate)
    assert float(tf.reduce_max(tf.abs(other - got))) > 1e-4


def test_bias_gelu_in_bfloat16_rounds_once():
    h = tf.random.stateless_normal((64, 128), seed=(2, 1)) * 3.0
    bias = tf.zeros((128,))
    exact = keras.activations.gelu(h)
    got = fused.bias_gelu(tf.cast(h, "bfloat16"), tf.cast(bias, "bfloat16"))
    assert got.dtype == tf.bfloat16
    # the only error left is bfloat16's own rounding of the input and of the result (8-bit mantissa)
    input_rounded = keras.activations.gelu(tf.cast(tf.cast(h, "bfloat16"), tf.float32))
    np.testing.assert_allclose(tf.cast(got, tf.float32).numpy(), input_rounded.numpy(), rtol=2**-8, atol=1e-6)
    assert float(tf.reduce_max(tf.abs(tf.cast(got, tf.float32) - exact))) < 0.05


@pytest.mark.parametrize("rate", [0.0, 0.3])
def test_dropout_add_layer_norm_matches_keras_layers(rate):
    x = tf.random.stateless_normal((3, 7, 16), seed=(3, 1))
    residual = tf.random.stateless_normal((3, 7, 16), seed=(3, 2))
    norm = keras.layers.LayerNormalization(epsilon=1e-12)
    norm.build((None, 16))
    norm.gamma.assign(tf.random.stateless_normal((16,), seed=(3, 3)))
    norm.beta.assign(tf.random.stateless_normal((16,), seed=(3, 4)))
    drops = [keras.layers.Dropout(rate, seed=7), keras.layers.Dropout(rate, seed=7)]
    want, want_grads = _value_and_grads(lambda a, r: norm(drops[0](a, training=True) + r), x, residual)
    noise = fused.dropout_noise(drops[1], x) if rate else None
    got, got_grads = _value_and_grads(
        lambda a, r: fused.add_layer_norm(a, r, norm.gamma, norm.beta, norm.epsilon, noise=noise, rate=rate),
        x, residual)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)
    for a, b in zip(got_grads, want_grads):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-4)
    if rate:  # the same elements were dropped: their gradient is zero on both sides, and only theirs
        dropped = got_grads[0].numpy() == 0
        assert 0.15 < dropped.mean() < 0.45
        np.testing.assert_array_equal(dropped, want_grads[0].numpy() == 0)


def test_fusable_activations_and_layer_norms():
    from keras_hub.src.utils.keras_utils import gelu_approximate as hub_gelu_approximate

    assert fused.fusable_activation(keras.activations.gelu) is False
    assert fused.fusable_activation(fused.gelu_approximate) is True
    assert fused.fusable_activation(hub_gelu_approximate) is True
    assert fused.fusable_activation(keras.activations.relu) is None
    assert fused.fusable_layer_norm(keras.layers.LayerNormalization())
    assert not fused.fusable_layer_norm(keras.layers.LayerNormalization(rms_scaling=True))
    assert not fused.fusable_layer_norm(keras.layers.LayerNormalization(axis=1))
    assert fused.worth_fusing("bfloat16") and fused.worth_fusing("float16") and not fused.worth_fusing("float32")


def _encoders(activation=keras.activations.gelu):
    x = tf.random.stateless_normal((3, 12, 32), seed=(4, 1))
    mask = np.ones((3, 12), "int32")
    mask[1, 7:] = 0
    layers = []
    for cls in (keras_hub.layers.TransformerEncoder, FastTransformerEncoder):
        keras.utils.set_random_seed(4)  # the same seeds for both layers' dropout generators
        layer = cls(num_heads=4, intermediate_dim=64, dropout=0.1, activation=activation,
                    layer_norm_epsilon=1e-12, name="encoder")
        layer(x, padding_mask=mask)
        layers.append(layer)
    layers[1].set_weights(layers[0].get_weights())
    return layers, x, tf.constant(mask)


class _Spy:
    def __init__(self, monkeypatch):
        self.calls = 0
        real = fused.bias_gelu

        def counting(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(fused, "bias_gelu", counting)


@pytest.mark.parametrize("activation", [keras.activations.gelu, fused.gelu_approximate])
def test_fused_encoder_matches_keras_hub_in_training(monkeypatch, activation):
    """Forced on in float32, the fused path gives keras-hub's outputs and gradients, dropout masks included."""
    monkeypatch.setattr(fused, "worth_fusing", lambda dtype: True)
    spy = _Spy(monkeypatch)
    (reference, fast), x, mask = _encoders(activation)
    results = []
    for layer in (reference, fast):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = layer(x, padding_mask=mask, training=True)
            loss = tf.reduce_sum(out * tf.cos(tf.range(32, dtype=tf.float32)))
        results.append((out, tape.gradient(loss, [x, *layer.trainable_variables])))
    assert spy.calls == 1
    (out_ref, grads_ref), (out_fast, grads_fast) = results
    assert float(tf.reduce_max(tf.abs(out_ref - reference(x, padding_mask=mask)))) > 1e-2  # dropout ran
    np.testing.assert_allclose(out_fast.numpy(), out_ref.numpy(), atol=2e-5)
    for a, b in zip(grads_fast, grads_ref):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=2e-5 * max(1.0, float(tf.reduce_max(tf.abs(b)))))


@pytest.mark.slow
def test_bfloat16_bert_trains_through_the_fused_kernels(monkeypatch):
    """Under mixed_bfloat16 the classifier's training step takes the fused path by default; its gradient
    is no further from the float32 model's (same weights) than Keras' unfused bfloat16 gradient is, and
    a few steps lower the loss."""
    import zoo
    from zoo.models.bert import BertClassifier, build_bert

    rng = np.random.default_rng(0)
    x = {"token_ids": rng.integers(5, 1000, (8, 16)).astype("int32"), "segment_ids": np.zeros((8, 16), "int32"),
         "padding_mask": np.ones((8, 16), "int32")}
    y = rng.integers(0, 2, 8).astype("int32")
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    models = {}
    for precision in ("float32", "mixed_bfloat16"):
        with precision_scope(precision):
            keras.utils.set_random_seed(1)
            models[precision] = BertClassifier(build_bert(zoo.make_config("bert_tiny", dropout=0.0)), num_classes=2)
            models[precision](x)
    model = models["mixed_bfloat16"]
    model.set_weights(models["float32"].get_weights())

    def gradient(m):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, m(x, training=True))
        grads = tape.gradient(loss, m.trainable_variables)
        return tf.concat([tf.reshape(tf.cast(tf.convert_to_tensor(g), tf.float32), [-1]) for g in grads], 0)

    reference = gradient(models["float32"])
    spy = _Spy(monkeypatch)
    with_fused = gradient(model)
    fused_calls = spy.calls
    assert fused_calls >= 2  # both encoder layers (the second is [CLS]-only) took the fused path
    monkeypatch.setattr(fused, "worth_fusing", lambda dtype: False)
    plain = gradient(model)
    assert spy.calls == fused_calls
    error = {name: float(tf.norm(g - reference) / tf.norm(reference)) for name, g in
             (("fused", with_fused), ("plain", plain))}
    assert error["fused"] <= 1.1 * error["plain"], error  # bfloat16 rounding, not a wrong gradient
    assert error["fused"] < 0.5, error
    monkeypatch.undo()
    with precision_scope("mixed_bfloat16"):
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss_fn)
        first = model.evaluate(x, y, verbose=0)
        model.fit(x, y, epochs=15, batch_size=8, verbose=0)
        assert model.evaluate(x, y, verbose=0) < 0.5 * first


@pytest.mark.slow
@pytest.mark.parametrize("precision,xla", [("mixed_float16", False), ("mixed_bfloat16", True)])
def test_fused_kernels_train_under_loss_scaling_and_inside_an_xla_step(precision, xla):
    """float16 (the optimizer scales the loss, so the kernels see scaled gradients) and a whole step
    compiled by XLA (the kernels' own XLA functions nest inside it) both fit a tiny BERT."""
    import zoo
    from zoo.models.bert import BertClassifier, build_bert

    rng = np.random.default_rng(1)
    x = {"token_ids": rng.integers(5, 1000, (16, 12)).astype("int32"), "segment_ids": np.zeros((16, 12), "int32"),
         "padding_mask": np.ones((16, 12), "int32")}
    y = rng.integers(0, 2, 16).astype("int32")
    with precision_scope(precision):
        keras.utils.set_random_seed(2)
        model = BertClassifier(build_bert(zoo.make_config("bert_tiny")), num_classes=2)
        optimizer = keras.optimizers.Adam(1e-3)
        if precision == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        model.compile(optimizer=optimizer, jit_compile=xla,
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        first = model.evaluate(x, y, verbose=0)
        history = model.fit(x, y, epochs=20, batch_size=8, verbose=0)
    assert all(np.isfinite(history.history["loss"]))
    assert model.evaluate(x, y, verbose=0) < 0.5 * first
