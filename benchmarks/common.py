"""Shared timing helpers for the benchmarks."""

from __future__ import annotations

import os
import platform
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


def cpu_name() -> str:
    """The CPU model, core count and the vector / matrix flags that decide TensorFlow's speed here."""
    try:
        with open("/proc/cpuinfo") as fh:
            text = fh.read()
    except OSError:
        return platform.processor()
    name = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "?")
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    shown = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{name} ({os.cpu_count()} cores; {' '.join(shown)})"
