"""The user's layout and the import direction: zoo core <- zoo.export <- zoo.recipes <- the CLI."""

from __future__ import annotations

import ast
import os
import re

import pytest

from zoo import saving

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# package -> its folder in the checkout
PACKAGES = {"zoo": os.path.join(ROOT, "zoo"), "zoo.recipes": os.path.join(ROOT, "recipes"),
            "zoo.export": os.path.join(ROOT, "export")}
# The command line sits on top of everything: the one module of the zoo folder that imports the rest.
TOP = {"zoo.cli"}


def _modules():
    """(module name, file path) of every module of the three packages."""
    for package, folder in PACKAGES.items():
        for root, dirs, files in os.walk(folder):
            dirs[:] = [d for d in dirs if not d.startswith((".", "__"))]
            for f in files:
                if f.endswith(".py"):
                    rel = os.path.relpath(os.path.join(root, f), folder)[:-3].replace(os.sep, ".")
                    name = package if rel == "__init__" else f"{package}.{rel.removesuffix('.__init__')}"
                    yield name, os.path.join(root, f)


def _imports(path):
    """Every module name a file imports, at any depth (function-level imports included)."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{a.name}" for a in node.names)


def _layer(module):
    if module in TOP:
        return 3
    if module.startswith("zoo.recipes"):
        return 2
    if module.startswith("zoo.export"):
        return 1
    return 0 if module.startswith("zoo") else None


def test_packages_map_to_the_top_level_folders():
    import zoo.export
    import zoo.recipes

    assert os.path.dirname(zoo.__file__) == os.path.join(ROOT, "zoo")
    assert os.path.dirname(zoo.recipes.__file__) == os.path.join(ROOT, "recipes")
    assert os.path.dirname(zoo.export.__file__) == os.path.join(ROOT, "export")
    assert not os.path.exists(os.path.join(ROOT, "zoo", "recipes"))
    assert not os.path.exists(os.path.join(ROOT, "zoo", "export"))


def test_imports_run_one_way():
    modules = dict(_modules())
    assert len(modules) > 30 and "zoo.recipes.engine.run" in modules and "zoo.export.exporter" in modules
    wrong = []
    for name, path in modules.items():
        for imported in _imports(path):
            target = _layer(imported)
            if target is not None and target > _layer(name):
                wrong.append(f"{name} imports {imported}")
    assert not wrong, "imports against the layering:\n" + "\n".join(sorted(set(wrong)))


def test_the_layering_check_catches_a_wrong_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from zoo.recipes.engine.run import train\n")
    assert "zoo.recipes.engine.run" in set(_imports(str(bad)))
    assert _layer("zoo.recipes.engine.run") > _layer("zoo.export.publish") > _layer("zoo.rundir")


FENCE = "zoo.keras_compat"
# Modules of other packages that are internal: importing them is fenced into zoo.keras_compat.
INTERNAL_MODULES = re.compile(r"(^|\.)src(\.|$)|^tensorflow\.python(\.|$)|^tensorflow\.lite\.(python|tools)(\.|$)")


def _private_names_defined(paths):
    """Every ``_name`` this project defines itself (functions, classes, attributes, variables, arguments):
    reading one of those on any object is not reaching into another package."""
    names = set()
    for path in paths:
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
    return {n for n in names if n.startswith("_")}


def _fence_breaches(path, ours):
    """Internal imports and other packages' private attributes (``obj._x``, ``getattr(obj, "_x")``) in a file."""
    found = [f"imports {m}" for m in _imports(path) if INTERNAL_MODULES.search(m)]
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        name = None
        if isinstance(node, ast.Attribute):
            name = node.attr
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "setattr", "hasattr", "delattr") and len(node.args) > 1
              and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
            name = node.args[1].value
        if name and name.startswith("_") and not name.startswith("__") and name not in ours:
            found.append(f"line {node.lineno}: reads .{name}")
    return found


def test_private_apis_of_other_packages_are_used_only_in_keras_compat():
    """Every ``*.src.*`` / TensorFlow-internal import and every read of another package's ``_private``
    attribute lives in zoo.keras_compat (whose WRITTEN_FOR pins the versions they were written for)."""
    from zoo import keras_compat

    modules = dict(_modules())
    ours = _private_names_defined(modules.values())
    breaches = {name: found for name, path in modules.items() if name != FENCE
                for found in [_fence_breaches(path, ours)] if found}
    assert not breaches, "private APIs of other packages outside zoo.keras_compat:\n" + "\n".join(
        f"{name}: {', '.join(found)}" for name, found in sorted(breaches.items()))
    assert _fence_breaches(modules[FENCE], ours)  # the fence itself does hold them (the check sees them)
    assert set(keras_compat.WRITTEN_FOR) == {"keras", "tensorflow", "keras-hub", "tensorflow-text"}


