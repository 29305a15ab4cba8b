"""BERT on keras-nlp layers: the backbone, a masked-LM head tied to the token embedding, a classifier.

Inputs use KerasHub's names: ``token_ids``, ``segment_ids``, ``padding_mask`` (int32, ``[batch, length]``).
The backbone returns ``{"sequence_output": [B, L, H], "pooled_output": [B, H]}``.

Architecture as published (Devlin et al. 2019) and as Hugging Face ``BertModel`` computes it:
token + learned position + segment embeddings, LayerNorm (epsilon 1e-12), dropout; post-LN
Transformer encoder layers with exact (erf) GELU; pooler = dense + tanh on [CLS]. KerasHub's BERT
uses the tanh approximation of GELU; we default to the exact one so imported checkpoints match
the reference computation (``activation="gelu_approximate"`` selects the other).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras

from zoo.models.bert_config import BertConfig
from zoo.models.encoder import FastTransformerEncoder
from zoo.models.fused import gelu_approximate
from zoo.models.serialization import DataclassConfigMixin
from zoo.models.text_task import OwnsPreprocessor


def _activation(name: str) -> Any:
    if name == "gelu":
        return keras.activations.gelu  # exact: approximate=False
    if name == "gelu_approximate":
        return gelu_approximate
    return name


def _init(cfg: BertConfig) -> Any:
    return keras.initializers.TruncatedNormal(stddev=cfg.initializer_range)


@keras.saving.register_keras_serializable(package="zoo")
class BertBackbone(DataclassConfigMixin, keras.Model):
    """The BERT encoder as a functional Keras model."""

    def __init__(self, vocab_size: int = 30522, num_layers: int = 12, hidden_dim: int = 768, num_heads: int = 12,
                 intermediate_dim: int = 3072, max_sequence_length: int = 512, num_segments: int = 2,
                 dropout: float = 0.1, activation: str = "gelu", layer_norm_epsilon: float = 1e-12,
                 initializer_range: float = 0.02, dtype: Any = None, **kwargs: Any):
        import keras_hub

        cfg = BertConfig(vocab_size=vocab_size, num_layers=num_layers, hidden_dim=hidden_dim, num_heads=num_heads,
                         intermediate_dim=intermediate_dim, max_sequence_length=max_sequence_length,
                         num_segments=num_segments, dropout=dropout, activation=activation,
                         layer_norm_epsilon=layer_norm_epsilon, initializer_range=initializer_range)
        # Layers are created first and kept as attributes (KerasHub's pattern), so the checkpoint
        # importer and the MLM head can reach them by name.
        self.token_embedding = keras_hub.layers.ReversibleEmbedding(
            vocab_size, hidden_dim, embeddings_initializer=_init(cfg), dtype=dtype, name="token_embedding")
        self.position_embedding = keras_hub.layers.PositionEmbedding(
            max_sequence_length, initializer=_init(cfg), dtype=dtype, name="position_embedding")
        self.segment_embedding = keras.layers.Embedding(
            num_segments, hidden_dim, embeddings_initializer=_init(cfg), dtype=dtype, name="segment_embedding")
        self.embeddings_layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=dtype, name="embeddings_layer_norm")
        self.embeddings_dropout = keras.layers.Dropout(dropout, dtype=dtype, name="embeddings_dropout")
        self.transformer_layers = [
            FastTransformerEncoder(
                num_heads=num_heads, intermediate_dim=intermediate_dim, activation=_activation(activation),
                dropout=dropout, layer_norm_epsilon=layer_norm_epsilon, kernel_initializer=_init(cfg),
                normalize_first=False, dtype=dtype, name=f"transformer_layer_{i}")
            for i in range(num_layers)
        ]
        self.pooled_dense = keras.layers.Dense(hidden_dim, activation="tanh", kernel_initializer=_init(cfg),
                                               dtype=dtype, name="pooled_dense")

        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        segment_ids = keras.Input(shape=(None,), dtype="int32", name="segment_ids")
        padding_mask = keras.Input(shape=(None,), dtype="int32", name="padding_mask")
        tokens = self.token_embedding(token_ids)
        x = keras.layers.Add(dtype=dtype, name="embeddings_add")(
            [tokens, self.position_embedding(tokens), self.segment_embedding(segment_ids)])
        x = self.embeddings_dropout(self.embeddings_layer_norm(x))
        for layer in self.transformer_layers[:-1]:
            x = layer(x, padding_mask=padding_mask)
        last = self.transformer_layers[-1]
        # The pooler reads [CLS] only, so its path runs the last layer for that one query; a model
        # that uses only pooled_output (a classifier) never computes the rest of the last layer:
        # TensorFlow prunes the unused sequence_output branch from the traced step.
        pooled = self.pooled_dense(last(x, padding_mask=padding_mask, query_length=1)[:, 0, :])
        x = last(x, padding_mask=padding_mask)
        super().__init__(
            inputs={"token_ids": token_ids, "segment_ids": segment_ids, "padding_mask": padding_mask},
            outputs={"sequence_output": x, "pooled_output": pooled},
            dtype=dtype, **kwargs)
        self.config = dataclasses.replace(cfg, name=self.name)


class BertTaskModel(OwnsPreprocessor, keras.Model):
    """A task model on a ``BertBackbone`` (``self.backbone``): saved as the backbone's config plus the
    task's own constructor arguments (its ``preprocessor`` included, when it has one), rebuilt by calling
    the constructor with them. With a preprocessor, ``predict``/``evaluate``/``fit`` take raw strings
    (``zoo.models.text_task``)."""

    def get_config(self) -> dict[str, Any]:
        return {"backbone": keras.saving.serialize_keras_object(self.backbone), "name": self.name,
                "trainable": self.trainable, **self.preprocessor_config()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Any:
        config = cls.deserialize_preprocessor(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="zoo")
class BertClassifier(BertTaskModel):
    """Pooled [CLS] output -> dropout -> dense logits (float32). Give it the ``BertPreprocessor`` it was
    trained with and ``predict(["some text", ...])`` takes raw strings, also after ``zoo.load``."""

    def __init__(self, backbone: BertBackbone, num_classes: int = 2, dropout: float = 0.1,
                 preprocessor: Any = None, **kwargs: Any):
        inputs = backbone.input
        pooled = backbone(inputs)["pooled_output"]
        x = keras.layers.Dropout(dropout, name="classifier_dropout")(pooled)
        logits = keras.layers.Dense(num_classes, kernel_initializer=_init(backbone.config), dtype="float32",
                                    name="logits")(x)
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.num_classes = num_classes
        self.classifier_dropout = dropout

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_classes": self.num_classes, "dropout": self.classifier_dropout}


@keras.saving.register_keras_serializable(package="zoo")
class BertQuestionAnswerer(BertTaskModel):
    """Span extraction: a dense layer on every token gives a start and an end logit (float32 under mixed
    precision); outputs ``{"start_logits", "end_logits"}``, each ``[batch, sequence_length]``."""

    def __init__(self, backbone: BertBackbone, **kwargs: Any):
        inputs = dict(backbone.input)
        sequence = backbone(inputs)["sequence_output"]
        outputs = {}
        for name in ("start", "end"):
            logit = keras.layers.Dense(1, kernel_initializer=_init(backbone.config), dtype="float32",
                                       name=f"{name}_dense")(sequence)
            outputs[f"{name}_logits"] = keras.layers.Reshape((-1,), dtype="float32", name=f"{name}_logits")(logit)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.backbone = backbone



@keras.saving.register_keras_serializable(package="zoo")
class BertMaskedLM(BertTaskModel):
    """Predicts the tokens at ``mask_positions``; the output projection is the token embedding (tied)."""

    def __init__(self, backbone: BertBackbone, **kwargs: Any):
        import keras_hub

        inputs = dict(backbone.input)
        inputs["mask_positions"] = keras.Input(shape=(None,), dtype="int32", name="mask_positions")
        sequence = backbone({k: inputs[k] for k in ("token_ids", "segment_ids", "padding_mask")})["sequence_output"]
        cfg = backbone.config
        head = keras_hub.layers.MaskedLMHead(
            token_embedding=backbone.token_embedding, intermediate_activation=_activation(cfg.activation),
            kernel_initializer=_init(cfg), layer_norm_epsilon=cfg.layer_norm_epsilon, dtype=backbone.dtype_policy,
            name="mlm_head")
        logits = head(sequence, mask_positions=inputs["mask_positions"])
        logits = keras.layers.Activation("linear", dtype="float32", name="mlm_logits")(logits)
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        self.backbone = backbone



def build_bert(cfg: BertConfig, keras_module: Any = None) -> BertBackbone:
    """Build the backbone a BertConfig describes (Keras 3 only: keras-nlp layers)."""
    if keras_module is not None and keras_module is not keras:
        from zoo.errors import ConfigError

        raise ConfigError("BERT is built on keras-nlp layers and needs Keras 3; tf_keras is not supported")
    fields = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "name"}
    return BertBackbone(name=cfg.name, **fields)
