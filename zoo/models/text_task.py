"""Text task models that own their preprocessor, so a loaded ``.keras`` model takes raw strings.

As KerasHub's ``TextClassifier``: the model keeps its ``preprocessor`` (a ``BertPreprocessor``: vocabulary,
sequence length, casing) and saves it in its config; ``predict``, ``evaluate`` and ``fit`` accept raw
text and tokenize it in a ``tf.data`` pipeline before the model sees it::

    model = zoo.load("runs/bert_classify-.../")
    model.predict(["a great film", "dull and too long"])        # logits [2, num_classes]
    model.predict([("premise", "hypothesis")])                  # pair models: (first, second) pairs

Anything else (the token-id dicts the recipes feed, a ``tf.data.Dataset``) passes through unchanged, so
training pipelines that tokenize ahead keep working. Calling the model directly (``model(x)``) takes token
ids, as KerasHub's tasks do; exports build their own string-in graphs (``zoo export``).

Raw text is: a string, a list of strings, a NumPy array of strings ``[N]`` (or ``[N, 2]`` for pairs), a
tuple ``(firsts, seconds)`` of two such lists, or a list of ``(first, second)`` pairs.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

DEFAULT_BATCH = 32


def _is_text(x: Any) -> bool:
    if isinstance(x, (str, bytes)):
        return True
    if isinstance(x, np.ndarray):
        return x.dtype.kind in "USO" and x.size > 0 and isinstance(x.flat[0], (str, bytes))
    if isinstance(x, list):
        return bool(x) and all(isinstance(t, (str, bytes)) for t in x)
    return getattr(getattr(x, "dtype", None), "name", None) == "string"  # a tf.string tensor


def text_columns(x: Any) -> tuple[np.ndarray, ...] | None:
    """``(texts,)`` or ``(firsts, seconds)`` as NumPy string arrays if ``x`` is raw text, else None."""
    if isinstance(x, tuple) and len(x) == 2 and all(
            _is_text(list(t) if isinstance(t, tuple) else t) and not isinstance(t, (str, bytes)) for t in x):
        return tuple(np.asarray(list(np.asarray(t, dtype=object).reshape(-1)), dtype=object) for t in x)
    if (isinstance(x, list) and x and all(isinstance(p, tuple) and len(p) == 2 for p in x)
            and all(isinstance(t, (str, bytes)) for p in x for t in p)):
        return tuple(np.asarray([p[i] for p in x], dtype=object) for i in (0, 1))
    if not _is_text(x):
        return None
    if isinstance(x, (str, bytes)):
        x = [x]
    arr = np.asarray(x.numpy() if hasattr(x, "numpy") else x, dtype=object)
    if arr.ndim == 2 and arr.shape[1] == 2:
        return arr[:, 0], arr[:, 1]
    return (arr.reshape(-1),)


class OwnsPreprocessor:
    """Mixed into a ``keras.Model`` whose inputs are its ``preprocessor``'s outputs (see the module doc).

    The class must set ``self.preprocessor`` (or None) in ``__init__`` and add
    :meth:`preprocessor_config` to its ``get_config``.
    """

    preprocessor: Any = None

    def preprocessor_config(self) -> dict[str, Any]:
        if self.preprocessor is None:
            return {}
        return {"preprocessor": keras.saving.serialize_keras_object(self.preprocessor)}

    @staticmethod
    def deserialize_preprocessor(config: dict[str, Any]) -> dict[str, Any]:
        config = dict(config)
        if isinstance(config.get("preprocessor"), dict):
            config["preprocessor"] = keras.saving.deserialize_keras_object(config["preprocessor"])
        return config

    def _text_dataset(self, x: Any, y: Any, batch_size: int | None, shuffle: bool = False) -> Any:
        """A batched, tokenized dataset when ``x`` is raw text and the model has a preprocessor, else None."""
        if self.preprocessor is None:
            return None
        columns = text_columns(x)
        if columns is None:
            return None
        import tensorflow as tf

        n = len(columns[0])
        if y is not None and len(y) != n:
            from zoo.errors import DataError

            raise DataError(f"{n} texts but {len(y)} labels; pass one label per text")
        texts = tuple(tf.constant([t.decode() if isinstance(t, bytes) else str(t) for t in c], tf.string)
                      for c in columns)
        ds = tf.data.Dataset.from_tensor_slices(texts if y is None else (texts, np.asarray(y)))
        if shuffle:
            ds = ds.shuffle(n, reshuffle_each_iteration=True)
        pre = self.preprocessor

        def tokenize(t: Any) -> Any:
            return pre(t if len(t) == 2 else t[0])

        ds = ds.batch(batch_size or DEFAULT_BATCH)
        ds = ds.map((lambda *t: tokenize(t)) if y is None else (lambda t, labels: (tokenize(t), labels)),
                    num_parallel_calls=tf.data.AUTOTUNE)
        return ds.prefetch(tf.data.AUTOTUNE)

    def predict(self, x: Any, batch_size: Any = None, **kwargs: Any) -> Any:
        ds = self._text_dataset(x, None, batch_size)
        if ds is None:
            return super().predict(x, batch_size=batch_size, **kwargs)
        return super().predict(ds, **kwargs)

    def evaluate(self, x: Any = None, y: Any = None, batch_size: Any = None, **kwargs: Any) -> Any:
        ds = self._text_dataset(x, y, batch_size)
        if ds is None:
            return super().evaluate(x, y, batch_size=batch_size, **kwargs)
        return super().evaluate(ds, **kwargs)

    def fit(self, x: Any = None, y: Any = None, batch_size: Any = None, **kwargs: Any) -> Any:
        ds = None if y is None else self._text_dataset(x, y, batch_size, shuffle=kwargs.pop("shuffle", True))
        if ds is None:
            return super().fit(x, y, batch_size=batch_size, **kwargs)
        return super().fit(ds, **kwargs)


@keras.saving.register_keras_serializable(package="zoo")
class TokenIdsClassifier(OwnsPreprocessor, keras.Model):
    """A classifier of token ids (``TextCNN``) behind BERT's input dict and a preprocessor: the distilled
    student that is not a BERT. Reads ``token_ids`` only; ``[PAD]`` is id 0 like any token (as in Kim 2014)."""

    def __init__(self, classifier: Any, preprocessor: Any = None, **kwargs: Any):
        inputs = {k: keras.Input(shape=(None,), dtype="int32", name=k)
                  for k in ("token_ids", "segment_ids", "padding_mask")}
        super().__init__(inputs, classifier(inputs["token_ids"]), **kwargs)
        self.classifier = classifier
        self.preprocessor = preprocessor

    def get_config(self) -> dict[str, Any]:
        return {"classifier": keras.saving.serialize_keras_object(self.classifier), "name": self.name,
                "trainable": self.trainable, **self.preprocessor_config()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Any:
        config = cls.deserialize_preprocessor(config)
        config["classifier"] = keras.saving.deserialize_keras_object(config["classifier"])
        return cls(**config)
