"""Publishing into TF Serving's layout: ``BASE/NAME/<version>/``, atomically, never overwriting.

TF Serving polls ``BASE/NAME/`` and loads the highest integer sub-directory. A version is
therefore built in a hidden temporary directory beside its final place (same filesystem),
verified there, and only then renamed into ``BASE/NAME/<version>``: a crash at any moment
leaves either no new version or a complete one, never a half-written one. Existing versions
are never touched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator

from zoo.errors import ExportError

log = logging.getLogger(__name__)

_TMP_PREFIX = ".tmp-"

# Observers of the publishing steps ("saved_model_written", "tflite_written", "before_rename",
# "after_rename"), called with the step's name. Empty in normal use; the crash tests add one that
# kills the process at a chosen step.
STEP_OBSERVERS: list[Callable[[str], None]] = []


def reached(step: str) -> None:
    """Tell the observers that publishing reached ``step``."""
    for observer in STEP_OBSERVERS:
        observer(step)


def list_versions(model_dir: str) -> list[int]:
    """Integer versions already published under ``BASE/NAME``."""
    if not os.path.isdir(model_dir):
        return []
    return sorted(int(d) for d in os.listdir(model_dir)
                  if d.isdigit() and os.path.isdir(os.path.join(model_dir, d)))


def next_version(model_dir: str) -> int:
    """One past the highest published version (1 for a new model)."""
    versions = list_versions(model_dir)
    return versions[-1] + 1 if versions else 1


@contextlib.contextmanager
def publish_version(base: str, name: str, version: int | None = None) -> Iterator[tuple[str, int]]:
    """Yield ``(staging_dir, version)``; on normal exit the staging dir becomes ``BASE/NAME/<version>``.

    On any exception the staging directory is removed and nothing is published.
    """
    if not name or os.sep in name or name.startswith("."):
        raise ExportError(f"model name {name!r} is not a valid directory name; use letters, digits, '-' or '_'")
    model_dir = os.path.join(base, name)
    os.makedirs(model_dir, exist_ok=True)
    if version is None:
        version = next_version(model_dir)
    elif version < 1:
        raise ExportError(f"--version {version}: TF Serving versions are positive integers")
    final = os.path.join(model_dir, str(version))
    if os.path.exists(final):
        raise ExportError(
            f"version {version} of '{name}' already exists at {final}; versions are never overwritten. "
            f"Omit --version to publish {next_version(model_dir)}"
        )
    remove_stale_staging(base, name)
    staging = tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{version}-{os.getpid()}-", dir=model_dir)
    os.chmod(staging, 0o755)  # mkdtemp makes it private; TF Serving may run as another user
    try:
        yield staging, version
        if os.path.exists(final):  # another export took the number meanwhile
            raise ExportError(f"version {version} of '{name}' appeared while exporting; export again")
        reached("before_rename")
        os.rename(staging, final)
        reached("after_rename")
        # A rename is only durable once the directory entry is flushed.
        fd = os.open(model_dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("published %s", final)


def servable_versions(model_dir: str) -> list[int]:
    """Published versions that hold a SavedModel (TF Serving cannot load a TFLite-only version)."""
    return [v for v in list_versions(model_dir) if os.path.isfile(os.path.join(model_dir, str(v), "saved_model.pb"))]


def write_models_config(base: str) -> str:
    """Write ``BASE/models.config``, TF Serving's ``model_config_list`` for every model under ``BASE``
    with a SavedModel version (``tensorflow_model_server --model_config_file=BASE/models.config``).

    TF Serving serves a model's highest version by default; where that version is TFLite-only (a
    ``zoo compress qat`` export), the entry pins the newest SavedModel version instead, and a model with
    no SavedModel version is left out. Written atomically; returns its path.
    """
    from zoo.atomic import write_text_atomic

    root = os.path.abspath(base)
    entries = []
    for name in sorted(d for d in os.listdir(root) if not d.startswith(".")):
        model_dir = os.path.join(root, name)
        servable = servable_versions(model_dir)
        if not servable:
            if list_versions(model_dir):
                log.info("models.config leaves out %s: it has no SavedModel version (TFLite files only)", name)
            continue
        policy = ""
        if servable[-1] != list_versions(model_dir)[-1]:
            policy = (f"    model_version_policy {{\n      specific {{\n        versions: {servable[-1]}\n"
                      "      }\n    }\n")
        entries.append(f"  config {{\n    name: '{name}'\n    base_path: '{model_dir}'\n"
                       f"    model_platform: 'tensorflow'\n{policy}  }}\n")
    path = os.path.join(root, "models.config")
    write_text_atomic(path, "model_config_list {\n" + "".join(entries) + "}\n")
    return path


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_staging(base: str, name: str) -> list[str]:
    """Delete staging dirs left by killed exports (never loadable by TF Serving, which loads only
    integer directories). A staging dir is named ``.tmp-<version>-<pid>-...``; one whose process is
    still running belongs to a concurrent export and is left alone."""
    model_dir = os.path.join(base, name)
    removed = []
    if os.path.isdir(model_dir):
        for d in os.listdir(model_dir):
            if not d.startswith(_TMP_PREFIX):
                continue
            parts = d[len(_TMP_PREFIX):].split("-")
            if len(parts) >= 2 and parts[1].isdigit() and _process_alive(int(parts[1])):
                continue
            shutil.rmtree(os.path.join(model_dir, d), ignore_errors=True)
            removed.append(d)
    return removed


def directory_size(path: str) -> int:
    """Total bytes of the files under ``path``."""
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)
