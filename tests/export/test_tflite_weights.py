"""The flatbuffer rewrites of zoo.export.tflite_weights, checked against numpy on a small graph."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.errors import ExportError
from zoo.export import tflite as tfl
from zoo.export import tflite_weights as tw

RNG = np.random.default_rng(3)
# Rows with very different scales: one scale for the whole table would give the small rows few levels.
TABLE = (RNG.normal(size=(200, 32)) * np.geomspace(1e-3, 1.0, 200)[:, None]).astype(np.float32)
KERNEL = RNG.normal(size=(128, 48)).astype(np.float32)
BIAS = RNG.normal(size=(48,)).astype(np.float32)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A SavedModel: gather 4 embedding rows, flatten, dense."""
    import tensorflow as tf

    class Net(tf.Module):
        def __init__(self):
            super().__init__()
            self.table = tf.Variable(TABLE)
            self.kernel = tf.Variable(KERNEL)
            self.bias = tf.Variable(BIAS)

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.int32, name="ids")])
        def serve(self, ids):
            rows = tf.reshape(tf.gather(self.table, ids), [-1, 128])
            return {"logits": tf.matmul(rows, self.kernel) + self.bias}

    path = str(tmp_path_factory.mktemp("weights") / "sm")
    net = Net()
    tf.saved_model.save(net, path, signatures={"serving_default": net.serve})
    return path


def _numpy_forward(table, kernel, ids):
    return table[ids].reshape(len(ids), -1) @ kernel + BIAS


def _dequantized(w, axis):
    q, scales = tw.quantize_per_channel(w, axis)
    shape = [1] * w.ndim
    shape[axis] = -1
    return q.astype(np.float32) * scales.reshape(shape)


def _run(content, ids):
    import tensorflow as tf

    interp = tfl.interpreter_class()(model_content=content)
    return interp.get_signature_runner("serving_default")(ids=tf.constant(ids).numpy())["logits"]


def test_int8_weights_is_exactly_per_channel_weights_with_float_arithmetic(source):
    formats = dict(tfl.convert_formats(source, ["tflite", "tflite_int8_weights", "tflite_dynamic"]))
    ids = RNG.integers(0, 200, size=(16, 4)).astype(np.int32)
    # int8 weights, float activations: equals numpy on the dequantized weights up to float rounding
    expected = _numpy_forward(_dequantized(TABLE, 0), _dequantized(KERNEL.T, 0).T, ids)
    np.testing.assert_allclose(_run(formats["tflite_int8_weights"], ids), expected, rtol=1e-5, atol=1e-5)
    exact = _numpy_forward(TABLE, KERNEL, ids)
    np.testing.assert_allclose(_run(formats["tflite"], ids), exact, rtol=1e-5, atol=1e-5)
    assert len(formats["tflite_int8_weights"]) < 0.4 * len(formats["tflite"])
    # the per-row repair of the dynamic-range table: small rows keep their relative precision
    small = np.arange(4, dtype=np.int32)[None].repeat(2, 0)  # rows scaled by ~1e-3
    rel = np.abs(_run(formats["tflite_dynamic"], small) - _numpy_forward(TABLE, KERNEL, small)).max()
    assert rel <= 0.05 * np.abs(_numpy_forward(TABLE, KERNEL, small)).max()


def test_per_row_repair_beats_the_converters_single_scale_table(source):
    raw = tfl.convert_saved_model(source, "tflite_dynamic")
    repaired = tw.per_row_embeddings(raw, lambda: tfl.convert_saved_model(source, "tflite"))
    small = np.arange(8, dtype=np.int32).reshape(2, 4)
    truth = _numpy_forward(TABLE, KERNEL, small)
    err_raw = np.abs(_run(raw, small) - truth).max()
    err_fixed = np.abs(_run(repaired, small) - truth).max()
    assert err_fixed < err_raw / 10
    # a model without an int8 table comes back as it was, without converting the float model
    assert tw.per_row_embeddings(repaired, lambda: pytest.fail("float model not needed")) == repaired


def test_a_model_without_large_weights_is_refused(tmp_path):
    import tensorflow as tf

    class Tiny(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def serve(self, x):
            return {"y": tf.matmul(x, tf.ones([3, 2]))}

    tiny = Tiny()
    tf.saved_model.save(tiny, str(tmp_path), signatures={"serving_default": tiny.serve})
    with pytest.raises(ExportError, match="no float weights large enough"):
        dict(tfl.convert_formats(str(tmp_path), ["tflite_int8_weights"]))
    with pytest.raises(ExportError, match="does not make 'tflite_int8_weights'"):
        tfl.convert_saved_model(str(tmp_path), "tflite_int8_weights")
