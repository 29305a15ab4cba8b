"""BERT configs and presets (no TensorFlow import, so the registry can list them cheaply)."""

from __future__ import annotations

from dataclasses import dataclass

from zoo.config import Preset, check_choice, check_range
from zoo.errors import ConfigError

ACTIVATIONS = ("gelu", "gelu_approximate", "relu")


@dataclass(frozen=True)
class BertConfig:
    """BERT hyper-parameters (defaults: BERT-base uncased)."""

    name: str = "bert_base"
    vocab_size: int = 30522
    num_layers: int = 12
    hidden_dim: int = 768
    num_heads: int = 12
    intermediate_dim: int = 3072
    max_sequence_length: int = 512
    num_segments: int = 2
    dropout: float = 0.1
    activation: str = "gelu"
    layer_norm_epsilon: float = 1e-12
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        for field in ("vocab_size", "num_layers", "hidden_dim", "num_heads", "intermediate_dim",
                      "max_sequence_length", "num_segments"):
            check_range(field, getattr(self, field), 1)
        if self.hidden_dim % self.num_heads:
            raise ConfigError(f"hidden_dim={self.hidden_dim} is not divisible by num_heads={self.num_heads}")
        check_range("dropout", self.dropout, 0.0, 1.0, high_inclusive=False)
        check_choice("activation", self.activation, ACTIVATIONS)

    def parameter_count(self) -> int:
        """Weights of the backbone, pooler included, computed from the shapes (no model is built)."""
        h, i = self.hidden_dim, self.intermediate_dim
        embeddings = (self.vocab_size + self.max_sequence_length + self.num_segments) * h + 2 * h
        layer = 4 * (h * h + h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h
        return embeddings + self.num_layers * layer + h * h + h


def _bert(name: str, layers: int, hidden: int, heads: int, description: str) -> Preset:
    """A BERT preset; the feed-forward width is 4x hidden, as in every published size."""
    cfg = BertConfig(name=name, num_layers=layers, hidden_dim=hidden, num_heads=heads, intermediate_dim=4 * hidden)
    return Preset(cfg, f"BERT encoder, {layers} layers, hidden {hidden}, {heads} heads ({description})")


# Sizes from the BERT paper (base, large), Turc et al. 2019 (tiny ... medium) and MiniLM (Wang et al. 2020).
BERT_PRESETS = {p.config.name: p for p in (
    _bert("bert_tiny", 2, 128, 2, "Turc et al. 2019"),
    _bert("bert_mini", 4, 256, 4, "Turc et al. 2019"),
    _bert("bert_small", 4, 512, 8, "Turc et al. 2019"),
    _bert("bert_medium", 8, 512, 8, "Turc et al. 2019"),
    _bert("bert_base", 12, 768, 12, "Devlin et al. 2019"),
    _bert("bert_large", 24, 1024, 16, "Devlin et al. 2019"),
    _bert("minilm_l6_h384", 6, 384, 12, "MiniLM-L6-H384, Wang et al. 2020"),
)}
