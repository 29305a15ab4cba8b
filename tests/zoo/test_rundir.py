"""The run-directory contract: run.json per task with a schema version, and clear errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from zoo import rundir
from zoo.rundir import RunDir, RunDirError, Seq2SeqTextSpec, SignatureTensor, WordPieceSpec
from zoo.tasks.image_classification import ImageClassificationInfo
from zoo.tasks.text_classification import TextClassificationInfo
from zoo.tasks.translation import TranslationInfo

INFOS = [
    ImageClassificationInfo(recipe="image_classify", model="small_cnn", data={"counts": {"train": 3}},
                            input=SignatureTensor("images", "float32", (None, 8, 8, 1), pixel_range=(0.0, 16.0)),
                            class_names=("0", "1")),
    TextClassificationInfo(recipe="bert_classify", model="bert_classifier", class_names=("neg", "pos"),
                           input=SignatureTensor("text", "string", (None,), pair_name="text_pair"),
                           preprocessor=WordPieceSpec(RunDir.VOCAB, 32, True), backbone="bert_tiny"),
    TranslationInfo(recipe="translate", model="transformer_tiny", decode={"method": "greedy"},
                    preprocessor=Seq2SeqTextSpec(RunDir.VOCAB, RunDir.TARGET_VOCAB, 8, 9, False)),
]


@pytest.mark.parametrize("info", INFOS, ids=lambda i: i.task)
def test_run_json_round_trips_per_task(tmp_path, info):
    run = RunDir(str(tmp_path))
    run.write_info(info)
    data = json.loads(open(run.info_path).read())
    assert data["schema_version"] == rundir.SCHEMA_VERSION and data["task"] == info.task
    assert RunDir(str(tmp_path)).info == info


def test_open_explains_what_is_wrong(tmp_path):
    with pytest.raises(RunDirError, match="does not exist"):
        RunDir.open(str(tmp_path / "missing"))
    with pytest.raises(RunDirError, match="has no run.json; it is not a run dir written by `zoo train`"):
        RunDir.open(str(tmp_path))
    run = RunDir(str(tmp_path))
    run.write_info(INFOS[0])
    with pytest.raises(RunDirError, match="the run did not finish. Resume it with `zoo train image_classify"):
        RunDir.open(run.path)
    assert RunDir.open(run.path, finished=False).info.model == "small_cnn"
    with pytest.raises(RunDirError, match="lacks eval_sample.npz"):
        RunDir.open(run.path, finished=False, need=(RunDir.EVAL_SAMPLE,))
    with pytest.raises(RunDirError, match="needs a run of task translation"):
        run.expect(TranslationInfo, purpose="translation")


def _write_raw(path, data):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, RunDir.INFO), "w") as fh:
        json.dump(data, fh)
    return RunDir(path)


def test_unknown_task_newer_schema_and_damage_are_refused(tmp_path):
    base = rundir.info_to_json(INFOS[0])
    with pytest.raises(RunDirError, match="task 'segmentation', which this kzoo does not know"):
        _ = _write_raw(str(tmp_path / "a"), {**base, "task": "segmentation"}).info
    with pytest.raises(RunDirError, match="schema version 2, newer than this kzoo reads"):
        _ = _write_raw(str(tmp_path / "b"), {**base, "schema_version": 2}).info
    with pytest.raises(RunDirError, match="unknown field"):
        _ = _write_raw(str(tmp_path / "c"), {**base, "colour": "blue"}).info
    os.makedirs(tmp_path / "d")
    (tmp_path / "d" / RunDir.INFO).write_text("{not json")
    with pytest.raises(RunDirError, match="is not valid JSON"):
        _ = RunDir(str(tmp_path / "d")).info


def test_run_json_of_earlier_versions_still_reads(tmp_path):
    """run.json written before the schema version existed (same keys) reads as version 1."""
    legacy = {"recipe": "image_classify", "task": "image_classification", "model": "small_cnn",
              "input": {"name": "images", "shape": [None, 8, 8, 1], "dtype": "float32", "pixel_range": [0.0, 16.0]},
              "class_names": ["0", "1"], "data": {"format": "digits"}}
    info = _write_raw(str(tmp_path), legacy).info
    assert isinstance(info, ImageClassificationInfo) and info.input.shape == (None, 8, 8, 1)


def test_samples_are_written_atomically_and_read_back(tmp_path):
    run = RunDir(str(tmp_path))
    run.write_eval_sample(np.arange(6).reshape(3, 2), np.array([0, 1, 0]))
    x, y = run.eval_sample()
    assert x.tolist() == [[0, 1], [2, 3], [4, 5]] and y.tolist() == [0, 1, 0]
    assert run.calibration() is None
    assert sorted(os.listdir(tmp_path)) == [RunDir.EVAL_SAMPLE]  # no temporary file left behind
    (tmp_path / RunDir.CALIBRATION).write_bytes(b"truncated")
    with pytest.raises(RunDirError, match="calibration.npz is damaged"):
        run.calibration()
