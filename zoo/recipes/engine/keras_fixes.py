"""Work-arounds for Keras 3.15 ``fit`` under MultiWorkerMirroredStrategy (keras-team/keras#20585).

Two steps of Keras' TensorFlow trainer fail when the strategy is the collective multi-worker one:

1. Before the first step, ``_maybe_symbolic_build`` builds the model from one batch that it gets
   with ``strategy.reduce("MEAN", batch)``; the collective reduce rejects the per-replica batch.
   The build only needs shapes, so the first local replica's batch serves.
2. After each step, ``reduce_per_replica`` reduces the scalar metric results with
   ``strategy.reduce("MEAN", v, axis=0)``; a scalar has no axis 0. Scalars are reduced with
   ``axis=None`` (the mean over replicas), everything else as Keras does.

Both are applied only when a recipe runs with ``strategy=multi_worker``; the multi-worker test in
tests/recipes/test_engine.py fails if a Keras upgrade changes these internals.
"""

from __future__ import annotations

import types
from typing import Any

_PATCHED = False


def _local_first(strategy: Any, value: Any) -> Any:
    import tensorflow as tf

    if isinstance(value, tf.distribute.DistributedValues):
        return strategy.experimental_local_results(value)[0]
    return value


def _maybe_symbolic_build(self: Any, iterator: Any = None, data_batch: Any = None) -> None:
    import tensorflow as tf

    if self._distribute_strategy is None:
        return
    if iterator is not None:
        for _, _, it in iterator:
            data_batch = tf.nest.map_structure(lambda v: _local_first(self.distribute_strategy, v), next(it))
            break
    with self.distribute_strategy.scope():
        self._symbolic_build(data_batch=data_batch)


def _patch_reduce_per_replica() -> None:
    global _PATCHED
    if _PATCHED:
        return
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer

    original = trainer.reduce_per_replica

    def reduce_per_replica(values: Any, strategy: Any, reduction: str) -> Any:
        if not trainer._collective_all_reduce_multi_worker(strategy) or reduction not in ("auto", "mean"):
            return original(values, strategy, reduction)

        def reduce(v: Any) -> Any:
            rank = v.values[0].shape.rank if isinstance(v, tf.distribute.DistributedValues) else v.shape.rank
            return strategy.reduce("MEAN", v, axis=0 if rank else None)

        return tf.nest.map_structure(reduce, values)

    trainer.reduce_per_replica = reduce_per_replica
    _PATCHED = True


def enable_multi_worker_fit(model: Any) -> None:
    """Make ``model.fit`` / ``evaluate`` work under MultiWorkerMirroredStrategy on Keras 3.15."""
    model._maybe_symbolic_build = types.MethodType(_maybe_symbolic_build, model)
    _patch_reduce_per_replica()
