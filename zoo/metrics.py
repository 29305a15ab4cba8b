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


# -- SQuAD (question answering), as the official v1.1 / v2.0 evaluation scripts define it


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalization: lower case, drop ASCII punctuation, drop the articles a / an / the,
    collapse white space (in that order)."""
    import re
    import string

    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def squad_exact(prediction: str, truths: Sequence[str]) -> float:
    """1.0 if the normalized prediction equals a normalized ground truth (no truths: the prediction must
    be empty, SQuAD 2.0's unanswerable questions)."""
    truths = [t for t in truths if normalize_answer(t)] or [""]
    return float(max(normalize_answer(prediction) == normalize_answer(t) for t in truths))


def squad_f1(prediction: str, truths: Sequence[str]) -> float:
    """Best token-overlap F1 of the prediction against the ground truths (bags of normalized words)."""
    from collections import Counter

    truths = [t for t in truths if normalize_answer(t)] or [""]
    pred = normalize_answer(prediction).split()
    best = 0.0
    for truth in truths:
        gold = normalize_answer(truth).split()
        if not pred or not gold:  # an empty side scores 1 only against an empty side
            best = max(best, float(pred == gold))
            continue
        same = sum((Counter(pred) & Counter(gold)).values())
        if same:
            precision, recall = same / len(pred), same / len(gold)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def squad_scores(predictions: Sequence[str], truths: Sequence[Sequence[str]]) -> dict[str, float]:
    """Exact match and F1 over a set of questions, on SQuAD's 0-100 scale."""
    if len(predictions) != len(truths):
        raise ValueError(f"{len(predictions)} predictions but {len(truths)} sets of answers")
    if not predictions:
        return {"exact_match": 0.0, "f1": 0.0}
    n = len(predictions)
    return {"exact_match": 100.0 * sum(squad_exact(p, t) for p, t in zip(predictions, truths)) / n,
            "f1": 100.0 * sum(squad_f1(p, t) for p, t in zip(predictions, truths)) / n}