def test_the_fence_check_catches_internal_imports_and_private_reads(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import keras\nfrom keras_hub.src.utils import keras_utils\nimport tensorflow.python.ops\n"
                   "from tensorflow.lite.tools import flatbuffer_utils\n"
                   "def f(layer, own):\n    own._mine = 1\n    return layer._feedforward_dense, own._mine, "
                   "getattr(layer, '_softmax'), layer.__class__\n")
    found = _fence_breaches(str(bad), _private_names_defined([str(bad)]))
    assert found == ["imports keras_hub.src.utils", "imports keras_hub.src.utils.keras_utils",
                     "imports tensorflow.python.ops", "imports tensorflow.lite.tools",
                     "imports tensorflow.lite.tools.flatbuffer_utils", "line 7: reads ._feedforward_dense",
                     "line 7: reads ._softmax"], found


def test_serializable_classes_are_registered_in_one_place():
    """Every module that registers a Keras-serializable class is named by the engine or a task plugin, so
    zoo.load imports it first."""
    registering = set()
    for name, path in _modules():
        if "register_keras_serializable" in open(path, encoding="utf-8").read() and name != "zoo.saving":
            registering.add(name)
    assert registering == set(saving.serializable_modules())


def _code_strings(path: str) -> list[str]:
    """Every string constant of a module's code, f-string pieces included, docstrings excluded."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


def test_run_dir_names_are_spelled_only_in_the_run_dir_module():
    """No file or folder name of the run dir (RunDir's constants) is spelled in code outside zoo.rundir:
    as a whole string, or as a piece of a joined path (f"{run}/model.keras", "backup/latest")."""
    from zoo.rundir import RunDir

    # "logs" is also Keras' name for a callback's metrics dict.
    values = {v for k, v in vars(RunDir).items() if k.isupper() and isinstance(v, str)} - {"logs"}
    assert {"run.json", "model.keras", "metrics.json", "backup"} <= values
    # A Hugging Face checkpoint directory also has a vocab.txt (BERT's standard name); it is not a run
    # dir. Nor is a prepared dataset (zoo data prepare).
    allowed = {("zoo.checkpoints", "vocab.txt"), ("zoo.data.prepared", "vocab.txt")}
    found = []
    for name, path in _modules():
        if name == "zoo.rundir":
            continue
        for text in _code_strings(path):
            found += [f"{name}: {text!r}" for v in values if (name, v) not in allowed and (
                text == v or text.endswith("/" + v) or text.startswith(v + "/"))]
    assert not found, found


def test_keras_compat_refuses_other_versions():
    from zoo import keras_compat

    installed = keras_compat._installed_versions()
    assert set(installed) == set(keras_compat.WRITTEN_FOR)
    keras_compat.check_versions(installed)  # the pinned stack passes
    keras_compat.check_versions({"keras": "3.15.9", "tensorflow": "2.21.4", "keras-hub": "0.32.7",
                                 "tensorflow-text": "2.21.0"})
    with pytest.raises(keras_compat.KerasCompatError, match="keras 3.16.0.*train.optimizer.fused=false"):
        keras_compat.check_versions({"keras": "3.16.0", "tensorflow": "2.21.0"})
    # A keras-hub upgrade changes the encoder sublayers BERT reuses: said up front, not a broken forward pass.
    with pytest.raises(keras_compat.KerasCompatError, match=r"this environment has keras-hub 0\.33\.0\. .*BERT"):
        keras_compat.check_versions({**installed, "keras-hub": "0.33.0"})
    with pytest.raises(keras_compat.KerasCompatError, match=r"tensorflow-text \(not installed\)"):
        keras_compat.check_versions({**installed, "tensorflow-text": "(not installed)"})


def test_multi_worker_patch_is_undone():
    import keras

    from zoo import keras_compat

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    original = type(model)._maybe_symbolic_build
    with keras_compat.multi_worker_fit(model):
        assert keras_compat.multi_worker_patch_active()
        assert model._maybe_symbolic_build.__func__ is not original
    assert not keras_compat.multi_worker_patch_active()
    assert "_maybe_symbolic_build" not in vars(model)


def test_cpu_hog_keeps_cores_busy_while_the_command_runs_then_stops():
    """make test-stress's load: the hog really spins while the command runs, the command's exit code is
    passed on, and no hog outlives it."""
    import subprocess
    import sys

    hog = os.path.join(ROOT, "tests", "cpu_hog.py")
    # The command waits until the hog has used 0.3 CPU-seconds (it reads the hog's own counters), then fails.
    command = ("import os, sys, time\n"
               "sys.path.insert(0, os.path.dirname(sys.argv[1]))\n"
               "from cpu_hog import _cpu_seconds\n"
               "pid = int(os.environ['CPU_HOG_PIDS'])\n"
               "end = time.monotonic() + 120\n"
               "while _cpu_seconds(pid) < 0.3 and time.monotonic() < end:\n"
               "    time.sleep(0.01)\n"
               "print('hog', pid)\n"
               "sys.exit(3)\n")
    out = subprocess.run([sys.executable, hog, "--hogs", "1", "--", sys.executable, "-c", command, hog],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 3, out.stdout + out.stderr
    pid = int(re.search(r"^hog (\d+)$", out.stdout, re.M).group(1))
    used = float(re.search(r"the hogs used (\S+) CPU-seconds", out.stdout).group(1))
    assert used >= 0.3, out.stdout
    assert not os.path.exists(f"/proc/{pid}"), "a hog outlived the command"
    usage = subprocess.run([sys.executable, hog], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "give the command to run after --" in usage.stderr
