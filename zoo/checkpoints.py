"""Import pretrained BERT checkpoints: Hugging Face directories and local keras-hub presets.

    backbone, preprocessor = zoo.import_hf_bert("path/to/hf_bert_dir", sequence_length=128)

A Hugging Face BERT directory holds ``config.json``, ``model.safetensors`` and ``vocab.txt``
(``tokenizer_config.json`` optional). Weights are read with safetensors' numpy loader (no
PyTorch needed) and mapped onto the zoo's ``BertBackbone`` by name; a missing tensor, an
unexpected shape or a vocabulary that does not fit the embedding is a ZooError listing what.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import numpy as np

from zoo.errors import ZooError

log = logging.getLogger(__name__)

# Hugging Face hidden_act -> our activation names.
HF_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_approximate", "gelu_pytorch_tanh": "gelu_approximate",
                  "gelu_fast": "gelu_approximate", "relu": "relu"}
_PREFIXES = ("bert.", "model.", "")


class CheckpointError(ZooError, ValueError):
    """A checkpoint that does not fit the model: missing tensors, wrong shapes, wrong vocabulary."""


def _read_json(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path!r}: {exc}") from exc


def hf_bert_config(directory: str) -> Any:
    """The zoo BertConfig equivalent to a Hugging Face ``config.json``."""
    from zoo.models.bert_config import BertConfig

    cfg_path = os.path.join(directory, "config.json")
    if not os.path.isfile(cfg_path):
        raise CheckpointError(f"{directory!r} has no config.json; expected a Hugging Face BERT directory "
                              "(config.json, model.safetensors, vocab.txt)")
    hf = _read_json(cfg_path)
    if hf.get("model_type", "bert") != "bert":
        raise CheckpointError(f"{cfg_path} describes a {hf.get('model_type')!r} model; only BERT is supported")
    act = hf.get("hidden_act", "gelu")
    if act not in HF_ACTIVATIONS:
        raise CheckpointError(f"{cfg_path}: hidden_act={act!r} is not supported ({', '.join(HF_ACTIVATIONS)})")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise CheckpointError(f"{cfg_path}: only absolute position embeddings are supported")
    try:
        return BertConfig(
            name=os.path.basename(os.path.normpath(directory)).replace("-", "_") or "bert",
            vocab_size=int(hf["vocab_size"]), num_layers=int(hf["num_hidden_layers"]),
            hidden_dim=int(hf["hidden_size"]), num_heads=int(hf["num_attention_heads"]),
            intermediate_dim=int(hf["intermediate_size"]),
            max_sequence_length=int(hf.get("max_position_embeddings", 512)),
            num_segments=int(hf.get("type_vocab_size", 2)), dropout=float(hf.get("hidden_dropout_prob", 0.1)),
            activation=HF_ACTIVATIONS[act], layer_norm_epsilon=float(hf.get("layer_norm_eps", 1e-12)),
            initializer_range=float(hf.get("initializer_range", 0.02)))
    except KeyError as exc:
        raise CheckpointError(f"{cfg_path} lacks the field {exc.args[0]!r}") from exc
    except (TypeError, ValueError) as exc:  # a non-numeric field, or values no BERT can have
        raise CheckpointError(f"{cfg_path} does not describe a valid BERT: {exc}") from exc


def _load_tensors(directory: str) -> dict[str, np.ndarray]:
    path = os.path.join(directory, "model.safetensors")
    if not os.path.isfile(path):
        if os.path.isfile(os.path.join(directory, "pytorch_model.bin")):
            raise CheckpointError(f"{directory!r} has only pytorch_model.bin; convert it to model.safetensors "
                                  "(safetensors' convert script) — reading pickles would need PyTorch")
        raise CheckpointError(f"{directory!r} has no model.safetensors")
    from safetensors.numpy import load_file

    try:
        tensors = load_file(path)
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"cannot read {path!r}: {exc}") from exc
    out = {}
    for name, value in tensors.items():
        for prefix in _PREFIXES:
            if name.startswith(prefix):
                out[name[len(prefix):]] = value
                break
    return out


def _hf_weight_map(cfg: Any) -> dict[str, tuple[str, Any]]:
    """Our variable path -> (HF tensor name, transform from the HF array to our shape)."""
    h, heads = cfg.hidden_dim, cfg.num_heads
    hd = h // heads
    m: dict[str, tuple[str, Any]] = {
        "token_embedding/embeddings": ("embeddings.word_embeddings.weight", None),
        "position_embedding/embeddings": ("embeddings.position_embeddings.weight", None),
        "segment_embedding/embeddings": ("embeddings.token_type_embeddings.weight", None),
        "embeddings_layer_norm/gamma": ("embeddings.LayerNorm.weight", None),
        "embeddings_layer_norm/beta": ("embeddings.LayerNorm.bias", None),
        "pooled_dense/kernel": ("pooler.dense.weight", np.transpose),
        "pooled_dense/bias": ("pooler.dense.bias", None),
    }
    for i in range(cfg.num_layers):
        ours, hf = f"transformer_layer_{i}", f"encoder.layer.{i}"
        for part in ("query", "key", "value"):
            m[f"{ours}/self_attention_layer/{part}/kernel"] = (
                f"{hf}.attention.self.{part}.weight", lambda w: w.T.reshape(h, heads, hd))
            m[f"{ours}/self_attention_layer/{part}/bias"] = (
                f"{hf}.attention.self.{part}.bias", lambda b: b.reshape(heads, hd))
        m[f"{ours}/self_attention_layer/attention_output/kernel"] = (
            f"{hf}.attention.output.dense.weight", lambda w: w.T.reshape(heads, hd, h))
        m[f"{ours}/self_attention_layer/attention_output/bias"] = (f"{hf}.attention.output.dense.bias", None)
        m[f"{ours}/self_attention_layer_norm/gamma"] = (f"{hf}.attention.output.LayerNorm.weight", None)
        m[f"{ours}/self_attention_layer_norm/beta"] = (f"{hf}.attention.output.LayerNorm.bias", None)
        m[f"{ours}/feedforward_intermediate_dense/kernel"] = (f"{hf}.intermediate.dense.weight", np.transpose)
        m[f"{ours}/feedforward_intermediate_dense/bias"] = (f"{hf}.intermediate.dense.bias", None)
        m[f"{ours}/feedforward_output_dense/kernel"] = (f"{hf}.output.dense.weight", np.transpose)
        m[f"{ours}/feedforward_output_dense/bias"] = (f"{hf}.output.dense.bias", None)
        m[f"{ours}/feedforward_layer_norm/gamma"] = (f"{hf}.output.LayerNorm.weight", None)
        m[f"{ours}/feedforward_layer_norm/beta"] = (f"{hf}.output.LayerNorm.bias", None)
    return m


def _old_name(name: str) -> str:
    # Checkpoints converted from TF1 BERT name LayerNorm parameters gamma/beta.
    return name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")


def load_hf_bert_weights(backbone: Any, tensors: dict[str, np.ndarray], source: str) -> None:
    """Assign HF tensors to ``backbone``; raises CheckpointError listing every problem at once."""
    variables = {v.path: v for v in backbone.weights}
    missing, mismatched, assignments = [], [], []
    for path, (hf_name, transform) in _hf_weight_map(backbone.config).items():
        array = tensors.get(hf_name, tensors.get(_old_name(hf_name)))
        if array is None:
            if hf_name.startswith("pooler."):
                log.warning("%s has no pooler weights; the pooler keeps its random initialization", source)
                continue
            missing.append(hf_name)
            continue
        var = variables[path]
        try:
            value = transform(array) if transform is not None and array.ndim > 0 else array
        except ValueError as exc:  # e.g. attention weights that cannot split into config.json's heads
            mismatched.append(f"{hf_name} {tuple(array.shape)} does not fit {path} {tuple(var.shape)} ({exc})")
            continue
        if tuple(value.shape) != tuple(var.shape):
            mismatched.append(f"{hf_name} {tuple(array.shape)} -> expected {tuple(var.shape)} for {path}")
            continue
        assignments.append((var, value))
    if missing or mismatched:
        lines = []
        if missing:
            lines.append(f"missing tensors ({len(missing)}): " + ", ".join(missing[:12])
                         + (" ..." if len(missing) > 12 else ""))
        if mismatched:
            lines.append(f"shape mismatches ({len(mismatched)}): " + "; ".join(mismatched[:8])
                         + (" ..." if len(mismatched) > 8 else ""))
        raise CheckpointError(f"{source} does not fit the BERT its config.json describes: " + " | ".join(lines))
    for var, value in assignments:
        var.assign(value.astype(var.dtype))


def import_hf_bert(directory: str, sequence_length: int = 128, **overrides: Any) -> tuple[Any, Any]:
    """Load a Hugging Face BERT directory as ``(BertBackbone, BertPreprocessor)``.

    Args:
      directory: holds config.json, model.safetensors and vocab.txt.
      sequence_length: the preprocessor's packed length (at most max_position_embeddings).
      overrides: BertConfig fields to change, e.g. ``dropout=0.0``.
    """
    import dataclasses

    from zoo.models.bert import build_bert
    from zoo.tokenizers import BertPreprocessor, load_vocabulary

    if not os.path.isdir(directory):
        raise CheckpointError(f"checkpoint directory {directory!r} does not exist")
    cfg = hf_bert_config(directory)
    if overrides:
        cfg = dataclasses.replace(cfg, **overrides)
    vocab = load_vocabulary(os.path.join(directory, "vocab.txt"))
    if len(vocab) != cfg.vocab_size:
        raise CheckpointError(
            f"vocab.txt in {directory!r} has {len(vocab)} tokens but the checkpoint's embedding has "
            f"{cfg.vocab_size} rows; use the vocab.txt that came with this checkpoint")
    if sequence_length > cfg.max_sequence_length:
        raise CheckpointError(f"sequence_length={sequence_length} exceeds the checkpoint's "
                              f"max_position_embeddings={cfg.max_sequence_length}")
    tensors = _load_tensors(directory)
    emb = tensors.get("embeddings.word_embeddings.weight")
    if emb is not None and emb.shape[0] != len(vocab):
        raise CheckpointError(f"vocab.txt has {len(vocab)} tokens but the embedding in model.safetensors has "
                              f"{emb.shape[0]} rows")
    lowercase = True
    tok_cfg = os.path.join(directory, "tokenizer_config.json")
    if os.path.isfile(tok_cfg):
        lowercase = bool(_read_json(tok_cfg).get("do_lower_case", True))
    backbone = build_bert(cfg)
    load_hf_bert_weights(backbone, tensors, os.path.join(directory, "model.safetensors"))
    return backbone, BertPreprocessor(vocab, sequence_length=sequence_length, lowercase=lowercase)


def import_keras_hub_bert(preset_dir: str, sequence_length: int = 128) -> tuple[Any, Any]:
    """Load a local keras-hub BERT preset directory as ``(BertBackbone, BertPreprocessor)``.

    keras-hub's BERT uses the tanh approximation of GELU, so the imported backbone does too.
    """
    import keras_hub

    from zoo.models.bert import BertBackbone
    from zoo.tokenizers import BertPreprocessor, load_vocabulary

    if not os.path.isfile(os.path.join(preset_dir, "config.json")):
        raise CheckpointError(f"{preset_dir!r} is not a keras-hub preset directory (no config.json)")
    try:
        source = keras_hub.models.BertBackbone.from_preset(preset_dir)
    except Exception as exc:  # keras-hub raises ValueError/KeyError/OSError for unusable presets
        raise CheckpointError(f"cannot load keras-hub preset {preset_dir!r}: {exc}") from exc
    vocab_path = os.path.join(preset_dir, "assets", "tokenizer", "vocabulary.txt")
    vocab = load_vocabulary(vocab_path)
    if len(vocab) != source.vocabulary_size:
        raise CheckpointError(f"{vocab_path} has {len(vocab)} tokens but the preset's embedding has "
                              f"{source.vocabulary_size} rows")
    ours = BertBackbone(
        vocab_size=source.vocabulary_size, num_layers=source.num_layers, hidden_dim=source.hidden_dim,
        num_heads=source.num_heads, intermediate_dim=source.intermediate_dim,
        max_sequence_length=source.max_sequence_length, num_segments=source.num_segments, dropout=source.dropout,
        activation="gelu_approximate", name=os.path.basename(os.path.normpath(preset_dir)).replace("-", "_"))
    src = {v.path.split("/", 1)[-1] if v.path.startswith("bert_backbone") else v.path: v for v in source.weights}
    problems = []
    for var in ours.weights:
        match = src.get(var.path)
        if match is None or tuple(match.shape) != tuple(var.shape):
            problems.append(var.path)
        else:
            var.assign(match.value)
    if problems:
        raise CheckpointError(f"preset {preset_dir!r} does not map onto the zoo BERT: {', '.join(problems[:10])}")
    return ours, BertPreprocessor(vocab, sequence_length=sequence_length)
