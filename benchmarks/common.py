"""Shared timing helpers for the benchmarks."""

from __future__ import annotations

import time
from typing import Any


def median_step_seconds(model: Any, dataset: Any, steps: int, warmup: int = 3) -> float:
    """Median wall time of one training step of a compiled model (after ``warmup`` steps to trace)."""
    import keras
    import numpy as np

    class StepTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.times: list[float] = []
            self._start = 0.0

        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            self._start = time.perf_counter()

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            self.times.append(time.perf_counter() - self._start)

    model.fit(dataset, steps_per_epoch=warmup, epochs=1, verbose=0)
    timer = StepTimer()
    model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[timer])
    return float(np.median(timer.times))
