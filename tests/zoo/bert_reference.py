"""An independent numpy BERT forward pass, written from the published architecture
(Devlin et al. 2019; Hugging Face BertModel's weight layout), for parity tests. It reads the
Hugging Face tensors directly and shares no code with zoo.models.bert."""

from __future__ import annotations

import math

import numpy as np


def _layer_norm(x, gamma, beta, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def _gelu(x):
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def _linear(x, w, b):
    return x @ w.T + b  # torch Linear: weight is (out, in)


def bert_forward(t, cfg, token_ids, segment_ids, mask):
    """Return (sequence_output [B, L, H], pooled_output [B, H]) in float64."""
    t = {k: v.astype(np.float64) for k, v in t.items() if v.dtype.kind == "f"}
    eps = cfg["layer_norm_eps"]
    heads = cfg["num_attention_heads"]
    B, L = token_ids.shape
    x = (t["embeddings.word_embeddings.weight"][token_ids]
         + t["embeddings.position_embeddings.weight"][np.arange(L)][None]
         + t["embeddings.token_type_embeddings.weight"][segment_ids])
    x = _layer_norm(x, t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"], eps)
    H = x.shape[-1]
    hd = H // heads
    neg = np.where(mask[:, None, None, :] > 0, 0.0, -1e9)
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."

        def split(y):
            return y.reshape(B, L, heads, hd).transpose(0, 2, 1, 3)

        q = split(_linear(x, t[p + "attention.self.query.weight"], t[p + "attention.self.query.bias"]))
        k = split(_linear(x, t[p + "attention.self.key.weight"], t[p + "attention.self.key.bias"]))
        v = split(_linear(x, t[p + "attention.self.value.weight"], t[p + "attention.self.value.bias"]))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd) + neg
        scores = scores - scores.max(-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(-1, keepdims=True)
        ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(B, L, H)
        attn = _linear(ctx, t[p + "attention.output.dense.weight"], t[p + "attention.output.dense.bias"])
        x = _layer_norm(attn + x, t[p + "attention.output.LayerNorm.weight"], t[p + "attention.output.LayerNorm.bias"],
                        eps)
        inter = _gelu(_linear(x, t[p + "intermediate.dense.weight"], t[p + "intermediate.dense.bias"]))
        out = _linear(inter, t[p + "output.dense.weight"], t[p + "output.dense.bias"])
        x = _layer_norm(out + x, t[p + "output.LayerNorm.weight"], t[p + "output.LayerNorm.bias"], eps)
    pooled = np.tanh(_linear(x[:, 0], t["pooler.dense.weight"], t["pooler.dense.bias"]))
    return x, pooled
