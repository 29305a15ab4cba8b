"""Text-generation metrics: corpus BLEU as sacreBLEU computes it, and exact match.

BLEU is sacreBLEU's own implementation (pinned), with its defaults: 13a tokenization, 4-grams,
exponential smoothing, one reference per hypothesis. Scores are on sacreBLEU's 0-100 scale.
"""

from __future__ import annotations

from collections.abc import Sequence


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (0-100) of ``hypotheses`` against one reference each."""
    import sacrebleu

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)


def _tokens(text: str) -> str:
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    return " ".join(Tokenizer13a()(text.strip()).split())


def exact_match(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Fraction of hypotheses equal to their reference after BLEU's 13a tokenization
    (so ``"a, b"`` and ``"a , b"`` match; case and words must be the same)."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if not hypotheses:
        return 0.0
    return sum(_tokens(h) == _tokens(r) for h, r in zip(hypotheses, references)) / len(hypotheses)
