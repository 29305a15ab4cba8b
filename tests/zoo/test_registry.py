"""Registry, config overrides and error messages."""

from __future__ import annotations

import subprocess
import sys

import pytest

import zoo
from zoo.config import apply_overrides, from_dict, load_config_file, parse_set_args, to_dict, write_config
from zoo.errors import ConfigError, UnknownNameError, ZooError


def test_list_models_has_every_cnn_baseline():
    assert {"small_cnn", "resnet18", "resnet34", "resnet50", "text_cnn"} <= set(zoo.list_models())
    assert zoo.list_models() == sorted(zoo.list_models())


def test_unknown_model_suggests_the_closest_name():
    with pytest.raises(UnknownNameError) as err:
        zoo.build("resnet5O")
    assert "unknown model 'resnet5O'; did you mean 'resnet50'?" in str(err.value)
    assert isinstance(err.value, ZooError)


def test_unknown_override_names_field_and_lists_fields():
    with pytest.raises(ConfigError) as err:
        zoo.make_config("small_cnn", dense_unit=64)
    msg = str(err.value)
    assert "unknown config field 'dense_unit'" in msg and "did you mean 'dense_units'" in msg
    assert "num_classes" in msg  # the allowed fields are listed


def test_ill_typed_override_names_field_and_type():
    with pytest.raises(ConfigError, match=r"num_classes='ten' has the wrong type; expected int"):
        zoo.make_config("small_cnn", num_classes="ten")
    with pytest.raises(ConfigError, match=r"stem='tiny' is not allowed.*'imagenet', 'small'"):
        zoo.make_config("resnet18", stem="tiny")
    with pytest.raises(ConfigError, match="depth=19 is not allowed"):
        zoo.make_config("resnet18", depth=19)
    with pytest.raises(ConfigError, match="at least 2 classes"):
        zoo.make_config("small_cnn", num_classes=1)


def test_overrides_are_coerced_from_strings():
    cfg = zoo.make_config("text_cnn", **parse_set_args(["filter_sizes=[2, 3]", "dropout=0.1", "num_classes=4"]))
    assert cfg.filter_sizes == (2, 3) and cfg.dropout == 0.1 and cfg.num_classes == 4
    assert zoo.make_config("small_cnn", input_shape="8,8,1").input_shape == (8, 8, 1)


def test_nested_overrides_yaml_round_trip(tmp_path):
    from zoo.recipes.image_classify import ImageClassifyConfig

    cfg = apply_overrides(ImageClassifyConfig(), {"model.name": "resnet18"})
    cfg = apply_overrides(cfg, {"model.width": 16, "train.optimizer.name": "adamw", "train.epochs": "3"})
    assert cfg.model.name == "resnet18" and cfg.model.depth == 18 and cfg.model.width == 16
    assert cfg.train.optimizer.name == "adamw" and cfg.train.epochs == 3
    write_config(cfg, str(tmp_path / "c.yaml"))
    again = from_dict(ImageClassifyConfig, load_config_file(str(tmp_path / "c.yaml")))
    assert again == cfg and to_dict(again) == to_dict(cfg)


def test_recipe_config_rejects_a_text_model_for_images():
    from zoo.recipes.image_classify import ImageClassifyConfig

    with pytest.raises(ConfigError, match="not an image classifier"):
        apply_overrides(ImageClassifyConfig(), {"model.name": "text_cnn"})
    with pytest.raises(ConfigError, match="train.optimizer.name='adamm'.*did you mean 'adam'"):
        apply_overrides(ImageClassifyConfig(), {"train.optimizer.name": "adamm"})


def test_bad_set_syntax_and_bad_config_file(tmp_path):
    with pytest.raises(ConfigError, match="key.path=value"):
        parse_set_args(["train.epochs"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n- not a mapping\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config_file(str(bad))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config_file(str(tmp_path / "missing.yaml"))


def test_import_has_no_tensorflow_side_effect():
    code = "import sys, zoo; zoo.list_models(); print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False False"


def test_load_errors(tmp_path):
    with pytest.raises(ZooError, match="no model file"):
        zoo.load(str(tmp_path / "nope.keras"))
    (tmp_path / "x.h5").write_bytes(b"")
    with pytest.raises(ZooError, match="not a .keras file"):
        zoo.load(str(tmp_path / "x.h5"))
