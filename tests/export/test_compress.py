"""`zoo compress`: QAT and pruning through tfmot in a separate tf_keras process, Keras 3 untouched."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from zoo.errors import ConfigError, ZooError
from zoo.export.compress import compress


def _keras3_still_works():
    import keras
    import tensorflow as tf

    assert keras.__version__.startswith("3.")
    assert "tensorflow_model_optimization" not in sys.modules  # tfmot never entered this process
    assert tf.keras.__version__.startswith("3.")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert model(np.ones((1, 3), "float32")).shape == (1, 2)


@pytest.mark.slow
def test_qat_int8_matches_keras_accuracy(digits_run, tmp_path):
    summary = compress("qat", digits_run.run_dir, epochs=2, to=str(tmp_path), latency_runs=3)
    # Within half a point of the float Keras model (2 more epochs of fine-tuning may also gain a little),
    # and of the QAT Keras model it was converted from.
    assert summary["accuracy_delta"] >= -0.005, summary
    assert abs(summary["tflite_accuracy"] - summary["qat_keras_accuracy"]) <= 0.005, summary
    # Against the QAT model it was converted from, the file differs by int8 rounding only.
    assert summary["tflite_label_agreement"] >= 0.98 and summary["tflite_max_abs_diff"] < 2.0, summary
    assert summary["reference"].startswith("the QAT Keras model")
    report = summary["report"]
    qat = report["formats"]["tflite_qat_int8"]
    assert qat["size_ratio"] <= 0.30 and qat["label_agreement"] >= 0.98
    assert os.path.isfile(os.path.join(summary["version_dir"], "model_qat_int8.tflite"))
    assert report["compression"]["kind"] == "qat"
    _keras3_still_works()


@pytest.mark.slow
def test_pruning_to_80_percent(digits_run, tmp_path):
    # 3 epochs: the sparsity ramp takes 80% of the steps, and 2 left too few to recover on some digits models.
    summary = compress("prune", digits_run.run_dir, epochs=3, sparsity=0.8, to=str(tmp_path), latency_runs=3)
    kernels = summary["sparsity"]
    assert kernels and all(0.75 <= s <= 0.85 for s in kernels.values()), kernels
    assert summary["gzip_ratio"] <= 0.40, summary["sizes"]
    report = summary["report"]
    keras_acc = report["keras"]["accuracy"]
    original = digits_run.metrics["final"]["test_accuracy"]
    assert keras_acc >= 0.95 and report["formats"]["tflite"]["max_abs_diff"] < 1e-3
    # accuracy of the pruned model on the eval sample vs the unpruned one: within 2 points
    import zoo

    unpruned = zoo.load(os.path.join(digits_run.run_dir, "model.keras"), compile=False)
    sample = np.load(os.path.join(digits_run.run_dir, "eval_sample.npz"))
    unpruned_acc = float((np.asarray(unpruned(sample["x"])).argmax(-1) == sample["y"]).mean())
    assert keras_acc >= unpruned_acc - 0.02, (keras_acc, unpruned_acc, original)
    pruned = zoo.load(os.path.join(summary["pruned_run_dir"], "model.keras"), compile=False)
    kernel = next(w for w in pruned.weights if w.path.endswith("dense/kernel"))
    assert 0.75 <= float(np.mean(np.asarray(kernel) == 0)) <= 0.85
    _keras3_still_works()


def test_bad_compress_requests(digits_run, minilm_run):
    with pytest.raises(ConfigError, match="between 0 and 1"):
        compress("prune", digits_run.run_dir, sparsity=1.5)
    with pytest.raises(ConfigError, match="between 0 and 1"):
        compress("prune", digits_run.run_dir, sparsity=0.0)
    with pytest.raises(ConfigError, match="unknown compression"):
        compress("distill", digits_run.run_dir)
    with pytest.raises(ZooError, match="no QAT for attention layers"):
        compress("qat", minilm_run.run_dir)
