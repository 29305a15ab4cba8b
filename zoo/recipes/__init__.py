"""Recipes: one module per task, each a config dataclass plus the steps the shared engine runs."""

from __future__ import annotations

import importlib
from typing import Any

from zoo.errors import unknown_name

# name -> module; modules are imported only when a recipe is used (they import TensorFlow).
RECIPES = {
    "image_classify": "zoo.recipes.image_classify",
    "bert_classify": "zoo.recipes.bert_classify",
    "bert_pretrain": "zoo.recipes.bert_pretrain",
    "translate": "zoo.recipes.translate",
    "distill": "zoo.recipes.distill",
}


def list_recipes() -> list[str]:
    """Names of the recipes there are."""
    return sorted(RECIPES)


def get_recipe_module(name: str) -> Any:
    """The module of recipe ``name`` (it has ``RECIPE`` and ``main``)."""
    if name not in RECIPES:
        raise unknown_name("recipe", name, RECIPES)
    return importlib.import_module(RECIPES[name])
