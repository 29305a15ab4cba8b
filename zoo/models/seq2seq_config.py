"""Encoder-decoder Transformer configs and presets (no TensorFlow import, so the registry lists them cheaply)."""

from __future__ import annotations

from dataclasses import dataclass

from zoo.config import Preset, check_choice, check_range
from zoo.errors import ConfigError

POSITIONS = ("sinusoidal", "learned")
FFN_ACTIVATIONS = ("relu", "gelu")


@dataclass(frozen=True)
class Seq2SeqConfig:
    """Transformer encoder-decoder hyper-parameters (defaults: Vaswani et al. 2017, base).

    ``target_vocab_size`` 0 means one vocabulary shared by source and target (one embedding
    matrix for both sides). ``tie_embeddings`` makes the output projection the transpose of the
    target embedding. ``normalize_first`` selects pre-LN layers (plus a final LayerNorm after each
    stack); the original paper is post-LN. ``vocab_size`` is replaced by the size of the vocabulary
    a recipe learns from its data.
    """

    name: str = "transformer_base"
    vocab_size: int = 32000
    target_vocab_size: int = 0
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    hidden_dim: int = 512
    num_heads: int = 8
    intermediate_dim: int = 2048
    max_source_length: int = 256
    max_target_length: int = 256
    dropout: float = 0.1
    activation: str = "relu"
    position: str = "sinusoidal"
    tie_embeddings: bool = True
    normalize_first: bool = False
    layer_norm_epsilon: float = 1e-6
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        for field in ("vocab_size", "num_encoder_layers", "num_decoder_layers", "hidden_dim", "num_heads",
                      "intermediate_dim", "max_source_length", "max_target_length"):
            check_range(field, getattr(self, field), 1)
        check_range("target_vocab_size", self.target_vocab_size, 0)
        if self.hidden_dim % self.num_heads:
            raise ConfigError(f"hidden_dim={self.hidden_dim} is not divisible by num_heads={self.num_heads}")
        check_range("dropout", self.dropout, 0.0, 1.0, high_inclusive=False)
        check_choice("activation", self.activation, FFN_ACTIVATIONS)
        check_choice("position", self.position, POSITIONS)

    @property
    def shared_vocabulary(self) -> bool:
        return self.target_vocab_size == 0

    @property
    def output_vocab_size(self) -> int:
        return self.target_vocab_size or self.vocab_size

    def parameter_count(self) -> int:
        """Trainable weights computed from the shapes (no model is built)."""
        h, i = self.hidden_dim, self.intermediate_dim
        attention = 4 * (h * h + h)
        norm = 2 * h
        ffn = h * i + i + i * h + h
        encoder = self.num_encoder_layers * (attention + norm + ffn + norm)
        decoder = self.num_decoder_layers * (2 * (attention + norm) + ffn + norm)
        embeddings = self.vocab_size * h + (0 if self.shared_vocabulary else self.target_vocab_size * h)
        if self.position == "learned":
            embeddings += (self.max_source_length + self.max_target_length) * h
        output = 0 if self.tie_embeddings else h * self.output_vocab_size + self.output_vocab_size
        final_norms = 2 * norm if self.normalize_first else 0
        return embeddings + encoder + decoder + output + final_norms


def _transformer(name: str, encoder: int, decoder: int, hidden: int, heads: int, ffn: int, note: str) -> Preset:
    cfg = Seq2SeqConfig(name=name, num_encoder_layers=encoder, num_decoder_layers=decoder, hidden_dim=hidden,
                        num_heads=heads, intermediate_dim=ffn)
    return Preset(cfg, f"Transformer encoder-decoder, {encoder}+{decoder} layers, hidden {hidden}, {heads} heads"
                       f"{note}")


SEQ2SEQ_PRESETS = {p.config.name: p for p in (
    _transformer("transformer_tiny", 2, 2, 128, 4, 512, ""),
    _transformer("transformer_small", 3, 3, 256, 4, 1024, ""),
    _transformer("transformer_base", 6, 6, 512, 8, 2048, " (Vaswani et al. 2017, base)"),
)}
