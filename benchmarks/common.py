"""Shared timing helpers for the benchmarks."""

from __future__ import annotations

import os
import platform
import time
from typing import Any


def _step_times(model: Any, dataset: Any, steps: int) -> list[float]:
    import keras

    class StepTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.times: list[float] = []
            self._start = 0.0

        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            self._start = time.perf_counter()

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            self.times.append(time.perf_counter() - self._start)

    timer = StepTimer()
    model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[timer])
    return timer.times


def median_step_seconds(model: Any, dataset: Any, steps: int, warmup: int = 3) -> float:
    """Median wall time of one training step of a compiled model (after ``warmup`` steps to trace)."""
    import numpy as np

    model.fit(dataset, steps_per_epoch=warmup, epochs=1, verbose=0)
    return float(np.median(_step_times(model, dataset, steps)))


def paired_step_seconds(cases: dict[str, tuple[Any, Any]], steps: int, rounds: int = 4,
                        warmup: int = 3) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Step times of several compiled models measured in alternating rounds, so that a shared VM's
    slow spells hit every side alike. ``cases`` maps a name to ``(model, dataset)``; each round times
    ``steps`` steps of each. Returns each
    case's median step time over all rounds, and per round its median (for paired ratios: take the
    median over rounds of the per-round ratio)."""
    import numpy as np

    for model, dataset in cases.values():
        model.fit(dataset, steps_per_epoch=warmup, epochs=1, verbose=0)
    per_round: dict[str, list[float]] = {name: [] for name in cases}
    every: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, (model, dataset) in cases.items():
            times = _step_times(model, dataset, steps + 1)[1:]  # the first step re-enters fit
            per_round[name].append(float(np.median(times)))
            every[name].extend(times)
    return {name: float(np.median(t)) for name, t in every.items()}, per_round


def paired_ratio(per_round: dict[str, list[float]], numerator: str, denominator: str) -> float:
    """Median over rounds of ``numerator``'s step time over ``denominator``'s in the same round."""
    import numpy as np

    return float(np.median([a / b for a, b in zip(per_round[numerator], per_round[denominator])]))


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
