"""Recipe image_classify: digits, image folders, TFRecords, augmentation and bad input."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from zoo.cli import main as zoo_main
from zoo.errors import ConfigError, DataError
from zoo.recipes.engine.run import train

FAST = {"train.tensorboard": False, "train.checkpoint_every_epoch": False}
COLORS = {"red": (200, 40, 40), "green": (40, 190, 60), "blue": (50, 60, 210)}


def _png(color, rng, size=12):
    from PIL import Image

    base = np.array(color, dtype=np.float32)
    img = np.clip(base + rng.normal(0, 25, size=(size, size, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _write_folder(root, per_class=24, seed=0):
    rng = np.random.default_rng(seed)
    for name, color in COLORS.items():
        os.makedirs(root / name, exist_ok=True)
        for i in range(per_class):
            (root / name / f"{i:03d}.png").write_bytes(_png(color, rng))
    return root


def test_small_cnn_reaches_95_percent_on_digits(digits_run):
    metrics = digits_run.metrics
    assert metrics["final"]["test_accuracy"] >= 0.95
    assert metrics["epochs"][-1]["loss"] < metrics["epochs"][0]["loss"] * 0.2
    with open(os.path.join(digits_run.run_dir, "run.json")) as fh:
        info = json.load(fh)
    assert info["task"] == "image_classification" and info["input"]["shape"] == [None, 8, 8, 1]
    assert info["data"]["counts"] == {"train": 1259, "validation": 179, "test": 359}
    assert info["class_names"] == [str(i) for i in range(10)]


def test_folder_dataset_skips_a_corrupt_image_with_a_warning(tmp_path, caplog):
    root = _write_folder(tmp_path / "imgs")
    (root / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    (root / "blue" / "notes.txt").write_text("not an image")
    with caplog.at_level(logging.WARNING):
        result = train("image_classify", str(tmp_path / "run"),
                       {**FAST, "data.source": str(root), "train.epochs": 8, "data.test_split": 0.25}, verbose=0)
    assert any("broken.png" in r.getMessage() for r in caplog.records)
    with open(tmp_path / "run" / "run.json") as fh:
        info = json.load(fh)
    assert info["data"]["skipped_files"] == [str(root / "red" / "broken.png")]
    assert info["class_names"] == ["blue", "green", "red"] and info["input"]["shape"] == [None, 12, 12, 3]
    assert result.metrics["final"]["test_accuracy"] >= 0.9


def test_folder_dataset_can_refuse_corrupt_images(tmp_path):
    root = _write_folder(tmp_path / "imgs", per_class=4)
    (root / "green" / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(DataError, match=r"corrupt image .*bad\.jpg.*data.on_corrupt=skip"):
        train("image_classify", str(tmp_path / "run"), {"data.source": str(root), "data.on_corrupt": "error"})
    assert not os.path.exists(tmp_path / "run" / "model.keras")


def test_tfrecord_dataset_trains(tmp_path):
    from zoo.data.images import write_image_tfrecord

    rng = np.random.default_rng(1)
    for shard in range(2):
        images, labels = [], []
        for label, color in enumerate(COLORS.values()):
            for _ in range(20):
                images.append(_png(color, rng, size=10))
                labels.append(label)
        write_image_tfrecord(str(tmp_path / f"train-{shard}.tfrecord"), images, labels)
    result = train("image_classify", str(tmp_path / "run"),
                   {**FAST, "data.source": str(tmp_path / "train-*.tfrecord"), "train.epochs": 8,
                    "data.image_size": [10, 10]}, verbose=0)
    assert result.metrics["final"]["test_accuracy"] >= 0.9
    assert result.model.input_shape == (None, 10, 10, 3)


@pytest.mark.slow
def test_resnet_with_augmentation_trains_on_digits(tmp_path):
    result = train("image_classify", str(tmp_path / "run"),
                   {**FAST, "model.name": "resnet18", "model.width": 8, "model.stem": "small", "train.epochs": 3,
                    "augment.rotation": 0.03, "augment.zoom": 0.1, "augment.crop_padding": 1}, verbose=0)
    assert result.model.name == "resnet18"
    losses = [e["loss"] for e in result.metrics["epochs"]]
    assert losses[-1] < losses[0]
    assert result.metrics["final"]["test_accuracy"] > 0.5


def test_bad_input_errors(tmp_path):
    with pytest.raises(DataError, match="data path '.*nowhere' does not exist"):
        train("image_classify", str(tmp_path / "a"), {"data.source": str(tmp_path / "nowhere")})
    with pytest.raises(DataError, match=r"model.num_classes=5 but the data has 10 classes"):
        train("image_classify", str(tmp_path / "b"), {"model.num_classes": 5})
    one = tmp_path / "one"
    (one / "only").mkdir(parents=True)
    (one / "only" / "a.png").write_bytes(_png((1, 2, 3), np.random.default_rng(0)))
    with pytest.raises(DataError, match="at least two classes"):
        train("image_classify", str(tmp_path / "c"), {"data.source": str(one)})
    root = _write_folder(tmp_path / "imgs", per_class=3)
    evald = _write_folder(tmp_path / "eval", per_class=1)
    (evald / "purple").mkdir()
    (evald / "purple" / "x.png").write_bytes(_png((120, 0, 120), np.random.default_rng(0)))
    with pytest.raises(DataError, match="classes not seen in training: purple"):
        train("image_classify", str(tmp_path / "d"), {"data.source": str(root), "data.eval_source": str(evald)})
    with pytest.raises(ConfigError, match="validation_split \\+ test_split"):
        train("image_classify", str(tmp_path / "e"), {"data.validation_split": 0.5, "data.test_split": 0.5})
    for name in "abcde":
        assert not os.path.exists(tmp_path / name / "model.keras")


def test_cli_help_list_and_errors(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        zoo_main(["train", "image_classify", "--help"])
    assert exit_.value.code == 0
    assert "--set KEY=VALUE" in capsys.readouterr().out
    assert zoo_main(["train", "imagee_classify"]) == 2
    assert "did you mean 'image_classify'" in capsys.readouterr().err
    assert zoo_main(["train", "image_classify", "--data", str(tmp_path / "missing"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: data path") and "Traceback" not in err
    assert zoo_main(["list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    params = {m["name"]: (m["trainable_parameters"], m["parameters"]) for m in listing["models"]}
    assert params["resnet50"] == (25_557_032, 25_610_152)  # + 53,120 BatchNorm statistics
    assert params["resnet101"][0] == 44_549_160 and params["resnet152"][0] == 60_192_808
    assert "image_classify" in listing["recipes"]


@pytest.mark.slow
def test_python_dash_m_help_works():
    out = subprocess.run([sys.executable, "-m", "zoo.recipes.image_classify", "--help"], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert out.returncode == 0 and "--run-dir" in out.stdout and "--eval-data" in out.stdout
