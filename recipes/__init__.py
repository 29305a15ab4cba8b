"""Recipes: one module per recipe, each a config dataclass plus the steps the shared engine runs,
and ``configs/``: one YAML file per shipped experiment (``--config NAME`` or a path).

Which recipes there are is the task plugins' to say (``zoo.tasks``: each task names its recipes); a
recipe module is imported only when it is used (it imports TensorFlow).
"""

from __future__ import annotations

import os
from typing import Any

from zoo.errors import ConfigError, unknown_name

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "configs")


def list_recipes() -> list[str]:
    """Names of the recipes there are (every task's)."""
    from zoo.tasks import recipe_refs

    return sorted(recipe_refs())


def check_recipe(name: str) -> None:
    """UnknownNameError (with a suggestion) unless ``name`` is a recipe; imports nothing."""
    from zoo.tasks import recipe_refs

    if name not in recipe_refs():
        raise unknown_name("recipe", name, recipe_refs())


def get_recipe(name: str) -> Any:
    """The ``Recipe`` called ``name`` (its module's ``RECIPE``, or the object a task registered)."""
    from zoo.tasks import recipe_refs, resolve

    check_recipe(name)
    found = resolve(recipe_refs()[name])
    return getattr(found, "RECIPE", found)


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
