"""Recipes: one module per task, each a config dataclass plus the steps the shared engine runs,
and ``configs/``: one YAML file per shipped experiment (``--config NAME`` or a path)."""

from __future__ import annotations

import importlib
import os
from typing import Any

from zoo.errors import ConfigError, unknown_name

# name -> module; modules are imported only when a recipe is used (they import TensorFlow).
RECIPES = {
    "image_classify": "zoo.recipes.image_classify",
    "bert_classify": "zoo.recipes.bert_classify",
    "bert_qa": "zoo.recipes.bert_qa",
    "bert_pretrain": "zoo.recipes.bert_pretrain",
    "translate": "zoo.recipes.translate",
    "distill": "zoo.recipes.distill",
}

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "configs")


def list_recipes() -> list[str]:
    """Names of the recipes there are."""
    return sorted(RECIPES)


def check_recipe(name: str) -> None:
    """UnknownNameError (with a suggestion) unless ``name`` is a recipe; imports nothing."""
    if name not in RECIPES:
        raise unknown_name("recipe", name, RECIPES)


def get_recipe_module(name: str) -> Any:
    """The module of recipe ``name`` (it has ``RECIPE`` and ``main``)."""
    check_recipe(name)
    return importlib.import_module(RECIPES[name])


def list_configs() -> list[str]:
    """Names of the shipped experiment configs (``recipes/configs/<name>.yaml``)."""
    return sorted(f[:-5] for f in os.listdir(CONFIG_DIR) if f.endswith(".yaml"))


def config_path(name_or_path: str) -> str:
    """A ``--config`` value as a file path: an existing file, or the name of a shipped config."""
    if os.path.isfile(name_or_path):
        return name_or_path
    shipped = os.path.join(CONFIG_DIR, f"{name_or_path.removesuffix('.yaml')}.yaml")
    if os.path.isfile(shipped):
        return shipped
    if os.sep in name_or_path or name_or_path.endswith((".yaml", ".yml", ".json")):
        raise ConfigError(f"config file {name_or_path!r} does not exist")
    raise unknown_name("experiment config", name_or_path, list_configs())
