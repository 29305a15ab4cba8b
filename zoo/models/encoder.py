"""A Transformer encoder layer that can compute its output for the first tokens only.

``FastTransformerEncoder`` is keras-hub's ``TransformerEncoder`` (same sublayers, same variables and
variable paths, so checkpoints, importers and ``.keras`` files are unchanged) with its ``call``
rewritten to take ``query_length``: with ``query_length=k`` the layer still attends over every
token (keys and values come from the whole sequence) but computes queries, the attention output,
the feed-forward block and the layer norms for the first ``k`` positions only, returning
``[batch, k, hidden]``. A classifier reads only ``[CLS]`` from the last layer, so its last layer
needs ``k=1``: the Q/O projections and the feed-forward of ``length - 1`` tokens are skipped, about
a fifth of a 4-layer encoder's training FLOPs (Model Garden's ``BertEncoder`` offers the same as
``output_range``). The result for those positions is the full layer's, to float rounding (tested).

The projections run as plain 2-D matmuls on ``[batch * length, hidden]`` (Q, K, V from one
matmul against the three kernels side by side), where keras-hub's ``EinsumDense`` lowers to a
batched matmul against a broadcast kernel whose gradient is one small matmul per sequence plus a
sum; on the 2-core EPYC of the benchmarks that measured about equal, so it stays for the
query-subset path, not as a speed claim. The masked softmax, every dropout (same layers, same seed
generators, called in the same order) and both layer norms are keras-hub's own sublayers, so with
the whole sequence as queries the two calls draw the same dropout masks and agree to float rounding
(tested forward and backward). Pre-LN (``normalize_first=True``) and ``return_attention_scores``
take keras-hub's path.

In training under a half-precision policy, the block after attention (dropout, residual add and
layer norm; bias and GELU; the same again) runs as fused kernels from ``zoo.models.fused``: same
variables and functions, one pass per block each way, 0.92x the step time of bert_small in
``mixed_bfloat16`` on the benchmarks' CPU. float32 training and all inference keep Keras' ops.
"""

from __future__ import annotations

from typing import Any

import keras
import keras_hub
from keras import ops

from zoo.keras_compat import attention_parts, encoder_sublayers, merge_padding_and_attention_mask
from zoo.models import fused


def _flat_kernel(dense: Any, rows: int) -> Any:
    return ops.reshape(dense.kernel, (rows, -1))


