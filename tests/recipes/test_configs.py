"""The shipped experiment configs (recipes/configs/*.yaml) resolve in their recipes."""

from __future__ import annotations

import pytest

from zoo.errors import ConfigError, UnknownNameError
from zoo.recipes import get_recipe, list_configs
from zoo.recipes.engine.cli import load_experiment_config
from zoo.recipes.engine.run import resolve_config

EXPECTED = {"digits_small_cnn": ("image_classify", "train.epochs", 20),
            "images_resnet18": ("image_classify", "model.name", "resnet18"),
            "sentiment_minilm": ("bert_classify", "data.sequence_length", 64),
            "pretrain_bert_mini": ("bert_pretrain", "model.name", "bert_mini"),
            "mt_transformer_small": ("translate", "decode.beam_width", 4),
            "distill_text_cnn": ("distill", "model.name", "text_cnn")}


def _get(cfg, dotted):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_config_resolves(name):
    recipe, key, value = EXPECTED[name]
    overrides = load_experiment_config(name, recipe)
    cfg, explicit = resolve_config(get_recipe(recipe).config_class, overrides)
    assert _get(cfg, key) == value and key in explicit


def test_configs_listed_and_mismatches_explained(tmp_path):
    assert set(list_configs()) == set(EXPECTED)
    with pytest.raises(ConfigError, match="is for recipe 'translate'; run it with `zoo train translate --config"):
        load_experiment_config("mt_transformer_small", "image_classify")
    with pytest.raises(UnknownNameError, match="did you mean 'digits_small_cnn'"):
        load_experiment_config("digits_small_ccn", "image_classify")
    with pytest.raises(ConfigError, match="does not exist"):
        load_experiment_config(str(tmp_path / "nope.yaml"), "image_classify")


def test_configs_resolve_and_refuse_without_importing_tensorflow():
    """A typo in --set is answered before TensorFlow starts (seconds saved on every mistake)."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from zoo.errors import ConfigError\n"
            "from zoo.recipes import get_recipe, list_recipes\n"
            "from zoo.recipes.engine.run import resolve_config\n"
            "for name in list_recipes():\n"
            "    resolve_config(get_recipe(name).config_class, {})\n"
            "try:\n"
            "    resolve_config(get_recipe('image_classify').config_class,\n"
            "                   {'train.optimizer.name': 'adamm'})\n"
            "except ConfigError as exc:\n"
            "    print('refused:', exc)\n"
            "heavy = ('tensorflow', 'keras', 'keras_hub', 'tf_keras')\n"
            "print('loaded:', sorted(m for m in heavy if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "refused: train.optimizer.name='adamm' is not allowed; did you mean 'adam'?" in out.stdout
    assert "loaded: []" in out.stdout
