"""Tensors on the wire <-> numpy, checked against a signature.

Three encodings reach the same ``{input name: np.ndarray}`` dict: TF Serving's REST JSON (row
``instances`` or columnar ``inputs``, ``{"b64": ...}`` for bytes; ``util/json_tensor.cc``), KServe
v2 JSON (``{name, shape, datatype, data}``) and ``TensorProto`` (gRPC). Every path ends in
:func:`check_inputs`, so a request is refused with the same message whichever way it came. Strings
travel as numpy object arrays of ``bytes``. This module needs no TensorFlow (TensorProto
conversion imports it when called).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import math
from typing import Any

import numpy as np

from zoo.export.serve.errors import InvalidArgument

# TensorFlow dtype name -> (numpy dtype, KServe v2 datatype)
DTYPES: dict[str, tuple[Any, str]] = {
    "float16": (np.float16, "FP16"), "float32": (np.float32, "FP32"), "float64": (np.float64, "FP64"),
    "int8": (np.int8, "INT8"), "int16": (np.int16, "INT16"), "int32": (np.int32, "INT32"),
    "int64": (np.int64, "INT64"), "uint8": (np.uint8, "UINT8"), "uint16": (np.uint16, "UINT16"),
    "uint32": (np.uint32, "UINT32"), "uint64": (np.uint64, "UINT64"), "bool": (np.bool_, "BOOL"),
    "string": (object, "BYTES"),
}


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One input or output of a signature: its key, TensorFlow dtype name and shape (None: any size;
    ``shape=None``: unknown rank)."""

    name: str
    dtype: str
    shape: tuple[int | None, ...] | None

    def describe(self) -> str:
        dims = "?" if self.shape is None else "[" + ", ".join("-1" if d is None else str(d) for d in self.shape) + "]"
        return f"{self.name}: {self.dtype} {dims}"


@dataclasses.dataclass(frozen=True)
class Signature:
    name: str
    method: str  # tensorflow/serving/predict, .../classify, .../regress
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]


@dataclasses.dataclass(frozen=True)
class Limits:
    """Hard limits on one request (0: none)."""

    max_instances: int = 1024       # rows (dimension 0) per request
    max_string_bytes: int = 1 << 20  # bytes per string element


def _np_dtype(info: TensorInfo) -> Any:
    if info.dtype not in DTYPES:
        raise InvalidArgument(f"input '{info.name}' has dtype {info.dtype}, which this server cannot take over JSON")
    return DTYPES[info.dtype][0]


# -- checking


def check_inputs(sig: Signature, inputs: dict[str, np.ndarray], limits: Limits) -> dict[str, np.ndarray]:
    """The inputs, checked against ``sig`` (names, dtypes, shapes) and ``limits``; an InvalidArgument
    naming the input and what it expects otherwise."""
    missing = sorted(set(sig.inputs) - set(inputs))
    extra = sorted(set(inputs) - set(sig.inputs))
    if missing or extra:
        parts = [f"missing {', '.join(missing)}"] if missing else []
        parts += [f"unknown {', '.join(extra)}"] if extra else []
        raise InvalidArgument(f"signature '{sig.name}' takes inputs {', '.join(sorted(sig.inputs))}: "
                              f"{'; '.join(parts)}")
    checked = {}
    for name, arr in inputs.items():
        info = sig.inputs[name]
        want = _np_dtype(info)
        if want is object:
            if arr.dtype != object or not all(isinstance(v, bytes) for v in arr.flat):
                raise InvalidArgument(f"input '{name}' expects strings, got {arr.dtype}")
            if limits.max_string_bytes and any(len(v) > limits.max_string_bytes for v in arr.flat):
                raise InvalidArgument(f"input '{name}' has a string longer than the limit of "
                                      f"{limits.max_string_bytes} bytes (zoo serve --max-string-bytes)")
        elif arr.dtype != np.dtype(want):
            raise InvalidArgument(f"input '{name}' expects {info.dtype}, got {_dtype_name(arr.dtype)}")
        if info.shape is not None:
            if arr.ndim != len(info.shape) or any(d is not None and d != n for d, n in zip(info.shape, arr.shape)):
                raise InvalidArgument(f"input '{name}' has shape {list(arr.shape)}; the signature expects "
                                      f"{info.describe().split(' ', 2)[2]} (-1: any size)")
        checked[name] = arr
    rows = {a.shape[0] for a in checked.values() if a.ndim}
    if limits.max_instances and rows and max(rows) > limits.max_instances:
        raise InvalidArgument(f"{max(rows)} instances in one request; the limit is {limits.max_instances} "
                              "(zoo serve --max-instances)")
    return checked