@keras.saving.register_keras_serializable(package="zoo")
class FastTransformerEncoder(keras_hub.layers.TransformerEncoder):
    """keras-hub's post-LN ``TransformerEncoder``; ``query_length=k`` returns the first ``k`` positions only."""

    def call(self, inputs: Any, padding_mask: Any = None, attention_mask: Any = None, training: Any = None,
             return_attention_scores: bool = False, query_length: int | None = None) -> Any:
        if (return_attention_scores or self.normalize_first) and query_length is None:
            return super().call(inputs, padding_mask=padding_mask, attention_mask=attention_mask,
                                training=training, return_attention_scores=return_attention_scores)
        if return_attention_scores or self.normalize_first:
            raise ValueError("query_length needs a post-LN encoder layer without return_attention_scores")
        mask = merge_padding_and_attention_mask(inputs, padding_mask, attention_mask)
        residual = inputs if query_length is None else inputs[:, :query_length]
        if mask is not None and query_length is not None and mask.shape[1] != 1:
            mask = mask[:, :query_length]  # [B, L, L] -> [B, k, L]
        sub = encoder_sublayers(self)
        x = self._attention(sub.attention, inputs, mask, training, query_length)
        fusions = self._fusions(sub) if training is True else (False, False)
        if any(fusions):
            return self._fused_tail(sub, x, residual, *fusions)
        x = sub.attention_norm(sub.attention_dropout(x, training=training) + residual)
        residual = x
        x = sub.output(sub.intermediate(x))
        return sub.feedforward_norm(sub.feedforward_dropout(x, training=training) + residual)

    def _fusions(self, sub: Any) -> tuple[bool, bool]:
        """Which blocks run as fused kernels in training: (bias + GELU, add + layer norm)."""
        if not fused.worth_fusing(self.compute_dtype):
            return False, False
        dense = sub.intermediate
        gelu = (fused.fusable_activation(dense.activation) is not None and dense.use_bias
                and not getattr(dense, "lora_enabled", False) and dense.quantization_mode is None)
        norm = fused.fusable_layer_norm(sub.attention_norm) and fused.fusable_layer_norm(sub.feedforward_norm)
        return gelu, norm

    def _add_norm(self, x: Any, residual: Any, dropout: Any, norm: Any, fuse: bool) -> Any:
        if not fuse:
            return norm(dropout(x, training=True) + residual)
        if dropout.noise_shape is not None or dropout.rate <= 0:
            return fused.add_layer_norm(dropout(x, training=True), residual, norm.gamma, norm.beta, norm.epsilon)
        return fused.add_layer_norm(x, residual, norm.gamma, norm.beta, norm.epsilon,
                                    noise=fused.dropout_noise(dropout, x), rate=dropout.rate)

    def _fused_tail(self, sub: Any, x: Any, residual: Any, fuse_gelu: bool, fuse_norm: bool) -> Any:
        """The layer after attention, in training, with bias + GELU and dropout + add + layer norm as
        fused kernels (``zoo.models.fused``) where ``fuse_*`` says so: same functions, same variables,
        dropout from the same seed generators as the unfused path, each fused block one pass forward
        and one backward."""
        x = self._add_norm(x, residual, sub.attention_dropout, sub.attention_norm, fuse_norm)
        residual = x
        dense = sub.intermediate
        if fuse_gelu:
            shape = ops.shape(x)
            h = ops.matmul(ops.reshape(x, (-1, x.shape[-1])), dense.kernel)
            h = fused.bias_gelu(h, dense.bias, fused.fusable_activation(dense.activation))
            h = ops.reshape(h, (shape[0], shape[1], h.shape[-1]))
        else:
            h = dense(x)
        x = sub.output(h)
        return self._add_norm(x, residual, sub.feedforward_dropout, sub.feedforward_norm, fuse_norm)

    def _attention(self, mha: Any, x: Any, mask: Any, training: Any, query_length: int | None) -> Any:
        att = attention_parts(mha)
        heads, head_dim = mha.num_heads, mha.key_dim
        width = heads * head_dim
        shape = ops.shape(x)
        batch, length, hidden = shape[0], shape[1], x.shape[-1]
        dense = (att.query, att.key, att.value)
        if query_length is None:
            parts, queries = dense, length
        else:
            parts, queries = dense[1:], query_length
        projected = ops.matmul(ops.reshape(x, (-1, hidden)),
                               ops.concatenate([_flat_kernel(d, hidden) for d in parts], axis=1))
        if mha.use_bias:
            projected = projected + ops.concatenate([ops.reshape(d.bias, (width,)) for d in parts], axis=0)
        # Split before the transpose: the gradient of a split is one concatenation, that of slices
        # of a stacked tensor zero-padded copies summed (StridedSliceGrad + AddN).
        projected = ops.split(projected, len(parts), axis=1)
        if query_length is not None:
            query = ops.matmul(ops.reshape(x[:, :query_length], (-1, hidden)), _flat_kernel(dense[0], hidden))
            if mha.use_bias:
                query = query + ops.reshape(dense[0].bias, (width,))
            projected = [query, *projected]

        def heads_first(t: Any, rows: Any) -> Any:
            return ops.transpose(ops.reshape(t, (batch, rows, heads, head_dim)), (0, 2, 1, 3))

        query, key, value = heads_first(projected[0], queries), *(heads_first(t, length) for t in projected[1:])
        query = query * ops.cast(att.inverse_sqrt_key_dim, query.dtype)
        scores = ops.matmul(query, ops.swapaxes(key, -1, -2))  # [B, N, queries, L]
        if mask is not None:  # bool as in Keras' MultiHeadAttention (TFLite's int16x8 calibration needs it)
            mask = ops.expand_dims(ops.cast(mask, "bool"), axis=1)  # [B, 1, queries or 1, L], broadcast over heads
        probs = att.dropout(att.softmax(scores, mask=mask), training=training)
        context = ops.matmul(probs, value)  # [B, N, queries, D]
        context = ops.reshape(ops.transpose(context, (0, 2, 1, 3)), (-1, width))
        out = ops.matmul(context, ops.reshape(att.output.kernel, (width, hidden)))
        if mha.use_bias:
            out = out + att.output.bias
        return ops.reshape(out, (batch, queries, hidden))

    def compute_output_spec(self, inputs: Any, *args: Any, query_length: int | None = None, **kwargs: Any) -> Any:
        spec = super().compute_output_spec(inputs, *args, **kwargs)
        if query_length is None:
            return spec
        return keras.KerasTensor((inputs.shape[0], query_length, inputs.shape[-1]), dtype=spec.dtype)
