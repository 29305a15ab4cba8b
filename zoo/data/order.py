"""Example order: a fresh, seeded permutation every epoch (the same for 1 or N replicas), and
length-bucketed batches for text pairs."""

from __future__ import annotations

from typing import Any

import numpy as np


def epoch_permutations(n: int, seed: int) -> Any:
    """An endless dataset of indices: a fresh permutation of 0..n-1 for every epoch.

    Each epoch's order is a pure function of (seed, epoch), unlike ``Dataset.shuffle``, whose
    order depends on how many iterators were opened before (Keras' MirroredStrategy path opens
    one extra to peek, which made 1-replica and 2-replica runs see different batches).
    """
    return _epoch_orders(n, seed).unbatch()


def _epoch_orders(n: int, seed: int) -> Any:
    """An endless dataset with one element per epoch: that epoch's permutation of 0..n-1."""
    import tensorflow as tf

    def one_epoch(epoch):
        return tf.random.experimental.stateless_shuffle(
            tf.range(n, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), epoch]))

    return tf.data.Dataset.counter(dtype=tf.int64).map(one_epoch)


def slices(tensors: Any, shuffle_seed: int | None = None, batch_size: int | None = None) -> Any:
    """``Dataset.from_tensor_slices(tensors)``; with ``shuffle_seed`` endless, in a fresh
    ``epoch_permutations`` order every epoch (``tensors`` is an array or a tuple of arrays).

    With ``batch_size`` the dataset yields batches: the index stream is batched first and each batch
    gathered with one op, the same batches as ``slices(...).batch(batch_size)`` without a gather
    and a dataset element per example (that per-example overhead was what the input pipeline cost
    a small model's step)."""
    import tensorflow as tf

    if shuffle_seed is None:
        ds = tf.data.Dataset.from_tensor_slices(tensors)
        return ds if batch_size is None else ds.batch(batch_size)
    constants = tf.nest.map_structure(tf.constant, tensors)
    n = len(tf.nest.flatten(tensors)[0])
    if batch_size is None:
        indices = epoch_permutations(n, shuffle_seed)
    else:  # the same batches as unbatch().batch(), cut from whole epochs without a dataset element per index
        indices = _epoch_orders(n, shuffle_seed).rebatch(batch_size)
    return indices.map(lambda i: tf.nest.map_structure(lambda t: tf.gather(t, i), constants))


def length_bucketed_batches(lengths: np.ndarray, batch: int, epochs: int, seed: int, window: int = 50) -> np.ndarray:
    """Index batches ``[epochs * steps, batch]`` that keep padding small, in a seeded order.

    Each epoch: a fresh permutation (a pure function of ``(seed, epoch)``), cut into windows of
    ``window`` batches; inside a window examples are sorted by length and cut into batches, and
    the batches of the epoch are shuffled. Every epoch has the same number of batches,
    ``len(lengths) // batch`` (the few examples left over differ from epoch to epoch).
    """
    n = len(lengths)
    batch = min(batch, n)
    steps = n // batch
    out = np.empty((epochs * steps, batch), np.int64)
    for epoch in range(epochs):
        rng = np.random.default_rng([seed, epoch])
        perm = rng.permutation(n)[:steps * batch]
        span = window * batch
        for start in range(0, len(perm), span):
            chunk = perm[start:start + span]
            perm[start:start + span] = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches = perm.reshape(steps, batch)
        out[epoch * steps:(epoch + 1) * steps] = batches[rng.permutation(steps)]
    return out
