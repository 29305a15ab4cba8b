"""Classify and Regress: TF Serving's APIs on ``tf.train.Example`` inputs.

A classification or regression signature (``method_name`` ``tensorflow/serving/classify`` /
``.../regress``) takes one string tensor of serialized Examples. REST sends
``{"examples": [{feature: value | [values]}], "context"?: {...}}`` (ints -> int64_list, numbers ->
float_list, strings and ``{"b64"}`` -> bytes_list; an example's features override the context's);
gRPC sends ``Input`` (``example_list`` or ``example_list_with_context``). Classify answers
``[[label, score], ...]`` per example from the ``classes`` / ``scores`` outputs, regress one value per
example from ``outputs``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from zoo.export.serve.errors import FailedPrecondition, InvalidArgument
from zoo.export.serve.tensors import Limits, Signature, _decode_b64

KINDS = {"classify": "classification", "regress": "regression"}


def check_signature(sig: Signature, verb: str) -> str:
    """The signature's one input key, after checking it is a ``verb`` signature (TF Serving's messages)."""
    want = f"tensorflow/serving/{verb}"
    if sig.method != want:
        raise FailedPrecondition(f"Expected {KINDS[verb]} signature method_name to be {want}. Was: {sig.method}")
    if len(sig.inputs) != 1 or next(iter(sig.inputs.values())).dtype != "string":
        raise FailedPrecondition(f"{KINDS[verb]} signature '{sig.name}' must take exactly one string input "
                                 "(serialized tf.Example)")
    return next(iter(sig.inputs))


def _feature(name: str, value: Any) -> Any:
    from tensorflow.core.example import feature_pb2

    values = value if isinstance(value, list) else [value]
    if not values:
        raise InvalidArgument(f"feature '{name}' has no values")
    feature = feature_pb2.Feature()
    if all(isinstance(v, bool) or isinstance(v, int) for v in values):
        if any(abs(int(v)) >= 2**63 for v in values):
            raise InvalidArgument(f"feature '{name}': a value is out of the int64 range")
        feature.int64_list.value.extend(int(v) for v in values)
    elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        feature.float_list.value.extend(float(v) for v in values)
    elif all(isinstance(v, (str, dict)) for v in values):
        feature.bytes_list.value.extend(v.encode("utf-8") if isinstance(v, str) else _decode_b64(v, name)
                                        for v in values)
    else:
        raise InvalidArgument(f"feature '{name}': values must be all numbers or all strings, got {values[:4]!r}")
    return feature


def _example(features: Any, where: str) -> Any:
    from tensorflow.core.example import example_pb2

    if not isinstance(features, dict):
        raise InvalidArgument(f"{where} must be an object of feature name -> value(s)")
    example = example_pb2.Example()
    for name, value in features.items():
        example.features.feature[name].CopyFrom(_feature(name, value))
    return example


def json_examples(body: Any, limits: Limits) -> np.ndarray:
    """The REST body's examples, merged with its context, as serialized Examples (object array)."""
    if not isinstance(body, dict) or not isinstance(body.get("examples"), list) or not body["examples"]:
        raise InvalidArgument("the request needs a non-empty 'examples' list (one object of features per example)")
    examples = body["examples"]
    if limits.max_instances and len(examples) > limits.max_instances:
        raise InvalidArgument(f"{len(examples)} examples in one request; the limit is {limits.max_instances} "
                              "(zoo serve --max-instances)")
    context = _example(body["context"], "'context'") if body.get("context") is not None else None
    out = []
    for i, features in enumerate(examples):
        example = _example(features, f"example {i}")
        out.append(_merge(context, example))
    return np.array(out, dtype=object)


def _merge(context: Any, example: Any) -> bytes:
    if context is None:
        return example.SerializeToString()
    from tensorflow.core.example import example_pb2

    merged = example_pb2.Example()
    for source in (context, example):  # the example's features win
        for name, feature in source.features.feature.items():
            merged.features.feature[name].CopyFrom(feature)
    return merged.SerializeToString()


def proto_examples(input_proto: Any, limits: Limits) -> np.ndarray:
    """A gRPC ``tensorflow.serving.Input`` as serialized Examples."""
    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        examples, context = list(input_proto.example_list.examples), None
    elif kind == "example_list_with_context":
        examples = list(input_proto.example_list_with_context.examples)
        context = input_proto.example_list_with_context.context
    else:
        raise InvalidArgument("Input is empty: set example_list or example_list_with_context")
    if not examples:
        raise InvalidArgument("Input has no examples")
    if limits.max_instances and len(examples) > limits.max_instances:
        raise InvalidArgument(f"{len(examples)} examples in one request; the limit is {limits.max_instances}")
    return np.array([_merge(context, e) for e in examples], dtype=object)


def classifications(outputs: dict[str, np.ndarray], rows: int) -> list[list[tuple[str, float]]]:
    """``[[(label, score), ...] per example]`` from ``classes`` and/or ``scores`` (the other filled as TF
    Serving's proto defaults: empty label, score 0)."""
    classes, scores = outputs.get("classes"), outputs.get("scores")
    if classes is None and scores is None:
        raise FailedPrecondition("the classification signature has neither a 'classes' nor a 'scores' output")
    ref = scores if scores is not None else classes
    if ref.ndim != 2 or ref.shape[0] != rows or (classes is not None and scores is not None
                                                   and classes.shape != scores.shape):
        raise FailedPrecondition(f"classification outputs must be [examples, classes]; got "
                                 f"{ {k: list(v.shape) for k, v in outputs.items()} }")
    out = []
    for i in range(rows):
        row = []
        for j in range(ref.shape[1]):
            label = classes[i, j] if classes is not None else b""
            label = label.decode("utf-8", "replace") if isinstance(label, bytes) else str(label)
            row.append((label, float(scores[i, j]) if scores is not None else 0.0))
        out.append(row)
    return out


def regressions(outputs: dict[str, np.ndarray], rows: int) -> list[float]:
    values = outputs.get("outputs", next(iter(outputs.values())) if len(outputs) == 1 else None)
    if values is None or values.size != rows:
        raise FailedPrecondition("the regression signature must have one 'outputs' value per example")
    return [float(v) for v in values.reshape(rows)]
