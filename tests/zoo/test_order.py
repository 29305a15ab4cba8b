"""Seeded example order: batching the index stream gives exactly the batches of batching the examples."""

from __future__ import annotations

import numpy as np

from zoo.data.order import slices


def test_batched_slices_equal_slices_then_batch_across_epochs():
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
