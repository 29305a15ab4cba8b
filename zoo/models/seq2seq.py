"""Encoder-decoder Transformer (Vaswani et al. 2017) on keras-nlp layers, with cached decoding steps.

Inputs (int32, ``[batch, length]``)::

    encoder_token_ids, encoder_padding_mask    the source
    decoder_token_ids, decoder_padding_mask    the target shifted right ([START] y1 ... y_n-1)

Output: logits ``[batch, target_length, target_vocab]`` (float32 under mixed precision too).

Token embeddings are scaled by sqrt(hidden) and added to sinusoidal (or learned) positions;
TransformerEncoder / TransformerDecoder layers (post-LN as the paper, or pre-LN with a final
LayerNorm); the output projection is the transposed target embedding when tied.

For generation the model exposes the pieces a decoding loop needs (``zoo.models.decoding``):
``encode`` once, ``start_decoding`` (the first step: fills each layer's cross-attention
key/value cache from the encoder output) and ``decode_step`` (one new token: reads and extends
the self-attention cache), so each generated token costs one decoder step.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import keras
from keras import ops

from zoo.models.seq2seq_config import Seq2SeqConfig
from zoo.models.serialization import DataclassConfigMixin

INPUT_NAMES = ("encoder_token_ids", "encoder_padding_mask", "decoder_token_ids", "decoder_padding_mask")


@keras.saving.register_keras_serializable(package="zoo")
class Seq2SeqTransformer(DataclassConfigMixin, keras.Model):
    """The encoder-decoder as a functional Keras model (layers kept as attributes for decoding)."""

    def __init__(self, vocab_size: int = 32000, target_vocab_size: int = 0, num_encoder_layers: int = 6,
                 num_decoder_layers: int = 6, hidden_dim: int = 512, num_heads: int = 8, intermediate_dim: int = 2048,
                 max_source_length: int = 256, max_target_length: int = 256, dropout: float = 0.1,
                 activation: str = "relu", position: str = "sinusoidal", tie_embeddings: bool = True,
                 normalize_first: bool = False, layer_norm_epsilon: float = 1e-6, initializer_range: float = 0.02,
                 dtype: Any = None, **kwargs: Any):
        import keras_hub

        cfg = Seq2SeqConfig(
            vocab_size=vocab_size, target_vocab_size=target_vocab_size, num_encoder_layers=num_encoder_layers,
            num_decoder_layers=num_decoder_layers, hidden_dim=hidden_dim, num_heads=num_heads,
            intermediate_dim=intermediate_dim, max_source_length=max_source_length,
            max_target_length=max_target_length, dropout=dropout, activation=activation, position=position,
            tie_embeddings=tie_embeddings, normalize_first=normalize_first, layer_norm_epsilon=layer_norm_epsilon,
            initializer_range=initializer_range)
        # Embeddings ~ N(0, 1/hidden), scaled by sqrt(hidden): unit-variance inputs, and as the tied
        # output projection, logits of unit scale (the paper's shared-embedding scheme).
        emb_init = keras.initializers.RandomNormal(stddev=hidden_dim ** -0.5)
        dense_init = keras.initializers.TruncatedNormal(stddev=initializer_range)
        self.source_embedding = keras_hub.layers.ReversibleEmbedding(
            vocab_size, hidden_dim, tie_weights=True, embeddings_initializer=emb_init, dtype=dtype,
            name="source_embedding")
        if cfg.shared_vocabulary:
            self.target_embedding = self.source_embedding
        else:
            self.target_embedding = keras_hub.layers.ReversibleEmbedding(
                target_vocab_size, hidden_dim, tie_weights=True, embeddings_initializer=emb_init, dtype=dtype,
                name="target_embedding")
        if position == "learned":
            self.source_position = keras_hub.layers.PositionEmbedding(
                max_source_length, initializer=dense_init, dtype=dtype, name="source_position")
            self.target_position = keras_hub.layers.PositionEmbedding(
                max_target_length, initializer=dense_init, dtype=dtype, name="target_position")
        else:
            self.source_position = keras_hub.layers.SinePositionEncoding(dtype=dtype, name="source_position")
            self.target_position = keras_hub.layers.SinePositionEncoding(dtype=dtype, name="target_position")
        self.source_dropout = keras.layers.Dropout(dropout, dtype=dtype, name="source_dropout")
        self.target_dropout = keras.layers.Dropout(dropout, dtype=dtype, name="target_dropout")
        layer_args = {"intermediate_dim": intermediate_dim, "num_heads": num_heads, "dropout": dropout,
                      "activation": activation, "layer_norm_epsilon": layer_norm_epsilon,
                      "kernel_initializer": dense_init, "normalize_first": normalize_first, "dtype": dtype}
        self.encoder_layers = [keras_hub.layers.TransformerEncoder(**layer_args, name=f"encoder_layer_{i}")
                               for i in range(num_encoder_layers)]
        self.decoder_layers = [keras_hub.layers.TransformerDecoder(**layer_args, name=f"decoder_layer_{i}")
                               for i in range(num_decoder_layers)]
        self.encoder_norm = self.decoder_norm = None
        if normalize_first:
            self.encoder_norm = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, dtype=dtype,
                                                                name="encoder_norm")
            self.decoder_norm = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, dtype=dtype,
                                                                name="decoder_norm")
        self.output_projection = None
        if not tie_embeddings:
            self.output_projection = keras.layers.Dense(cfg.output_vocab_size, kernel_initializer=dense_init,
                                                        dtype=dtype, name="output_projection")

        inputs = {name: keras.Input(shape=(None,), dtype="int32", name=name) for name in INPUT_NAMES}
        encoded = self.encode(inputs["encoder_token_ids"], inputs["encoder_padding_mask"])
        x = self._embed_target(inputs["decoder_token_ids"])
        for layer in self.decoder_layers:
            x = layer(x, encoded, decoder_padding_mask=inputs["decoder_padding_mask"],
                      encoder_padding_mask=inputs["encoder_padding_mask"])
        logits = self._logits(x)
        super().__init__(inputs=inputs, outputs=logits, dtype=dtype, **kwargs)
        self.config = dataclasses.replace(cfg, name=self.name)

    # ------------------------------------------------------------------ pieces shared by fit and decoding
    def _embed(self, embedding: Any, position: Any, dropout: Any, ids: Any, start_index: Any = 0,
               training: Any = None) -> Any:
        x = embedding(ids) * ops.cast(math.sqrt(self.hidden_dim), embedding.compute_dtype)
        x = x + position(x, start_index=start_index)
        return dropout(x, training=training)

    @property
    def hidden_dim(self) -> int:
        """The model width, read from the built embedding."""
        return self.source_embedding.output_dim

    def _embed_target(self, ids: Any, start_index: Any = 0, training: Any = None) -> Any:
        return self._embed(self.target_embedding, self.target_position, self.target_dropout, ids, start_index,
                           training)

    def _logits(self, x: Any) -> Any:
        if self.decoder_norm is not None:
            x = self.decoder_norm(x)
        logits = self.target_embedding(x, reverse=True) if self.output_projection is None \
            else self.output_projection(x)
        return ops.cast(logits, "float32")

    def encode(self, token_ids: Any, padding_mask: Any, training: Any = None) -> Any:
        """Encoder output ``[batch, source_length, hidden]``."""
        x = self._embed(self.source_embedding, self.source_position, self.source_dropout, token_ids,
                        training=training)
        for layer in self.encoder_layers:
            x = layer(x, padding_mask=padding_mask, training=training)
        if self.encoder_norm is not None:
            x = self.encoder_norm(x)
        return x

    # ------------------------------------------------------------------ cached decoding
    def _head_dims(self) -> tuple[int, int]:
        heads = self.decoder_layers[0].num_heads
        return heads, self.hidden_dim // heads

    def start_decoding(self, first_ids: Any, encoded: Any, encoder_mask: Any, max_length: int) -> tuple[Any, Any]:
        """Decode position 0 (``first_ids`` ``[batch, 1]``, normally [START]) and build the caches.

        Returns ``(logits [batch, vocab], cache)``; the cache is a nest of tensors with batch first
        (per layer: self-attention keys/values for ``max_length`` positions and cross-attention
        keys/values of the encoder output; then the encoder output and its mask), so beam search
        can reorder it.
        """
        batch = ops.shape(encoded)[0]
        heads, head_dim = self._head_dims()
        dtype = self.decoder_layers[0].compute_dtype
        # One cache tensor per layer (not one stacked tensor): a step then rewrites only the slot it adds.
        self_cache = tuple(ops.zeros((batch, 2, max_length, heads, head_dim), dtype=dtype)
                           for _ in self.decoder_layers)
        cross_cache = tuple(ops.zeros((batch, 2, ops.shape(encoded)[1], heads, head_dim), dtype=dtype)
                            for _ in self.decoder_layers)
        return self._step(first_ids, (self_cache, cross_cache, encoded, encoder_mask), 0, fill_cross=True)

    def decode_step(self, ids: Any, cache: tuple[Any, ...], index: Any) -> tuple[Any, Any]:
        """Decode position ``index`` from its input token ``ids`` ``[batch, 1]``: ``(logits [batch, vocab], cache)``."""
        return self._step(ids, cache, index, fill_cross=False)

    def _step(self, ids: Any, cache: tuple[Any, ...], index: Any, fill_cross: bool) -> tuple[Any, Any]:
        self_cache, cross_cache, encoded, encoder_mask = cache
        x = self._embed_target(ids, start_index=index, training=False)
        new_self, new_cross = [], []
        for i, layer in enumerate(self.decoder_layers):
            x, layer_self, layer_cross = layer(
                x, encoded, encoder_padding_mask=encoder_mask,
                self_attention_cache=self_cache[i], self_attention_cache_update_index=index,
                cross_attention_cache=cross_cache[i],
                cross_attention_cache_update_index=0 if fill_cross else None, training=False)
            new_self.append(layer_self)
            new_cross.append(layer_cross)
        logits = self._logits(x)[:, 0]
        cross = tuple(new_cross) if fill_cross else cross_cache
        return logits, (tuple(new_self), cross, encoded, encoder_mask)

    def decode_full(self, target_ids: Any, encoded: Any, encoder_mask: Any) -> Any:
        """Logits for every target position by running the whole decoder (no cache): ``[batch, T, vocab]``."""
        x = self._embed_target(target_ids, training=False)
        for layer in self.decoder_layers:
            x = layer(x, encoded, encoder_padding_mask=encoder_mask, training=False)
        return self._logits(x)

    # ------------------------------------------------------------------ serialization


def build_seq2seq(cfg: Seq2SeqConfig, keras_module: Any = None) -> Seq2SeqTransformer:
    """Build a ``Seq2SeqTransformer`` from a config (Keras 3 only: keras-nlp layers need it)."""
    if keras_module is not None and keras_module is not keras:
        from zoo.errors import ConfigError

        raise ConfigError("the seq2seq Transformer is built on keras-nlp layers and needs Keras 3, not tf_keras")
    fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "name"}
    return Seq2SeqTransformer(**fields, name=cfg.name)
