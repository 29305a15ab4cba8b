"""TFLite conversion (from a SavedModel: ``from_keras_model`` breaks on Keras 3) and a runner
on the LiteRT interpreter that hides quantized input/output scaling.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from zoo.errors import DataError, ExportError
from zoo.rundir import RunDir

log = logging.getLogger(__name__)

# format name -> (file name, description)
TFLITE_FORMATS = {
    "tflite": ("model_float32.tflite", "float32"),
    "tflite_float16": ("model_float16.tflite", "float16 weights"),
    "tflite_dynamic": ("model_dynamic_int8.tflite", "dynamic-range int8 (hybrid kernels)"),
    "tflite_int8_weights": ("model_int8_weights.tflite", "int8 weights (per channel / per row), float activations"),
    "tflite_int8": ("model_int8.tflite", "full int8, int8 input/output"),
    "tflite_int16x8": ("model_int16x8.tflite", "int16 activations, int8 weights, float input/output"),
}
# Formats calibrated on a representative dataset (the run's calibration.npz).
CALIBRATED = ("tflite_int8", "tflite_int16x8")
# Converted from a graph of their own (traced under int16x8_friendly_graph), not the shared source.
SEPARATE_SOURCE = ("tflite_int16x8",)


def representative_dataset(calibration: np.ndarray, input_shape: Iterable[Any]) -> Callable[[], Iterable[list]]:
    """Calibration inputs for full-int8 conversion, one example at a time, after checking their shape."""
    expected = tuple(input_shape)[1:]
    if calibration.ndim != len(expected) + 1 or any(
            e is not None and e != a for e, a in zip(expected, calibration.shape[1:])):
        raise DataError(
            f"representative data has shape {calibration.shape[1:]} per example but the model takes {expected}"
        )
    if not np.issubdtype(calibration.dtype, np.number):
        raise DataError(f"representative data has dtype {calibration.dtype}; expected numeric model inputs")
    data = calibration.astype(np.float32)

    def gen():
        for i in range(len(data)):
            yield [data[i:i + 1]]

    return gen


# TF Text ops that TFLite runs through tensorflow-text's registrar (no Flex delegate needed).
TF_TEXT_TFLITE_OPS = ("FastBertNormalize", "FastWordpieceTokenizeWithOffsets", "FastWordpieceDetokenize",
                      "FastSentencepieceTokenize", "WhitespaceTokenizeWithOffsetsV2", "TFText>Ngrams",
                      "TFText>ByteSplitWithOffsets", "TFText>ByteSplitByOffsets")


def describe_ops(content: bytes) -> str:
    """Which non-builtin ops a converted model needs: 'builtin only', TF Text custom ops, or Flex."""
    text_ops = [op for op in TF_TEXT_TFLITE_OPS if op.encode() in content]
    flex = b"Flex" in content
    parts = ["builtin"]
    if text_ops:
        parts.append("TF Text custom ops (" + ", ".join(text_ops) + ")")
    if flex:
        parts.append("Flex (SELECT_TF_OPS)")
    return " + ".join(parts) if len(parts) > 1 else "builtin only"


def convert_formats(saved_model_dir: str, fmts: Iterable[str], calibration: np.ndarray | None = None,
                    input_shape: Iterable[Any] | None = None,
                    custom_ops: bool = False) -> Iterator[tuple[str, bytes]]:
    """Convert a SavedModel into each TFLite format in ``fmts``, yielding ``(format, content)``.

    The float32 conversion is done at most once and shared: it is a format of its own, the source
    of ``tflite_int8_weights`` and of the per-row embedding repair of ``tflite_dynamic``.
    """
    from zoo.export import tflite_weights

    cache: dict[str, bytes] = {}

    def float_model() -> bytes:
        if "float" not in cache:
            cache["float"] = convert_saved_model(saved_model_dir, "tflite", custom_ops=custom_ops)
        return cache["float"]

    for fmt in fmts:
        if fmt == "tflite":
            content = float_model()
        elif fmt == "tflite_int8_weights":
            content = tflite_weights.int8_weights(float_model())
        else:
            content = convert_saved_model(saved_model_dir, fmt, calibration, input_shape, custom_ops)
            if fmt == "tflite_dynamic":
                content = tflite_weights.per_row_embeddings(content, float_model)
        yield fmt, content


def convert_saved_model(saved_model_dir: str, fmt: str, calibration: np.ndarray | None = None,
                        input_shape: Iterable[Any] | None = None, custom_ops: bool = False) -> bytes:
    """Convert the ``serving_default`` signature of a SavedModel with the TFLite converter.

    ``custom_ops`` lets TF Text ops through as custom ops (run with tensorflow-text's registrar).
    Formats made by rewriting the float model (``tflite_int8_weights``) go through
    :func:`convert_formats`.
    """
    import tensorflow as tf

    if fmt not in TFLITE_FORMATS or fmt in ("tflite_int8_weights", "tflite_int16x8"):
        known = ", ".join(f for f in TFLITE_FORMATS if f not in ("tflite_int8_weights", "tflite_int16x8"))
        raise ExportError(f"the TFLite converter does not make {fmt!r}; it makes: {known}")
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=["serving_default"])
    converter.allow_custom_ops = custom_ops
    if fmt == "tflite_float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif fmt == "tflite_dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif fmt == "tflite_int8":
        if calibration is None or len(calibration) == 0:
            raise ExportError(f"{fmt} needs calibration data ({RunDir.CALIBRATION} in the run dir)")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset(calibration, input_shape)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    try:
        return converter.convert()
    except Exception as exc:  # the converter raises ConverterError and plain Exceptions
        raise ExportError(f"TFLite conversion to {fmt} failed: {str(exc).splitlines()[0][:500]}") from exc


def convert_int16x8(saved_model_dir: str, representative: Callable[[], Iterable[Any]]) -> bytes:
    """int16 activations, int8 weights (float input/output) from a SavedModel traced under
    ``int16x8_friendly_graph``. Ops without a 16x8 kernel stay float (TFLITE_BUILTINS fallback, as
    the TFLite 16x8 guide documents)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=["serving_default"])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        return converter.convert()
    except Exception as exc:  # the converter raises ConverterError and plain Exceptions
        raise ExportError(f"TFLite conversion to tflite_int16x8 failed: {str(exc).splitlines()[0][:500]}") from exc


