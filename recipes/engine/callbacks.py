"""Callbacks every recipe gets: crash-safe resume state and epoch checkpoints, early stopping,
TensorBoard, NaN guard, and metrics.json that survives resumes.

Every weight file is written under a temporary name in its folder and renamed into place, so a
kill at any instant leaves the previous states whole. On restart :func:`choose_resume_state`
picks the newest state that reads back (a damaged one is passed over with a one-line warning,
down to the epoch checkpoints) and the engine resumes there: the weights and optimizer state
are loaded by :class:`RestoreState`, the data pipeline skips the epochs already done, and
:class:`EpochSeeds` gives each epoch's dropout the generator state it has in an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import keras

from zoo.atomic import write_json_atomic
from zoo.recipes.engine.config import EarlyStoppingConfig
from zoo.rundir import RunDir

log = logging.getLogger(__name__)


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


def _save_weights_atomically(model: Any, final: str) -> None:
    """``model.save_weights`` (model and optimizer variables) to a temporary name, then rename."""
    folder, name = os.path.split(final)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{name}")  # Keras wants the .weights.h5 ending
    model.save_weights(tmp, overwrite=True)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)


def _remove_partial_writes(folder: str) -> None:
    """Temporary files a killed process left half-written (one trainer writes a run dir at a time)."""
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            if name.startswith(".tmp-"):
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(folder, name))


def _prune(states: list[tuple[int, str]], keep: int) -> None:
    for _, path in states[keep:]:
        with contextlib.suppress(OSError):
            os.remove(path)


class CrashSafeBackup(keras.callbacks.Callback):
    """After every epoch, the model and optimizer state as backup/epoch-NNNN.weights.h5, written
    atomically (the new state is complete before the old one is removed, so one whole state exists at
    every instant); the epoch checkpoints are the fallback should a state be damaged anyway."""

    KEEP = 1

    def __init__(self, out: RunDir):
        super().__init__()
        self.out = out

    def on_train_begin(self, logs: Any = None) -> None:
        _remove_partial_writes(self.out.backup_dir)

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        _save_weights_atomically(self.model, self.out.backup_state_path(epoch + 1))
        _prune(self.out.backup_states(), self.KEEP)


class EpochCheckpoints(keras.callbacks.Callback):
    """checkpoints/epoch-NNN.weights.h5 after every epoch, written atomically; the newest ``keep``
    are kept (0 keeps all)."""

    def __init__(self, out: RunDir, keep: int):
        super().__init__()
        self.out, self.keep = out, keep

    def on_train_begin(self, logs: Any = None) -> None:
        _remove_partial_writes(self.out.checkpoints_dir)

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        _save_weights_atomically(self.model, self.out.checkpoint_path(epoch + 1))
        if self.keep:
            _prune(self.out.checkpoints(), self.keep)


class EpochSeeds(keras.callbacks.Callback):
    """Reseed every random generator of the model (dropout's) at the start of each epoch from
    ``(seed, epoch, generator)``, so an epoch's randomness does not depend on the epochs run before it in
    this process: a run resumed at an epoch boundary draws the dropout masks an uninterrupted one draws.

    Keras saves no generator state with the weights; without this a resumed run restarts every generator
    at its initial seed and its weights drift from the uninterrupted run's.
    """

    def __init__(self, seed: int):
        super().__init__()
        self.seed = int(seed)

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        import numpy as np

        states = [v for v in self.model.variables if v.name == "seed_generator_state"]
        for k, state in enumerate(states):
            key = (self.seed * 1_000_003 + epoch * 7919 + k) % (2**31 - 1)
            state.assign(np.asarray([key, 0], dtype=state.dtype))


class RestoreState(keras.callbacks.Callback):
    """Load a resume state (weights and optimizer variables) once the model is built, before the first step."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def on_train_begin(self, logs: Any = None) -> None:
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)  # its variables must exist to be loaded
        self.model.load_weights(self.path)


