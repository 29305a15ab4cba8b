"""Callbacks every recipe gets: per-epoch checkpoints, crash resume, early stopping,
TensorBoard, NaN guard, and metrics.json that survives resumes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Any

import keras

from zoo.atomic import write_json_atomic
from zoo.config import check_choice, check_range
from zoo.rundir import RunDir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EarlyStoppingConfig:
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs (0 = off)."""

    monitor: str = "val_loss"
    patience: int = 0
    mode: str = "auto"
    min_delta: float = 0.0
    restore_best_weights: bool = True

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, ("auto", "min", "max"))
        check_range("patience", self.patience, 0)
        check_range("min_delta", self.min_delta, 0.0)


class MetricsLog(keras.callbacks.Callback):
    """Keeps ``metrics.json`` current after every epoch, across crashes and resumes.

    On a resumed run the epochs already recorded before the resume point are kept and the
    resume is noted in ``resumes``, so the file always describes the whole run.
    """

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.data: dict[str, Any] = {"epochs": [], "resumes": []}
        self._started = False
        self._epoch_start = 0.0

    def on_train_begin(self, logs: Any = None) -> None:
        if os.path.isfile(self.path):
            try:
                with open(self.path, encoding="utf-8") as fh:
                    self.data = json.load(fh)
            except ValueError:
                log.warning("metrics file %s was unreadable; starting it afresh", self.path)
        self.data.setdefault("epochs", [])
        self.data.setdefault("resumes", [])

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        if not self._started:
            self._started = True
            kept = [e for e in self.data["epochs"] if e["epoch"] <= epoch]
            if epoch > 0:
                self.data["resumes"].append({"epoch": epoch + 1, "time": time.time()})
                log.info("resuming at epoch %d", epoch + 1)
            self.data["epochs"] = kept
            self.data["first_epoch_this_process"] = epoch + 1
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        entry = {"epoch": epoch + 1, "seconds": round(time.perf_counter() - self._epoch_start, 3)}
        for key, value in (logs or {}).items():
            value = float(value)
            entry[key] = value if math.isfinite(value) else str(value)
        lr = getattr(self.model.optimizer, "learning_rate", None)
        if lr is not None:
            try:
                entry["learning_rate"] = float(keras.ops.convert_to_numpy(lr))
            except (TypeError, ValueError):
                pass
        self.data["epochs"] = [e for e in self.data["epochs"] if e["epoch"] != epoch + 1] + [entry]
        write_json_atomic(self.path, self.data)


def build_callbacks(out: RunDir, early: EarlyStoppingConfig, *, tensorboard: bool = True,
                    checkpoint_every_epoch: bool = True) -> list[Any]:
    """The standard callback list; order matters: the backup is restored before anything else runs."""
    callbacks: list[Any] = [
        # Saves model + optimizer + epoch at each epoch end; on restart resumes there.
        keras.callbacks.BackupAndRestore(out.backup_dir),
        keras.callbacks.TerminateOnNaN(),
        MetricsLog(out.metrics_path),
    ]
    if checkpoint_every_epoch:
        os.makedirs(out.checkpoints_dir, exist_ok=True)
        callbacks.append(keras.callbacks.ModelCheckpoint(out.checkpoint_pattern(), save_weights_only=True))
    if early.patience > 0:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=early.monitor, patience=early.patience, mode=early.mode, min_delta=early.min_delta,
            restore_best_weights=early.restore_best_weights, verbose=1))
    if tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(out.logs_dir, update_freq="epoch"))
    return callbacks