def _dtype_name(dtype: np.dtype) -> str:
    if dtype.kind in "OSU":
        return "string"
    return str(dtype)


# -- JSON values -> numpy


def _decode_b64(value: dict[str, Any], name: str) -> bytes:
    if set(value) != {"b64"} or not isinstance(value["b64"], str):
        raise InvalidArgument(f"input '{name}': an object in a value must be {{\"b64\": \"<base64>\"}}, got {value}")
    text = value["b64"]
    if "-" in text or "_" in text:
        raise InvalidArgument(f"input '{name}': b64 must use the standard base64 alphabet (+ and /), not URL-safe")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidArgument(f"input '{name}': invalid base64 ({exc})") from exc


def _strings(value: Any, name: str) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, dict):
        return _decode_b64(value, name)
    if isinstance(value, list):
        return [_strings(v, name) for v in value]
    raise InvalidArgument(f"input '{name}' expects strings, got {type(value).__name__} {_short(value)}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _regular(value: Any, name: str, dtype: Any) -> np.ndarray:
    try:
        arr = np.array(value, dtype=dtype)
    except (ValueError, TypeError, OverflowError):
        arr = None
    if arr is None or (dtype is object and arr.ndim and any(isinstance(v, list) for v in arr.flat)):
        raise InvalidArgument(f"input '{name}': the values are not a regular (rectangular) array, or of mixed types")
    return arr


def _lossless(raw: np.ndarray, want: Any) -> bool:
    info = np.finfo(want)
    if raw.dtype.kind in "iu":
        return bool(np.abs(raw.astype(np.float64)).max() <= 2.0 ** (info.nmant + 1) - 1)
    finite = raw[np.isfinite(raw)]
    return not finite.size or bool(np.abs(finite).max() <= info.max)


def json_to_array(value: Any, info: TensorInfo) -> np.ndarray:
    """A JSON value (number, string, ``{"b64"}``, nested lists) as the dtype ``info`` expects."""
    want = _np_dtype(info)
    name = info.name
    if want is object:
        arr = _regular(_strings(value, name), name, object)
        if arr.ndim == 0:
            arr = np.array(arr.item(), dtype=object)
        return arr
    raw = _regular(value, name, None)
    if raw.size and raw.dtype.kind not in "biuf":
        raise InvalidArgument(f"input '{name}' expects {info.dtype} numbers, got {_short(value)}")
    if raw.dtype.kind == "b" and np.dtype(want).kind != "b":
        raise InvalidArgument(f"input '{name}' expects {info.dtype} numbers, got true/false")
    if raw.dtype.kind == "f" and np.dtype(want).kind in "iub":
        if not np.all(np.isfinite(raw)) or not np.all(raw == np.round(raw)):
            raise InvalidArgument(f"input '{name}' expects {info.dtype}, got a fractional number")
    if raw.size and np.dtype(want).kind in "iu":
        limits = np.iinfo(want)
        if raw.min() < limits.min or raw.max() > limits.max:
            raise InvalidArgument(f"input '{name}': a value is out of the range of {info.dtype}")
    if raw.size and np.dtype(want).kind == "f" and raw.dtype.kind in "iuf" and not _lossless(raw, want):
        # TF Serving's IsLosslessDecimal: a finite number beyond the type's range, or an integer beyond what
        # its mantissa holds exactly, is refused rather than turned into inf or a neighbouring value.
        raise InvalidArgument(f"input '{name}': cannot convert a value to {info.dtype} without loss of precision")
    if raw.size and np.dtype(want).kind == "b" and raw.dtype.kind != "b":
        raise InvalidArgument(f"input '{name}' expects true/false")
    return raw.astype(want) if raw.size else np.zeros(raw.shape, dtype=want)


def array_to_json(arr: np.ndarray, info: TensorInfo | None) -> Any:
    """A numpy output as JSON: strings as text, or ``{"b64"}`` for outputs named ``*_bytes``."""
    if arr.dtype == object or arr.dtype.kind == "S":
        as_b64 = info is not None and info.name.endswith("_bytes")

        def convert(v: Any) -> Any:
            if isinstance(v, list):
                return [convert(x) for x in v]
            raw = v if isinstance(v, bytes) else str(v).encode("utf-8")
            return {"b64": base64.b64encode(raw).decode("ascii")} if as_b64 else raw.decode("utf-8", "replace")

        return convert(arr.tolist())
    return arr.tolist()


# -- TF Serving REST


def rest_request(body: Any, sig: Signature, limits: Limits) -> tuple[dict[str, np.ndarray], bool]:
    """``{"instances": ...}`` or ``{"inputs": ...}`` -> (checked inputs, row format?)."""
    if not isinstance(body, dict):
        raise InvalidArgument("the request body must be a JSON object with 'instances' or 'inputs'")
    if "instances" in body and "inputs" in body:
        raise InvalidArgument("Not allowed to specify both 'instances' and 'inputs' keys: use one")
    if "instances" in body:
        return check_inputs(sig, _rows(body["instances"], sig, limits), limits), True
    if "inputs" in body:
        return check_inputs(sig, _columns(body["inputs"], sig), limits), False
    raise InvalidArgument("Missing 'inputs' or 'instances' key")


def _rows(instances: Any, sig: Signature, limits: Limits) -> dict[str, np.ndarray]:
    if not isinstance(instances, list):
        raise InvalidArgument("'instances' must be a list, one element per example")
    if not instances:
        raise InvalidArgument("No values in 'instances' array")
    if limits.max_instances and len(instances) > limits.max_instances:
        raise InvalidArgument(f"{len(instances)} instances in one request; the limit is {limits.max_instances} "
                              "(zoo serve --max-instances)")
    names = list(sig.inputs)
    named = all(isinstance(i, dict) and set(i) != {"b64"} for i in instances)
    if not named:
        if len(names) != 1:
            raise InvalidArgument(f"signature '{sig.name}' takes several inputs ({', '.join(sorted(names))}): "
                                  "each instance must be an object naming them")
        if any(isinstance(i, dict) and set(i) != {"b64"} for i in instances):
            raise InvalidArgument("instances mix objects and plain values; use one form for every instance")
        instances = [{names[0]: i} for i in instances]
    columns: dict[str, list[Any]] = {}
    for k, instance in enumerate(instances):
        if set(instance) != set(names):
            raise InvalidArgument(f"instance {k} has keys {sorted(instance)}; signature '{sig.name}' takes "
                                  f"{sorted(names)}")
        for name in names:
            columns.setdefault(name, []).append(instance[name])
    out = {}
    for name, values in columns.items():
        parts = [json_to_array(v, sig.inputs[name]) for v in values]
        if len({p.shape for p in parts}) > 1:
            raise InvalidArgument(f"input '{name}': instances have different shapes "
                                  f"({', '.join(str(list(p.shape)) for p in parts[:3])}...); every instance must have "
                                  "the same shape")
        out[name] = np.stack(parts) if parts[0].dtype != object else _stack_objects(parts)
    return out


def _stack_objects(parts: list[np.ndarray]) -> np.ndarray:
    out = np.empty((len(parts), *parts[0].shape), dtype=object)
    for i, p in enumerate(parts):
        out[i, ...] = p  # copies the elements (``out[i] = p`` would store a 0-d array as one object)
    return out


def _columns(inputs: Any, sig: Signature) -> dict[str, np.ndarray]:
    names = list(sig.inputs)
    if isinstance(inputs, dict) and set(inputs) != {"b64"}:
        unknown = sorted(set(inputs) - set(names))
        if unknown:
            raise InvalidArgument(f"signature '{sig.name}' has no input {', '.join(unknown)} "
                                  f"(inputs: {', '.join(sorted(names))})")
        return {n: json_to_array(v, sig.inputs[n]) for n, v in inputs.items()}
    if len(names) != 1:
        raise InvalidArgument(f"signature '{sig.name}' takes several inputs ({', '.join(sorted(names))}): "
                              "'inputs' must be an object naming them")
    return {names[0]: json_to_array(inputs, sig.inputs[names[0]])}


def rest_response(outputs: dict[str, np.ndarray], sig: Signature, row_format: bool) -> dict[str, Any]:
    """``{"predictions": ...}`` (row) or ``{"outputs": ...}`` (columnar); one output unnamed."""
    names = sorted(outputs)
    if not row_format:
        if len(names) == 1:
            return {"outputs": array_to_json(outputs[names[0]], sig.outputs.get(names[0]))}
        return {"outputs": {n: array_to_json(outputs[n], sig.outputs.get(n)) for n in names}}
    rows = {outputs[n].shape[0] if outputs[n].ndim else None for n in names}
    if len(rows) != 1 or None in rows:
        raise InvalidArgument("the outputs of this signature do not share a batch dimension, which the row "
                              "format ('instances') needs; send 'inputs' (columnar) instead")
    columns = {n: array_to_json(outputs[n], sig.outputs.get(n)) for n in names}
    if len(names) == 1:
        return {"predictions": columns[names[0]]}
    count = rows.pop()
    return {"predictions": [{n: columns[n][i] for n in names} for i in range(count)]}


# -- KServe v2


def v2_request(body: Any, sig: Signature, limits: Limits) -> tuple[dict[str, np.ndarray], list[str] | None]:
    """An Open Inference Protocol ``infer`` body -> (checked inputs, requested output names or None)."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or not body["inputs"]:
        raise InvalidArgument("the infer request must be an object with a non-empty 'inputs' list")
    inputs = {}
    for spec in body["inputs"]:
        if not isinstance(spec, dict) or not {"name", "shape", "datatype", "data"} <= set(spec):
            raise InvalidArgument("each input needs 'name', 'shape', 'datatype' and 'data'")
        name, shape, datatype = spec["name"], spec["shape"], spec["datatype"]
        if not isinstance(name, str) or name not in sig.inputs:
            raise InvalidArgument(f"the model has no input {name!r} (inputs: {', '.join(sorted(sig.inputs))})")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                  for d in shape):
            raise InvalidArgument(f"input '{name}': shape must be a list of non-negative integers, got {_short(shape)}")
        info = sig.inputs[name]
        want = DTYPES.get(info.dtype, (None, "?"))[1]
        if datatype != want:
            raise InvalidArgument(f"input '{name}': datatype {datatype!r} does not match the model's {want}")
        flat = _flatten(spec["data"])
        if len(flat) != math.prod(shape):
            raise InvalidArgument(f"input '{name}': {len(flat)} values do not fill shape {shape}")
        arr = json_to_array(flat, info)
        inputs[name] = arr.reshape(shape)
    requested = None
    if body.get("outputs") is not None:
        wanted = body["outputs"]
        if not isinstance(wanted, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                                   for o in wanted):
            raise InvalidArgument("'outputs' must be a list of {\"name\": ...} objects")
        requested = [o["name"] for o in body["outputs"]]
        unknown = sorted(set(requested) - set(sig.outputs))
        if unknown:
            raise InvalidArgument(f"the model has no output {', '.join(map(str, unknown))} "
                                  f"(outputs: {', '.join(sorted(sig.outputs))})")
    return check_inputs(sig, inputs, limits), requested


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    out: list[Any] = []
    for v in data:
        out.extend(_flatten(v) if isinstance(v, list) else [v])
    return out


def v2_outputs(outputs: dict[str, np.ndarray], sig: Signature, requested: list[str] | None) -> list[dict[str, Any]]:
    out = []
    for name in requested or sorted(outputs):
        arr = outputs[name]
        dtype = "string" if arr.dtype == object else _dtype_name(arr.dtype)
        out.append({"name": name, "datatype": DTYPES.get(dtype, (None, dtype.upper()))[1], "shape": list(arr.shape),
                    "data": array_to_json(arr.reshape(-1), None)})
    return out


def v2_tensor_metadata(info: TensorInfo) -> dict[str, Any]:
    shape = [-1] if info.shape is None else [-1 if d is None else d for d in info.shape]
    return {"name": info.name, "datatype": DTYPES.get(info.dtype, (None, info.dtype.upper()))[1], "shape": shape}


# -- TensorProto (gRPC)


def proto_to_array(proto: Any, name: str) -> np.ndarray:
    import tensorflow as tf

    try:
        arr = tf.make_ndarray(proto)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"input '{name}': cannot read the TensorProto ({exc})") from exc
    if arr.dtype.kind == "S":
        arr = arr.astype(object)
    return arr


def array_to_proto(arr: np.ndarray) -> Any:
    import tensorflow as tf

    return tf.make_tensor_proto(arr)
