"""FastTransformerEncoder computes what keras-hub's TransformerEncoder computes (forward, backward,
training-mode dropout), and its [CLS]-only path equals the full layer's first row."""

from __future__ import annotations

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from zoo.models.encoder import FastTransformerEncoder

B, L, H, HEADS, FF = 3, 12, 32, 4, 64


def _pair(dropout=0.1):
    x = tf.random.stateless_normal((B, L, H), seed=(1, 2))
    mask = np.ones((B, L), "int32")
    mask[1, 7:] = 0
    mask[2, 3:] = 0
    layers = []
    for cls in (keras_hub.layers.TransformerEncoder, FastTransformerEncoder):
        keras.utils.set_random_seed(4)  # the same seeds for both layers' dropout generators
        layer = cls(num_heads=HEADS, intermediate_dim=FF, dropout=dropout, activation=keras.activations.gelu,
                    layer_norm_epsilon=1e-12, name="encoder")
        layer(x, padding_mask=mask)
        layers.append(layer)
    layers[1].set_weights(layers[0].get_weights())
    return layers, x, tf.constant(mask)


def _forward_backward(layer, x, mask, training):
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = layer(x, padding_mask=mask, training=training)
        loss = tf.reduce_sum(out * tf.cos(tf.range(H, dtype=tf.float32)))
    grads = tape.gradient(loss, [x, *layer.trainable_variables])
    return out, grads


@pytest.mark.parametrize("training", [False, True])
def test_fast_encoder_matches_keras_hub_forward_and_backward(training):
    (reference, fast), x, mask = _pair()
    out_ref, grads_ref = _forward_backward(reference, x, mask, training)
    out_fast, grads_fast = _forward_backward(fast, x, mask, training)
    if training:  # dropout really ran (the outputs differ from inference), with the same masks on both sides
        assert float(tf.reduce_max(tf.abs(out_ref - reference(x, padding_mask=mask)))) > 1e-2
    np.testing.assert_allclose(out_fast.numpy(), out_ref.numpy(), atol=2e-5)
    assert [v.path for v in fast.trainable_variables] == [v.path for v in reference.trainable_variables]
    for a, b in zip(grads_fast, grads_ref):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=2e-5 * max(1.0, float(tf.reduce_max(tf.abs(b)))))


@pytest.mark.parametrize("queries", [1, 4])
def test_query_length_equals_the_full_layers_first_rows(queries):
    (reference, fast), x, mask = _pair()
    full = reference(x, padding_mask=mask).numpy()
    np.testing.assert_allclose(fast(x, padding_mask=mask, query_length=queries).numpy(), full[:, :queries],
                               atol=2e-5)
    causal = np.tril(np.ones((B, L, L), "int32"))
    full = reference(x, padding_mask=mask, attention_mask=causal).numpy()
    got = fast(x, padding_mask=mask, attention_mask=causal, query_length=queries).numpy()
    np.testing.assert_allclose(got, full[:, :queries], atol=2e-5)
    symbolic = fast(keras.Input((None, H)), padding_mask=keras.Input((None,), dtype="int32"), query_length=queries)
    assert tuple(symbolic.shape) == (None, queries, H)


def test_bert_pooled_output_is_the_pooler_on_the_full_sequence_output():
    import zoo
    from zoo.models.bert import build_bert

    backbone = build_bert(zoo.make_config("bert_tiny"))
    rng = np.random.default_rng(0)
    inputs = {"token_ids": rng.integers(5, 1000, (2, 16)).astype("int32"), "segment_ids": np.zeros((2, 16), "int32"),
              "padding_mask": np.ones((2, 16), "int32")}
    inputs["padding_mask"][1, 10:] = 0
    out = backbone(inputs)
    expected = backbone.pooled_dense(out["sequence_output"][:, 0, :])
    np.testing.assert_allclose(out["pooled_output"].numpy(), expected.numpy(), atol=1e-5)
