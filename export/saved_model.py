"""SavedModels whose ``serving_default`` signature takes raw inputs (pixels, strings).

Every classifier signature ends in the same serving head (:func:`classification_outputs`):
``logits``, ``probabilities``, ``label`` and, when the run has class names, ``class_name``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from zoo.errors import ExportError


def save_serving_module(model: Any, serve: Any, specs: Sequence[Any], path: str) -> None:
    """``tf.saved_model.save`` of a tf.Module holding the model's variables and one signature.

    Written by hand rather than with Keras' ExportArchive / ``model.export``: those (Keras 3.15)
    save every variable twice (``variables/i`` and ``_all_variables/i``), doubling the SavedModel.
    """
    import tensorflow as tf

    module = tf.Module()
    module.model_variables = [v.value for v in model.variables]  # the tf.Variables, saved once
    fn = tf.function(serve, input_signature=list(specs), autograph=False)
    module.serve = fn
    try:
        tf.saved_model.save(module, path, signatures={"serving_default": fn.get_concrete_function()})
    except (ValueError, TypeError) as exc:
        raise ExportError(f"could not write a SavedModel of {model.name}: {exc}") from exc


def classification_outputs(logits: Any, class_names: Any = None) -> dict[str, Any]:
    """The serving head of every classifier export: float32 ``logits``, ``probabilities``,
    ``label`` (int32) and, with ``class_names`` (a tf.string constant), ``class_name``."""
    import tensorflow as tf

    logits = tf.cast(logits, tf.float32)
    label = tf.argmax(logits, axis=-1, output_type=tf.int32)
    out = {"logits": logits, "probabilities": tf.nn.softmax(logits, axis=-1), "label": label}
    if class_names is not None:
        out["class_name"] = tf.gather(class_names, label)
    return out


def input_signature(spec: Any) -> Any:
    """The ``tf.TensorSpec`` of a run's raw input (a ``zoo.rundir.SignatureTensor``)."""
    import tensorflow as tf

    return tf.TensorSpec(tuple(spec.shape), tf.dtypes.as_dtype(spec.dtype), name=spec.name)


def write_classifier_saved_model(model: Any, path: str, spec: Any, class_names: Sequence[str] = ()) -> None:
    """A SavedModel whose ``serving_default`` maps the raw input (``spec``, e.g. float32 images) through
    the model and the serving head."""
    import tensorflow as tf

    names = tf.constant(list(class_names)) if class_names else None
    save_serving_module(model, lambda x: classification_outputs(model(x, training=False), names),
                        [input_signature(spec)], path)


def write_text_classifier_saved_model(model: Any, preprocessor: Any, path: str, input_names: Sequence[str],
                                     class_names: Sequence[str] = (), logits_only: bool = False) -> None:
    """A SavedModel whose ``serving_default`` takes raw strings (``text``, and ``text_pair`` for pairs).

    Tokenization and packing run inside the graph (tensorflow-text ops: TF Serving needs a build
    that includes them). Returns the serving head's outputs, or logits only (the TFLite source).
    """
    import tensorflow as tf

    names = tf.constant(list(class_names)) if class_names else None
    specs = [tf.TensorSpec([None], tf.string, name=n) for n in input_names]

    def serve(*texts):
        logits = model(preprocessor(texts if len(texts) > 1 else texts[0]), training=False)
        if logits_only:
            return {"logits": tf.cast(logits, tf.float32)}
        return classification_outputs(logits, names)

    save_serving_module(model, serve, specs, path)


def write_logits_saved_model(model: Any, path: str, spec: Any) -> None:
    """A SavedModel with one signature returning logits only: the source for TFLite conversion.

    On-device code takes the argmax itself; a single float output keeps full-int8 conversion
    (int8 input and output) simple.
    """
    import tensorflow as tf

    save_serving_module(model, lambda x: {"logits": tf.cast(model(x, training=False), tf.float32)},
                        [input_signature(spec)], path)


def write_translator_saved_model(translator: Any, path: str) -> None:
    """A SavedModel whose ``serving_default`` maps ``text`` (tf.string [batch]) to ``translation``
    (tf.string [batch]): tokenization, encoder, the decoding loop and detokenization in one graph."""
    import tensorflow as tf

    def serve(text):
        # An empty (or blank) source translates to an empty string, as `zoo translate` prints an empty line.
        translation = translator.target_tokenizer.detokenize(translator.generate_ids(text))
        blank = tf.equal(tf.strings.length(tf.strings.strip(text)), 0)
        return {"translation": tf.where(blank, tf.constant(""), translation)}

    save_serving_module(translator.model, serve, [tf.TensorSpec([None], tf.string, name="text")], path)
