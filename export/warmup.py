"""TF Serving's warm-up file: ``<version>/assets.extra/tf_serving_warmup_requests``.

A TFRecord of serialized ``PredictionLog`` protos, each a ``PredictRequest`` built from the run's
eval sample. TF Serving (and ``zoo serve``) replays them when it loads a version, so the first
real request does not pay for graph tracing and kernel set-up (``g3doc/saved_model_warmup.md``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
BATCH_SIZES = (1, 8)  # a lone request and a small batch: the shapes a batching server runs most


def write_warmup_requests(saved_model_dir: str, name: str, batches: Sequence[dict[str, np.ndarray]],
                          signature: str = "serving_default") -> str:
    """One PredictionLog record per batch of named inputs; returns the file's path."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = os.path.join(saved_model_dir, WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for inputs in batches:
            entry = prediction_log_pb2.PredictionLog()
            request = entry.predict_log.request
            request.model_spec.name = name
            request.model_spec.signature_name = signature
            for key, value in inputs.items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
            writer.write(entry.SerializeToString())
    return path


def sample_batches(inputs: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Batches of :data:`BATCH_SIZES` rows cut from the eval sample (as many rows as it has)."""
    rows = len(next(iter(inputs.values())))
    sizes = sorted({min(b, rows) for b in BATCH_SIZES if rows})
    return [{k: v[:size] for k, v in inputs.items()} for size in sizes]
