"""Train / evaluation splits: deterministic, seeded, the same on every machine."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def stratified_split(labels: np.ndarray, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Split indices into len(fractions)+1 parts, each class divided in the same proportions."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        start = 0
        for p, frac in enumerate(fractions):
            n = int(round(frac * len(idx)))
            parts[p + 1].extend(idx[start:start + n])
            start += n
        parts[0].extend(idx[start:])
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def train_eval_split(n: int, fraction: float, seed: int, labels: np.ndarray | None = None,
                     min_eval: int = 0, sort: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, eval indices): ``fraction`` of ``n`` examples held out, at least ``min_eval``.

    With ``labels`` the split is stratified (each class divided in the same proportion); without,
    a seeded permutation is cut, each side sorted unless ``sort=False`` (then in permutation order).
    """
    if labels is not None:
        train_idx, eval_idx = stratified_split(labels, (fraction,), seed)
        return train_idx, eval_idx
    perm = np.random.default_rng(seed).permutation(n)
    n_eval = min(n, max(min_eval, int(round(n * fraction))))
    train_idx, eval_idx = perm[n_eval:], perm[:n_eval]
    return (np.sort(train_idx), np.sort(eval_idx)) if sort else (train_idx, eval_idx)
