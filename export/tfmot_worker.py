"""The tensorflow-model-optimization side of ``zoo compress``, run in its own process.

tfmot 0.8.1 works on ``tf_keras`` models only, and importing it switches ``tf.keras`` to
tf_keras for the whole process. So ``zoo.export.compress`` (Keras 3) never imports it: it writes
a job (the model config, its weights, training and eval arrays) and runs
``python -m zoo.export.tfmot_worker JOB_DIR``, which builds the tf_keras twin of the CNN from the
same builder, loads the weights, fine-tunes with QAT or magnitude pruning and writes back:

* ``qat``: ``model_qat_int8.tflite`` (converted from the quantization-aware model) and
  ``result.json`` (the QAT model's own eval accuracy);
* ``prune``: ``pruned_weights.npz`` (after ``strip_pruning``, in the order of ``get_weights``)
  and ``result.json`` (the sparsity reached per pruned kernel).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import numpy as np


def _twin(job: dict[str, Any], tf_keras: Any) -> Any:
    from zoo import registry

    cfg = registry.make_config(job["model_name"], **job["model_config"])
    model = registry.build_from_config(cfg, tf_keras)
    with np.load(os.path.join(job["dir"], "weights.npz")) as z:
        model.set_weights([z[f"w{i}"] for i in range(len(z.files))])
    return model


def _quantizable(tfmot: Any) -> Any:
    registry = tfmot.quantization.keras.default_8bit.Default8BitQuantizeRegistry()

    def annotate(layer: Any) -> Any:
        # Layers tfmot has no quantization rule for (Rescaling) stay float, as TFLite runs them.
        if registry.supports(layer):
            return tfmot.quantization.keras.quantize_annotate_layer(layer)
        return layer

    return annotate


def _copy_layer_weights(model: Any, clone: Any) -> None:
    """Trained weights into a clone whose layers may be wrapped (pruning): layer by layer, in order."""
    for original, new in zip(model.layers, clone.layers):
        target = getattr(new, "layer", new)  # a pruning wrapper holds the real layer in .layer
        if original.get_weights():
            target.set_weights(original.get_weights())


def run(job_dir: str) -> dict[str, Any]:
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras

    with open(os.path.join(job_dir, "job.json"), encoding="utf-8") as fh:
        job = json.load(fh)
    job["dir"] = job_dir
    tf_keras.utils.set_random_seed(job["seed"])
    with np.load(os.path.join(job_dir, "data.npz")) as z:
        x, y, x_eval, y_eval = z["x"], z["y"], z["x_eval"], z["y_eval"]
    model = _twin(job, tf_keras)
    loss = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    optimizer = tf_keras.optimizers.Adam(job["learning_rate"])
    batch, epochs = job["batch_size"], job["epochs"]
    result: dict[str, Any] = {"kind": job["kind"]}
    if job["kind"] == "qat":
        annotated = tf_keras.models.clone_model(model, clone_function=_quantizable(tfmot))
        _copy_layer_weights(model, annotated)
        qat = tfmot.quantization.keras.quantize_apply(annotated)
        qat.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
        qat.fit(x, y, batch_size=batch, epochs=epochs, verbose=0, shuffle=True)
        result["qat_keras_accuracy"] = float(qat.evaluate(x_eval, y_eval, verbose=0)[1])
        # The reference for the converted file: the fake-quantized model it is converted from.
        np.save(os.path.join(job_dir, "qat_logits.npy"), qat.predict(x_eval, batch_size=256, verbose=0))
        converter = tf.lite.TFLiteConverter.from_keras_model(qat)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        with open(os.path.join(job_dir, "model_qat_int8.tflite"), "wb") as fh:
            fh.write(converter.convert())
    else:
        steps = int(np.ceil(len(x) / batch)) * epochs
        schedule = tfmot.sparsity.keras.PolynomialDecay(
            initial_sparsity=0.0, final_sparsity=job["sparsity"], begin_step=0,
            end_step=max(1, int(steps * job["ramp_fraction"])), frequency=max(1, steps // (4 * epochs)))
        def prune_kernels(layer: Any) -> Any:  # convolutions and dense layers; the rest is copied as is
            if isinstance(layer, (tf_keras.layers.Conv2D, tf_keras.layers.Dense)):
                return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
            return layer.__class__.from_config(layer.get_config())

        pruned = tf_keras.models.clone_model(model, clone_function=prune_kernels)
        _copy_layer_weights(model, pruned)
        pruned.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
        pruned.fit(x, y, batch_size=batch, epochs=epochs, verbose=0, shuffle=True,
                   callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
        stripped = tfmot.sparsity.keras.strip_pruning(pruned)
        weights = stripped.get_weights()
        np.savez(os.path.join(job_dir, "pruned_weights.npz"), **{f"w{i}": w for i, w in enumerate(weights)})
        result["sparsity"] = {w.name: float(np.mean(w.numpy() == 0)) for w in stripped.weights
                              if w.name.endswith("kernel:0")}
    with open(os.path.join(job_dir, "result.json"), "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=2)
    return result


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    run(sys.argv[1])