def unreadable_reason(path: str) -> str | None:
    """Why a .weights.h5 file cannot be read back (cut short by a kill, not HDF5), or None if it can."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            for dataset in _datasets(f):
                dataset[()]  # reads every array: a truncated file fails here at the latest
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


def _datasets(group: Any) -> list[Any]:
    import h5py

    found: list[Any] = []
    group.visititems(lambda name, obj: found.append(obj) if isinstance(obj, h5py.Dataset) else None)
    return found


def _readable_states(out: RunDir, warn: bool = True) -> list[tuple[int, str]]:
    """Every readable resume state of a run (backup states, then epoch checkpoints), newest epoch first."""
    candidates = out.backup_states() + out.checkpoints()
    candidates.sort(key=lambda c: c[0], reverse=True)  # stable: a backup state before a checkpoint of its epoch
    readable = []
    for epoch, path in candidates:
        reason = unreadable_reason(path)
        if reason is None:
            readable.append((epoch, path))
        elif warn:
            log.warning("%s is unreadable (%s; a kill while it was written?); trying an older state", path, reason)
    return readable


def choose_resume_state(out: RunDir, peers: Sequence[RunDir] = ()) -> tuple[int, str] | None:
    """(epochs completed, weights file) to resume from: the newest readable backup state, else the newest
    readable epoch checkpoint; None for a fresh start. Each damaged file is named in a one-line warning.

    ``peers``: the state folders of the other workers of a multi-worker job (on the shared run dir).
    A synchronous job must resume every worker at the same epoch, so this is the newest epoch every one
    of them has a readable state of (a kill lands on all workers at once, not always between the same two
    saves): each worker computes the same answer from the same files before any of them trains.
    """
    own = _readable_states(out)
    if peers:
        shared = {e for e, _ in own}
        for peer in peers:
            shared &= {e for e, _ in _readable_states(peer, warn=False)}
        agreed = [(e, p) for e, p in own if e in shared]
        if own and not agreed:
            log.warning("no epoch has a readable state on every worker; starting again from epoch 1")
            return None
        if own and agreed[0] != own[0]:
            log.warning("resuming after epoch %d, the newest epoch every worker saved", agreed[0][0])
        own = agreed
    if own:
        return own[0]
    if out.backup_states() or out.checkpoints():
        log.warning("no readable state in %s; starting again from epoch 1", out.path)
    return None


def build_callbacks(out: RunDir, early: EarlyStoppingConfig, *, tensorboard: bool = True,
                    checkpoint_every_epoch: bool = True, keep_checkpoints: int = 2,
                    resume_from: str | None = None, seed: int = 0,
                    recipe_callbacks: Sequence[Any] = ()) -> list[Any]:
    """The callback list, in the order they must run:

    1. the resume state is restored, before anything else runs;
    2. each epoch's data order and dropout seeds are set;
    3. the recipe's own callbacks (per-epoch BLEU, EM...), after the state is restored and before the
       metrics log, so what they add to an epoch's logs lands in metrics.json, TensorBoard and early stopping;
    4. metrics.json, then the resume state of the same epoch: a kill between the two leaves the metrics
       ahead of the state (the resumed run redoes and rewrites that epoch), never behind (the resumed run
       would start after an epoch the metrics never recorded);
    5. NaN stop, epoch checkpoints, early stopping, TensorBoard.
    """
    callbacks: list[Any] = [RestoreState(resume_from)] if resume_from else []
    callbacks.append(EpochSeeds(seed))
    callbacks += list(recipe_callbacks)
    callbacks += [
        MetricsLog(out.metrics_path),
        CrashSafeBackup(out),
        keras.callbacks.TerminateOnNaN(),
    ]
    if checkpoint_every_epoch:
        callbacks.append(EpochCheckpoints(out, keep_checkpoints))
    if early.patience > 0:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=early.monitor, patience=early.patience, mode=early.mode, min_delta=early.min_delta,
            restore_best_weights=early.restore_best_weights, verbose=1))
    if tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(out.logs_dir, update_freq="epoch"))
    return callbacks
