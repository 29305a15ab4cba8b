"""Seeded example order: batching the index stream gives exactly the batches of batching the examples."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.data.order import slices


@pytest.mark.parametrize("per_epoch_gather", [True, False])
def test_batched_slices_equal_slices_then_batch_across_epochs(monkeypatch, per_epoch_gather):
    import zoo.data.order as order

    if not per_epoch_gather:  # data above the limit is gathered batch by batch: the same batches
        monkeypatch.setattr(order, "EPOCH_GATHER_BYTES", 0)
    x = np.arange(10 * 3, dtype=np.float32).reshape(10, 3)
    y = np.arange(10, dtype=np.int32)
    per_example = list(slices((x, y), shuffle_seed=7).batch(4).take(8).as_numpy_iterator())
    per_batch = list(slices((x, y), shuffle_seed=7, batch_size=4).take(8).as_numpy_iterator())
    assert len(per_batch) == 8  # 32 examples: crosses three epoch boundaries of 10
    for (xa, ya), (xb, yb) in zip(per_example, per_batch):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    seen = np.concatenate([b[1] for b in per_batch])[:30]
    for epoch in range(3):  # every epoch is a permutation of all examples
        assert sorted(seen[epoch * 10:(epoch + 1) * 10]) == list(range(10))
    assert not np.array_equal(seen[:10], seen[10:20])  # and a fresh one
    unshuffled = list(slices((x, y), batch_size=4).as_numpy_iterator())
    assert [len(b[1]) for b in unshuffled] == [4, 4, 2] and unshuffled[0][1].tolist() == [0, 1, 2, 3]


def test_epoch_orders_are_the_seeded_shuffles_runs_were_started_with():
    # Exact resume of a run started before a pipeline change needs the same order: pin it.
    import tensorflow as tf

    from zoo.data.order import epoch_permutations

    expected = np.concatenate([tf.random.experimental.stateless_shuffle(
        tf.range(10, dtype=tf.int64), seed=tf.constant([7, epoch], tf.int64)).numpy() for epoch in range(4)])
    np.testing.assert_array_equal(np.array(list(epoch_permutations(10, 7).take(40).as_numpy_iterator())), expected)
    batched = list(slices(np.arange(10), shuffle_seed=7, batch_size=3).take(13).as_numpy_iterator())
    np.testing.assert_array_equal(np.concatenate(batched), expected[:39])


def test_in_memory_images_fitted_once_give_the_batches_fitted_per_batch(monkeypatch):
    import zoo.data.images as images

    rng = np.random.default_rng(0)
    src = images.ImageSource(labels=np.arange(11, dtype=np.int32) % 3,
                             arrays=rng.integers(0, 255, (11, 6, 5, 1)).astype(np.uint8))
    once = list(images.image_dataset(src, (9, 7), 3, shuffle_seed=1, batch_size=4).take(6).as_numpy_iterator())
    monkeypatch.setattr(images, "PREFIT_BYTES", 0)
    streamed = list(images.image_dataset(src, (9, 7), 3, shuffle_seed=1, batch_size=4).take(6).as_numpy_iterator())
    assert once[0][0].shape == (4, 9, 7, 3) and once[0][0].dtype == np.float32
    for (xa, ya), (xb, yb) in zip(once, streamed):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
