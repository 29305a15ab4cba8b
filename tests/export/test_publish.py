"""Atomic publishing under SIGKILL: an export killed at any step leaves no new version and no damage."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys

import pytest

from zoo.export import exporter
from zoo.export import publish as sm


def _tree_digest(path):
    h = hashlib.sha256()
    for root, dirs, files in sorted(os.walk(path)):
        dirs.sort()
        for f in sorted(files):
            full = os.path.join(root, f)
            h.update(os.path.relpath(full, path).encode())
            h.update(open(full, "rb").read())
    return h.hexdigest()


# The crash injection lives in the test: an observer of the publishing steps that SIGKILLs the
# export process when it reaches the chosen step.
KILL_AT = """
import os, signal, sys
from zoo.export import exporter, publish
publish.STEP_OBSERVERS.append(lambda step: step == sys.argv[4] and os.kill(os.getpid(), signal.SIGKILL))
exporter.export_run(sys.argv[1], sys.argv[2], 'digits', sys.argv[3], latency_runs=1)
"""


def _export_in_subprocess(run_dir, base, formats, step):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-c", KILL_AT, run_dir, base, formats, step], env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_sigkill_at_each_step_never_publishes_a_partial_version(digits_run, tmp_path):
    base = str(tmp_path)
    _, report = exporter.export_run(digits_run.run_dir, base, "digits", "saved_model,tflite", latency_runs=1)
    v1 = os.path.join(base, "digits", "1")
    before = _tree_digest(v1)
    for step in ("saved_model_written", "tflite_written", "before_rename"):
        result = _export_in_subprocess(digits_run.run_dir, base, "saved_model,tflite", step)
        assert result.returncode == -signal.SIGKILL, (step, result.stderr[-2000:])
        assert sm.list_versions(os.path.join(base, "digits")) == [1], step  # nothing TF Serving could load
        assert _tree_digest(v1) == before, step  # the earlier version is untouched
    # What a killed export leaves is a hidden staging dir, which TF Serving ignores and the next export removes.
    assert any(d.startswith(".tmp-") for d in os.listdir(os.path.join(base, "digits")))
    # Killed right after the rename: the version is complete (it was verified before the rename).
    result = _export_in_subprocess(digits_run.run_dir, base, "saved_model,tflite", "after_rename")
    assert result.returncode == -signal.SIGKILL
    assert sm.list_versions(os.path.join(base, "digits")) == [1, 2]
    assert {"saved_model.pb", "model_float32.tflite", "report.json", "report.md", "report.png"} <= set(
        os.listdir(os.path.join(base, "digits", "2")))
    # The next export cleans up the staging left-overs and takes version 3.
    version_dir, _ = exporter.export_run(digits_run.run_dir, base, "digits", "tflite", latency_runs=1)
    assert version_dir.endswith(os.path.join("digits", "3"))
    assert not [d for d in os.listdir(os.path.join(base, "digits")) if d.startswith(".")]
    assert _tree_digest(v1) == before


def test_models_config_lists_only_what_tf_serving_can_load(tmp_path):
    """A TFLite-only version (zoo compress qat) is never the version TF Serving is told to load."""
    for name, version, has_saved_model in [("mixed", 1, True), ("mixed", 2, False), ("tflite_only", 1, False),
                                           ("plain", 3, True)]:
        os.makedirs(tmp_path / name / str(version))
        if has_saved_model:
            (tmp_path / name / str(version) / "saved_model.pb").write_bytes(b"")
    text = open(sm.write_models_config(str(tmp_path)), encoding="utf-8").read()
    assert "'tflite_only'" not in text
    mixed = text[text.index("name: 'mixed'"):text.index("name: 'plain'")]
    assert "specific {\n        versions: 1\n" in mixed  # pinned to the newest SavedModel version
    assert "model_version_policy" not in text[text.index("name: 'plain'"):]  # latest is servable: default policy
    assert sm.servable_versions(str(tmp_path / "mixed")) == [1]
