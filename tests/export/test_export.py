"""Export v1: TF Serving layout, versions, signatures, TFLite parity, report, failure safety."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import numpy as np
import pytest

from zoo.cli import main as zoo_main
from zoo.errors import DataError, ExportError, UnknownNameError
from zoo.export import exporter
from zoo.export import tflite as tfl
from zoo.rundir import RunDirError

ALL = "saved_model,tflite,tflite_float16,tflite_dynamic,tflite_int8_weights,tflite_int8,tflite_int16x8"


@pytest.fixture(scope="module")
def exported(digits_run, tmp_path_factory):
    base = str(tmp_path_factory.mktemp("exports"))
    version_dir, report = exporter.export_run(digits_run.run_dir, base, "digits", ALL, latency_runs=10)
    return base, version_dir, report


def _digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _entries(base, name="digits"):
    return sorted(os.listdir(os.path.join(base, name)))


def test_layout_is_tf_serving_versioned(exported):
    base, version_dir, report = exported
    assert version_dir == os.path.join(base, "digits", "1") and report["version"] == 1
    files = set(os.listdir(version_dir))
    assert {"saved_model.pb", "variables", "model_float32.tflite", "model_float16.tflite", "model_dynamic_int8.tflite",
            "model_int8_weights.tflite", "model_int8.tflite", "model_int16x8.tflite", "report.json", "report.md",
            "report.png"} <= files
    assert not [f for f in files if f.startswith(".")]  # no staging left-overs inside


def test_saved_model_signature_serves_raw_pixels(exported, digits_run):
    import tensorflow as tf

    _, version_dir, _ = exported
    loaded = tf.saved_model.load(version_dir)
    fn = loaded.signatures["serving_default"]
    _, kwargs = fn.structured_input_signature
    assert list(kwargs) == ["images"] and kwargs["images"].shape.as_list() == [None, 8, 8, 1]
    sample = np.load(os.path.join(digits_run.run_dir, "eval_sample.npz"))
    out = fn(images=tf.constant(sample["x"][:50]))
    assert set(out) == {"logits", "probabilities", "label", "class_name"}
    keras_logits = digits_run.model.predict(sample["x"][:50], verbose=0)
    np.testing.assert_array_equal(out["label"].numpy(), keras_logits.argmax(-1))
    np.testing.assert_allclose(out["probabilities"].numpy().sum(-1), 1.0, atol=1e-5)
    assert [c.decode() for c in out["class_name"].numpy()] == [str(i) for i in keras_logits.argmax(-1)]


def test_report_numbers_meet_the_targets(exported):
    _, version_dir, report = exported
    with open(os.path.join(version_dir, "report.json")) as fh:
        on_disk = json.load(fh)
    assert on_disk["formats"].keys() == report["formats"].keys() == {
        "saved_model", "tflite", "tflite_float16", "tflite_dynamic", "tflite_int8_weights", "tflite_int8",
        "tflite_int16x8"}
    keras_acc = report["keras"]["accuracy"]
    assert keras_acc >= 0.95 and report["examples"] == 359
    for r in report["formats"].values():
        assert {"accuracy", "accuracy_delta", "max_abs_diff", "mean_abs_diff", "label_agreement", "size_bytes",
                "size_ratio", "latency_ms"} <= set(r)
        assert r["latency_ms"]["p50"] > 0 and r["size_bytes"] > 0
    for fmt in ("saved_model", "tflite"):
        assert report["formats"][fmt]["accuracy"] == keras_acc
        assert report["formats"][fmt]["max_abs_diff"] < 1e-3
    assert report["formats"]["tflite"]["size_ratio"] == 1.0
    int8 = report["formats"]["tflite_int8"]
    assert int8["size_ratio"] <= 0.30
    assert abs(int8["accuracy_delta"]) <= 0.01
    for fmt in ("tflite_dynamic", "tflite_int8_weights", "tflite_int16x8"):
        assert report["formats"][fmt]["size_ratio"] <= 0.35
        assert abs(report["formats"][fmt]["accuracy_delta"]) <= 0.01
    assert 0.45 <= report["formats"]["tflite_float16"]["size_ratio"] <= 0.55
    assert abs(report["formats"]["tflite_float16"]["accuracy_delta"]) <= 0.003


def test_report_markdown_png_and_models_config(exported):
    from PIL import Image

    base, version_dir, report = exported
    md = open(os.path.join(version_dir, "report.md"), encoding="utf-8").read()
    assert md.startswith("# Export report") and md.count("\n| ") == 1 + len(report["formats"])
    assert "| tflite_int16x8 |" in md and "max \\|diff\\|" in md
    png = os.path.join(version_dir, "report.png")
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as im:
        assert im.size[0] > 800 and im.size[1] > 200
    config = open(os.path.join(base, "models.config"), encoding="utf-8").read()
    assert report["models_config"] == os.path.join(os.path.abspath(base), "models.config")
    assert config.startswith("model_config_list {") and config.count("config {") == 1
    assert f"base_path: '{os.path.join(os.path.abspath(base), 'digits')}'" in config
    assert "name: 'digits'" in config and "model_platform: 'tensorflow'" in config


def test_tflite_int8_file_takes_int8_input(exported):
    _, version_dir, _ = exported
    with open(os.path.join(version_dir, "model_int8.tflite"), "rb") as fh:
        runner = tfl.TFLiteRunner(fh.read())
    assert runner.input["dtype"] == np.int8 and runner.output["dtype"] == np.int8


def test_versions_increment_and_never_overwrite(exported, digits_run):
    base, version_dir, _ = exported
    before = _digest(os.path.join(version_dir, "saved_model.pb"))
    v2, report2 = exporter.export_run(digits_run.run_dir, base, "digits", "tflite", latency_runs=3)
    assert v2 == os.path.join(base, "digits", "2") and report2["version"] == 2
    assert sorted(os.listdir(v2)) == ["model_float32.tflite", "report.json", "report.md", "report.png"]
    with pytest.raises(ExportError, match="version 1 of 'digits' already exists.*Omit --version to publish 3"):
        exporter.export_run(digits_run.run_dir, base, "digits", "tflite", version=1)
    assert _digest(os.path.join(version_dir, "saved_model.pb")) == before
    assert _entries(base) == ["1", "2"]


def test_a_crash_mid_export_publishes_nothing(exported, digits_run, monkeypatch):
    base, version_dir, _ = exported
    before = _entries(base)
    real = tfl.convert_saved_model

    def explode(src, fmt, *a, **k):
        if fmt == "tflite_int8":
            raise RuntimeError("simulated crash during int8 conversion")
        return real(src, fmt, *a, **k)

    monkeypatch.setattr(tfl, "convert_saved_model", explode)
    with pytest.raises(RuntimeError, match="simulated crash"):
        exporter.export_run(digits_run.run_dir, base, "digits", ALL, latency_runs=2)
    assert _entries(base) == before  # no new version, no staging directory
    assert os.path.isfile(os.path.join(version_dir, "saved_model.pb"))


def test_bad_export_requests(tmp_path, digits_run):
    unfinished = tmp_path / "unfinished"
    shutil.copytree(digits_run.run_dir, unfinished)
    os.remove(unfinished / "model.keras")
    with pytest.raises(RunDirError, match="no final model \\(model.keras\\): the run did not finish. Resume it with "
                                          "`zoo train image_classify --run-dir"):
        exporter.export_run(str(unfinished), str(tmp_path / "out"), "digits")
    assert not os.path.exists(tmp_path / "out" / "digits" / "1")
    with pytest.raises(UnknownNameError, match="did you mean 'tflite_int8'"):
        exporter.parse_formats("saved_model,tflite_int4")
    with pytest.raises(RunDirError, match="does not exist"):
        exporter.export_run(str(tmp_path / "nope"), str(tmp_path / "out"), "digits")
    with pytest.raises(DataError, match="representative data has shape"):
        tfl.representative_dataset(np.zeros((4, 9, 9, 1), "float32"), [None, 8, 8, 1])
    with pytest.raises(ExportError, match="not a valid directory name"):
        exporter.export_run(digits_run.run_dir, str(tmp_path / "out"), "../escape")


def test_cli_export_prints_the_table(digits_run, tmp_path, capsys):
    report_path = tmp_path / "report.json"
    assert zoo_main(["export", digits_run.run_dir, "--to", str(tmp_path / "out"), "--name", "digits",
                     "--formats", "saved_model,tflite_int8", "--report", str(report_path)]) == 0
    out = capsys.readouterr().out
    assert "published" in out and "tflite_int8" in out and "max |diff|" in out
    assert json.loads(report_path.read_text())["formats"].keys() == {"saved_model", "tflite_int8"}
    assert zoo_main(["export", str(tmp_path / "missing"), "--to", str(tmp_path / "out")]) == 2
    assert "error: run dir" in capsys.readouterr().err


def test_a_models_config_failure_says_the_version_was_published(tmp_path, digits_run, monkeypatch):
    from zoo.export import publish

    def fail(base):
        raise PermissionError(13, "Permission denied", os.path.join(base, "models.config"))

    monkeypatch.setattr(publish, "write_models_config", fail)
    with pytest.raises(ExportError, match=r"published .*digits/1 \(complete and verified\), but could not write"):
        exporter.export_run(digits_run.run_dir, str(tmp_path), "digits", "tflite", latency_runs=1)
    assert os.path.isfile(tmp_path / "digits" / "1" / "model_float32.tflite")
