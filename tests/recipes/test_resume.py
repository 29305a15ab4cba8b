"""Crash-safe resume: kills at any instant (inside saves too), damaged states, retention."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import zoo
from tests.conftest import FAST
from zoo.recipes.engine.run import train
from zoo.rundir import RunDir

SMALL = {**FAST, "train.checkpoint_every_epoch": True, "model.dropout": 0.0, "train.batch_size": 64}


class StopAfter:
    """An extra callback that aborts training after epoch ``n`` (after the state of that epoch is saved)."""

    def __new__(cls, n):
        import keras

        class Stop(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch + 1 == n:
                    raise RuntimeError("simulated crash")

        return Stop()


def _truncate(path):
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) // 2)


@pytest.mark.slow
def test_damaged_state_falls_back_to_an_older_one(tmp_path, caplog):
    run = RunDir(str(tmp_path / "run"))
    cfg = {**SMALL, "train.epochs": 4}
    with pytest.raises(RuntimeError, match="simulated crash"):
        train("image_classify", run.path, cfg, verbose=0, extra_callbacks=[StopAfter(3)])
    assert [e for e, _ in run.backup_states()] == [3]   # the newest resume state
    assert [e for e, _ in run.checkpoints()] == [3, 2]  # keep_checkpoints=2
    # What a kill in the middle of the epoch-3 writes would leave, were they not atomic: both files cut short.
    _truncate(run.backup_state_path(3))
    _truncate(run.checkpoint_path(3))
    with caplog.at_level(logging.WARNING):
        result = train("image_classify", run.path, cfg, verbose=0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("epoch-0003.weights.h5 is unreadable" in w for w in warnings), warnings
    assert any("epoch-003.weights.h5 is unreadable" in w for w in warnings), warnings
    assert result.metrics["resumes"][-1]["epoch"] == 3  # resumed after epoch 2, the newest readable state
    assert [e["epoch"] for e in result.metrics["epochs"]] == [1, 2, 3, 4]
    assert not os.path.exists(run.backup_dir)  # a finished run keeps no resume state
    assert [e for e, _ in run.checkpoints()] == [4, 3]


def test_a_kill_between_the_metrics_and_the_state_of_an_epoch_loses_no_epoch(tmp_path, monkeypatch):
    """The instant the kill loop once hit: the epoch's writes are not one transaction, so their order must
    leave metrics.json ahead of the resume state, never behind (it lost epoch 4 when the state came first)."""
    from zoo.recipes.engine import callbacks

    run = RunDir(str(tmp_path / "run"))
    cfg = {**SMALL, "train.epochs": 4}
    real_write = callbacks.write_json_atomic

    def write_then_die(path, data, *args, **kwargs):
        real_write(path, data, *args, **kwargs)
        if [e["epoch"] for e in data.get("epochs", [])][-1:] == [3]:
            raise RuntimeError("killed after the epoch-3 metrics")

    monkeypatch.setattr(callbacks, "write_json_atomic", write_then_die)
    with pytest.raises(RuntimeError, match="killed after the epoch-3 metrics"):
        train("image_classify", run.path, cfg, verbose=0)
    monkeypatch.setattr(callbacks, "write_json_atomic", real_write)
    assert [e for e, _ in run.backup_states()] == [2]  # the epoch-3 state was not written yet
    result = train("image_classify", run.path, cfg, verbose=0)
    assert result.metrics["resumes"][-1]["epoch"] == 3  # epoch 3 is done again, its metrics rewritten
    assert [e["epoch"] for e in result.metrics["epochs"]] == [1, 2, 3, 4]


def test_keep_checkpoints_zero_keeps_all(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    train("image_classify", run.path, {**SMALL, "train.epochs": 3, "train.keep_checkpoints": 0}, verbose=0)
    assert [e for e, _ in run.checkpoints()] == [3, 2, 1]
    assert not [f for f in os.listdir(run.checkpoints_dir) if f.startswith(".tmp")]


# The child: a training that may be SIGKILLed after a random delay, or right after a weights file was
# written (with that file cut to half first: what a kill in the middle of the write leaves). A timer kill
# always lands before the run ends: on a machine slower than the reference run's, the fit may end first,
# and the child then waits for the kill before writing the finished model.
CHILD = textwrap.dedent("""
    import os, random, signal, sys, threading
    import keras

    mode, delay, seed = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    real_save = keras.Model.save_weights

    def save_weights(self, filepath, *args, **kwargs):
        real_save(self, filepath, *args, **kwargs)
        if mode == "in_save" and rng.random() < 0.35:
            with open(filepath, "r+b") as fh:
                fh.truncate(os.path.getsize(filepath) // 2)
            os.kill(os.getpid(), signal.SIGKILL)

    keras.Model.save_weights = save_weights
    real_fit = keras.Model.fit

    def fit(self, *args, **kwargs):  # the clock starts with training, whatever the machine's start-up time
        if mode != "timer":
            return real_fit(self, *args, **kwargs)
        threading.Timer(delay, lambda: os.kill(os.getpid(), signal.SIGKILL)).start()
        history = real_fit(self, *args, **kwargs)
        threading.Event().wait()  # the kill comes; the run must not finish first
        return history

    keras.Model.fit = fit
    from zoo.recipes import image_classify

    code = image_classify.main(sys.argv[4:])
    os._exit(code)  # the timer thread must not outlive a finished run
""")


@pytest.mark.slow
def test_sigkill_at_random_instants_always_finishes_with_the_uninterrupted_weights(tmp_path):
    # Dropout (the recipe's default) and augmentation on: resumed epochs draw the same masks and the same
    # augmentation as uninterrupted ones.
    args = ["--epochs", "6", "--quiet", "--batch-size", "32", "--set", "train.tensorboard=false",
            "--set", "augment.rotation=0.03", "--set", "augment.zoom=0.1"]
    reference = RunDir(str(tmp_path / "reference"))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", CHILD, "none", "0", "0", "--run-dir", reference.path, *args],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]

    with open(reference.metrics_path) as fh:
        fit_seconds = json.load(fh)["train_seconds_this_process"]  # this machine's time for the whole fit

    run = RunDir(str(tmp_path / "killed"))
    rng = random.Random(7)
    kills, outcomes = 0, []
    # Six kill attempts (a timer attempt always kills; an in-save one kills at a save with p=0.35), then
    # clean runs. Up to twelve kill attempts cost 48 s against 39 s alone, and, seeded, they killed at the
    # same instants on every run anyway.
    for attempt in range(8):  # bounded: the last attempts run without kills
        mode = ("in_save", "timer")[attempt % 2] if attempt < 6 else "none"
        delay = rng.uniform(0.05, 0.9) * fit_seconds  # somewhere in the fit (this run resumes, so often earlier)
        proc = subprocess.run([sys.executable, "-c", CHILD, mode, f"{delay:.2f}", str(attempt), "--run-dir", run.path,
                               *args], env=env, capture_output=True, text=True, timeout=600)
        outcomes.append((mode, proc.returncode))
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL, (mode, proc.stderr[-3000:])
        assert not run.is_finished, outcomes  # the kill landed mid-run
        kills += 1
    print("kill loop:", outcomes)
    assert run.is_finished, outcomes
    assert kills >= 2, outcomes  # the loop did kill the training, more than once
    with open(run.metrics_path) as fh:
        metrics = json.load(fh)
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3, 4, 5, 6]
    assert metrics["epochs_completed"] == 6 and metrics["final"]["test_accuracy"] > 0.8
    # Every kill resumed from an epoch boundary with the data order of that epoch: same weights as no kill.
    got = zoo.load(run.model_path, compile=False).get_weights()
    want = zoo.load(reference.model_path, compile=False).get_weights()
    assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(got, want)), outcomes
    assert not [f for f in os.listdir(run.checkpoints_dir) if f.startswith(".tmp")]  # partial writes cleaned up


def test_a_refused_config_leaves_nothing_and_the_fixed_rerun_is_not_refused(tmp_path):
    """The warm-up covering the whole run is found before the run dir exists (it used to be found after
    config.yaml, run.json and the samples were written, and the fixed rerun was then refused)."""
    from zoo.errors import ConfigError

    run_dir = tmp_path / "run"
    with pytest.raises(ConfigError, match="warmup_epochs=2.0 covers the whole run of 1 epochs"):
        train("image_classify", str(run_dir), {**FAST, "train.epochs": 1, "train.schedule.warmup_epochs": 2.0},
              verbose=0)
    assert not run_dir.exists()
    result = train("image_classify", str(run_dir), {**FAST, "train.epochs": 1}, verbose=0)
    assert result.metrics["epochs_completed"] == 1
