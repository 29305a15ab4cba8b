"""Tasks: one plugin per task, and the tables every other module derives from them.

A :class:`Task` declares, in one module of ``zoo/tasks/``, everything the rest of the zoo needs to
know about one task: its ``run.json`` dataclass, its recipes, its exporter, the modules that register
its Keras-serializable classes and the line ``zoo export`` prints for it. ``zoo.rundir`` (reading
run.json), ``zoo.recipes`` (``zoo train``), ``zoo.export.exporter`` (``zoo export``), ``zoo.saving``
(``zoo.load``) and ``zoo.cli`` look tasks up here; none keeps a table of its own. Adding a task is
adding a module to :data:`BUILTIN` (or calling :func:`register`, as a test or a user's package may).

Like Model Garden's task factory, without its registration-by-import side effects: the built-in list
is explicit and importing it imports no TensorFlow. Recipes, exporters and predictors are named as
``"module:attribute"`` strings (or given as objects), resolved only when used, so the core never
imports ``zoo.recipes`` or ``zoo.export`` (the import direction a layout test enforces).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from zoo.errors import ConfigError, unknown_name

# The task modules shipped with the zoo, in the order `zoo list` and error messages name them.
BUILTIN = (
    "zoo.tasks.image_classification",
    "zoo.tasks.text_classification",
    "zoo.tasks.masked_lm",
    "zoo.tasks.question_answering",
    "zoo.tasks.translation",
    "zoo.tasks.distillation",
)


@dataclass(frozen=True)
class Task:
    """One task: what a run of it holds, how it is trained, exported and loaded.

    ``info`` is the run.json dataclass (a ``zoo.rundir.RunInfo`` subclass whose ``TASK`` is ``name``);
    a task whose recipes write runs of another task (distillation writes text classifiers) names that
    task in ``produces`` instead. ``recipes`` maps recipe names to a module path (the module has
    ``RECIPE`` and ``main``) or a ``Recipe``. ``exporter`` is a ``"module:Class"`` path or the class;
    ``serializable`` lists the modules whose import registers the task's Keras classes (``zoo.load``
    imports them all). ``export_summary(report)`` is the line ``zoo export`` prints above the table.
    ``predictor`` is the task's inference wrapper on raw inputs (``"module:Class"`` with
    ``from_run(run_dir, **options)``) where the Keras model alone is not the answer (decoding, span
    extraction); the CLI commands that run a task (``zoo translate``, ``zoo answer``) load it through here.
    """

    name: str
    description: str
    info: type | None = None
    recipes: Mapping[str, Any] = field(default_factory=dict)
    exporter: Any = None
    serializable: tuple[str, ...] = ()
    export_summary: Callable[[dict[str, Any]], str] | None = None
    produces: str = ""
    predictor: Any = None

    def __post_init__(self) -> None:
        if (self.info is None) == (not self.produces):
            raise ConfigError(f"task {self.name!r}: declare its run.json dataclass (info) or the task whose runs "
                              "its recipes write (produces), one of the two")
        if self.info is not None and getattr(self.info, "TASK", None) != self.name:
            raise ConfigError(f"task {self.name!r}: its info class {self.info.__name__} says TASK="
                              f"{getattr(self.info, 'TASK', None)!r}")

    def exporter_class(self) -> Any:
        return resolve(self.exporter) if self.exporter is not None else None

    def predictor_class(self) -> Any:
        if self.predictor is None:
            raise ConfigError(f"task {self.name!r} has no predictor; load its model with zoo.load")
        return resolve(self.predictor)


_TASKS: dict[str, Task] = {}
_builtin_loaded = False


def _ensure_builtin() -> None:
    global _builtin_loaded
    if not _builtin_loaded:
        _builtin_loaded = True
        for module in BUILTIN:
            register(importlib.import_module(module).TASK)


def register(task: Task) -> Task:
    """Add a task (its name, its info class and its recipe names must be new)."""
    _ensure_builtin()
    if task.name in _TASKS:
        raise ConfigError(f"task {task.name!r} is registered twice")
    taken = {r for t in _TASKS.values() for r in t.recipes}
    clash = sorted(taken & set(task.recipes))
    if clash:
        raise ConfigError(f"task {task.name!r}: recipe(s) {', '.join(clash)} already belong to another task")
    _TASKS[task.name] = task
    return task


def unregister(name: str) -> None:
    """Remove a task added with :func:`register` (tests)."""
    _ensure_builtin()
    _TASKS.pop(name, None)


def all_tasks() -> list[Task]:
    _ensure_builtin()
    return list(_TASKS.values())


def get_task(name: str) -> Task:
    _ensure_builtin()
    if name not in _TASKS:
        raise unknown_name("task", name, _TASKS)
    return _TASKS[name]


def run_info_classes() -> dict[str, type]:
    """Task name -> its run.json dataclass, for every task whose runs have their own schema."""
    return {t.name: t.info for t in all_tasks() if t.info is not None}


def owner_of(info: Any) -> Task:
    """The task whose run.json dataclass ``info`` is (an instance or the class)."""
    cls = info if isinstance(info, type) else type(info)
    for task in all_tasks():
        if task.info is cls:
            return task
    raise ConfigError(f"{cls.__name__} is not the run.json dataclass of any registered task")


def recipe_refs() -> dict[str, Any]:
    """Recipe name -> its module path or Recipe object, over every task."""
    return {name: ref for task in all_tasks() for name, ref in task.recipes.items()}


def serializable_modules() -> tuple[str, ...]:
    """Every module a task names as registering Keras-serializable classes (without repeats, in order)."""
    return tuple(dict.fromkeys(m for task in all_tasks() for m in task.serializable))


def resolve(ref: Any) -> Any:
    """A ``"module:attribute"`` string imported and looked up; anything else as it is."""
    if not isinstance(ref, str):
        return ref
    module, _, attribute = ref.partition(":")
    loaded = importlib.import_module(module)
    return getattr(loaded, attribute) if attribute else loaded


__all__ = ["BUILTIN", "Task", "register", "unregister", "all_tasks", "get_task", "run_info_classes", "owner_of",
           "recipe_refs", "serializable_modules", "resolve"]
