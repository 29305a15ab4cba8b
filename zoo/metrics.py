"""Evaluation metrics: corpus BLEU as sacreBLEU computes it, exact match, macro-F1.

BLEU is sacreBLEU's own implementation (pinned), with its defaults: 13a tokenization, 4-grams,
exponential smoothing, one reference per hypothesis. Scores are on sacreBLEU's 0-100 scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


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


def macro_f1(y_true: Any, y_pred: Any, num_classes: int) -> float:
    """Unweighted mean of per-class F1 (a class neither present nor predicted is left out)."""
    import numpy as np

    scores = []
    for c in range(num_classes):
        tp = np.sum((y_pred == c) & (y_true == c))
        fp = np.sum((y_pred == c) & (y_true != c))
        fn = np.sum((y_pred != c) & (y_true == c))
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0