def interpreter_class() -> Any:
    """The LiteRT interpreter class (TF's own ``tf.lite.Interpreter`` only if LiteRT is missing)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - the pinned stack has it
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    return Interpreter


class TFLiteRunner:
    """Runs a TFLite model on float inputs, quantizing and dequantizing where the model is int8."""

    def __init__(self, model_content: bytes, num_threads: int = 1):
        self.interpreter = interpreter_class()(model_content=model_content, num_threads=num_threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self._batch = int(self.input["shape"][0])

    def _resize(self, batch: int) -> None:
        if batch != self._batch:
            shape = list(self.input["shape"])
            shape[0] = batch
            self.interpreter.resize_tensor_input(self.input["index"], shape)
            self.interpreter.allocate_tensors()
            self.input = self.interpreter.get_input_details()[0]
            self.output = self.interpreter.get_output_details()[0]
            self._batch = batch

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self._resize(len(x))
        dtype = self.input["dtype"]
        if np.issubdtype(dtype, np.integer):
            scale, zero = self.input["quantization"]
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)
        else:
            x = x.astype(dtype)
        self.interpreter.set_tensor(self.input["index"], x)
        self.interpreter.invoke()
        out = self.interpreter.get_tensor(self.output["index"])
        if np.issubdtype(out.dtype, np.integer):
            scale, zero = self.output["quantization"]
            out = (out.astype(np.float32) - zero) * scale
        return out.astype(np.float32)


class TextTFLiteRunner:
    """Runs a string-input TFLite model (TF Text custom ops) through its signature: ``outputs`` gives every
    output, calling it the logits of a classifier."""

    def __init__(self, model_content: bytes, num_threads: int = 1):
        import tensorflow_text as tf_text
        from ai_edge_litert.interpreter import InterpreterWithCustomOps

        self.interpreter = InterpreterWithCustomOps(
            model_content=model_content, num_threads=num_threads,
            custom_op_registerers=tf_text.tflite_registrar.SELECT_TFTEXT_OPS)
        self.runner = self.interpreter.get_signature_runner("serving_default")

    def outputs(self, **texts: Any) -> dict[str, np.ndarray]:
        """Every output of the signature for the named string inputs (str or bytes)."""
        inputs = {k: np.array([t.encode("utf-8") if isinstance(t, str) else t for t in v], dtype=object)
                  for k, v in texts.items()}
        return self.runner(**inputs)

    def __call__(self, **texts: np.ndarray) -> np.ndarray:
        return np.asarray(self.outputs(**texts)["logits"], dtype=np.float32)
