"""One loaded SavedModel version: its signatures (read from ``saved_model.pb``, as TF Serving
reports them) and a thread-safe ``run``; plus the warm-up replay TF Serving does on load."""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from zoo.export.serve.errors import InvalidArgument, NotFound, ServingError
from zoo.export.serve.tensors import Signature, TensorInfo

log = logging.getLogger(__name__)

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000  # TF Serving replays at most this many


def _tensor_info(key: str, proto: Any) -> TensorInfo:
    import tensorflow as tf

    dtype = tf.dtypes.as_dtype(proto.dtype).name
    shape = None if proto.tensor_shape.unknown_rank else tuple(
        None if d.size < 0 else int(d.size) for d in proto.tensor_shape.dim)
    return TensorInfo(key, dtype, shape)


def read_signature_defs(path: str) -> dict[str, Any]:
    """The ``SignatureDef`` protos of the ``serve`` meta graph in ``path/saved_model.pb``."""
    from tensorflow.core.protobuf import saved_model_pb2

    with open(os.path.join(path, "saved_model.pb"), "rb") as fh:
        sm = saved_model_pb2.SavedModel.FromString(fh.read())
    for meta in sm.meta_graphs:
        if "serve" in meta.meta_info_def.tags:
            return {k: v for k, v in meta.signature_def.items() if not k.startswith("__")}
    raise ValueError("the SavedModel has no meta graph tagged 'serve'")


class Servable:
    """A SavedModel version loaded with ``tf.saved_model.load``; ``run`` may be called from many threads."""

    def __init__(self, path: str):
        import tensorflow as tf
        import tensorflow_text  # noqa: F401  (registers the TF Text ops text SavedModels use)

        self.path = path
        self.signature_defs = read_signature_defs(path)
        self.signatures = {
            name: Signature(name, d.method_name, {k: _tensor_info(k, v) for k, v in d.inputs.items()},
                            {k: _tensor_info(k, v) for k, v in d.outputs.items()})
            for name, d in self.signature_defs.items()}
        self._loaded = tf.saved_model.load(path, tags=["serve"])
        self._fns = {name: self._loaded.signatures[name] for name in self.signatures}

    def signature(self, name: str | None) -> Signature:
        name = name or "serving_default"
        if name not in self.signatures:
            raise NotFound(f"Serving signature name: \"{name}\" not found in signature def (signatures: "
                           f"{', '.join(sorted(self.signatures))})")
        return self.signatures[name]

    def run(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        sig = self.signature(signature)
        try:
            out = self._fns[sig.name](**{k: tf.constant(v, dtype=sig.inputs[k].dtype) for k, v in inputs.items()})
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InvalidArgument(f"the model refused the input: {first}") from exc
        except tf.errors.OpError as exc:
            raise ServingError(f"the model failed: {exc.message.splitlines()[0]}") from exc
        return {k: v.numpy() for k, v in out.items()}


def replay_warmup(servable: Servable) -> int:
    """Run the version's ``assets.extra/tf_serving_warmup_requests`` (PredictionLog records) as TF Serving
    does on load; returns how many ran. A record that fails fails the load."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    from zoo.export.serve.tensors import proto_to_array

    path = os.path.join(servable.path, WARMUP_FILE)
    if not os.path.isfile(path):
        return 0
    done = 0
    for record in tf.data.TFRecordDataset(path).take(MAX_WARMUP_RECORDS):
        entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        if entry.WhichOneof("log_type") != "predict_log":
            log.warning("%s: skipping a %s warm-up record (zoo serve replays predict_log)", path,
                        entry.WhichOneof("log_type"))
            continue
        request = entry.predict_log.request
        inputs = {k: proto_to_array(v, k) for k, v in request.inputs.items()}
        servable.run(request.model_spec.signature_name or "serving_default", inputs)
        done += 1
    return done
