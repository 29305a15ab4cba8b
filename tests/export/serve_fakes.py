"""A stand-in for a loaded SavedModel, so the server's logic is tested without loading TensorFlow graphs."""

from __future__ import annotations

import threading

import numpy as np

from zoo.export.serve.tensors import Signature, TensorInfo


def signature_def(sig: Signature):
    import tensorflow as tf
    from tensorflow.core.protobuf import meta_graph_pb2

    proto = meta_graph_pb2.SignatureDef(method_name=sig.method)
    for target, infos in ((proto.inputs, sig.inputs), (proto.outputs, sig.outputs)):
        for key, info in infos.items():
            target[key].name = f"{key}:0"
            target[key].dtype = tf.dtypes.as_dtype(info.dtype).as_datatype_enum
            for d in info.shape:
                target[key].tensor_shape.dim.add(size=-1 if d is None else d)
    return proto


DOUBLER = Signature("serving_default", "tensorflow/serving/predict",
                    {"x": TensorInfo("x", "float32", (None, 3))},
                    {"y": TensorInfo("y", "float32", (None, 3)), "total": TensorInfo("total", "float32", (None,))})
PAIRS = Signature("pairs", "tensorflow/serving/predict",
                  {"text": TensorInfo("text", "string", (None,)), "count": TensorInfo("count", "int32", (None,))},
                  {"joined_bytes": TensorInfo("joined_bytes", "string", (None,)),
                   "upper": TensorInfo("upper", "string", (None,))})
SINGLE = Signature("single", "tensorflow/serving/predict", {"x": TensorInfo("x", "float32", (None, 3))},
                   {"y": TensorInfo("y", "float32", (None, 3))})
CLASSIFY = Signature("classify", "tensorflow/serving/classify",
                     {"inputs": TensorInfo("inputs", "string", (None,))},
                     {"scores": TensorInfo("scores", "float32", (None, 2))})


class Gate:
    """Holds every run of a FakeServable until released: ``started`` is set when a run begins, so a test
    knows a request is executing (and the batch thread busy) without waiting for any length of time."""

    def __init__(self) -> None:
        self.started, self.released = threading.Event(), threading.Event()

    def wait_started(self, timeout: float = 120) -> None:
        assert self.started.wait(timeout), "the model never started running the request"


class FakeServable:
    """Signatures DOUBLER (serving_default), PAIRS and CLASSIFY. With a ``gate``, every run sets
    ``gate.started`` and then waits for ``gate.released``; every run's batch size is recorded in
    ``batches``; a path containing 'broken' fails to load."""

    def __init__(self, path: str, gate: Gate | None = None, version_tag: float = 0.0):
        if "broken" in path:
            raise ValueError(f"SavedModel file does not exist at: {path}")
        self.path, self.gate, self.version_tag = path, gate, version_tag
        self.signatures = {s.name: s for s in (DOUBLER, PAIRS, SINGLE, CLASSIFY)}
        self.signature_defs = {name: signature_def(s) for name, s in self.signatures.items()}
        self.batches: list[int] = []
        self._lock = threading.Lock()

    def signature(self, name):
        from zoo.export.serve.errors import NotFound

        name = name or "serving_default"
        if name not in self.signatures:
            raise NotFound(f'Serving signature name: "{name}" not found in signature def')
        return self.signatures[name]

    def run(self, signature, inputs):
        with self._lock:
            self.batches.append(len(next(iter(inputs.values()))))
        if self.gate is not None:
            self.gate.started.set()
            assert self.gate.released.wait(120), "the test never released the gate"
        if signature == "classify":  # scores (sum of feature x, its negative) per serialized tf.Example
            from tensorflow.core.example import example_pb2

            sums = [sum(example_pb2.Example.FromString(e).features.feature["x"].float_list.value)
                    for e in inputs["inputs"]]
            return {"scores": np.array([[v, -v] for v in sums], np.float32)}
        if signature == "pairs":
            pairs = zip(inputs["text"], inputs["count"])
            joined = np.array([t + b"#" + str(c).encode() for t, c in pairs], dtype=object)
            return {"joined_bytes": joined, "upper": np.array([t.upper() for t in inputs["text"]], dtype=object)}
        x = inputs["x"]
        if signature == "single":
            return {"y": x * 2 + self.version_tag}
        return {"y": x * 2 + self.version_tag, "total": x.sum(axis=1)}
