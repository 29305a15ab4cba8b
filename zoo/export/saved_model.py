"""SavedModels with serving signatures on raw inputs, published into TF Serving's layout.

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
import signal
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

from zoo.errors import ExportError

log = logging.getLogger(__name__)

_TMP_PREFIX = ".tmp-"
FAILPOINT_ENV = "ZOO_EXPORT_FAILPOINT"


def failpoint(step: str) -> None:
    """Crash injection for the atomicity tests: SIGKILL this process at ``step`` when the
    environment variable ZOO_EXPORT_FAILPOINT names it (unset in normal use: a no-op)."""
    if os.environ.get(FAILPOINT_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


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
        failpoint("before_rename")
        os.rename(staging, final)
        failpoint("after_rename")
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


def write_models_config(base: str) -> str:
    """Write ``BASE/models.config``, TF Serving's ``model_config_list`` for every model under ``BASE``
    that has a published version (``tensorflow_model_server --model_config_file=BASE/models.config``).
    Written atomically; returns its path."""
    from zoo.config import write_text_atomic

    root = os.path.abspath(base)
    names = sorted(d for d in os.listdir(root) if not d.startswith(".") and list_versions(os.path.join(root, d)))
    entries = "".join(f"  config {{\n    name: '{n}'\n    base_path: '{os.path.join(root, n)}'\n"
                      f"    model_platform: 'tensorflow'\n  }}\n" for n in names)
    path = os.path.join(root, "models.config")
    write_text_atomic(path, "model_config_list {\n" + entries + "}\n")
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


def save_serving_module(model: Any, serve: Any, input_signature: Sequence[Any], path: str) -> None:
    """``tf.saved_model.save`` of a tf.Module holding the model's variables and one signature.

    Written by hand rather than with Keras' ExportArchive / ``model.export``: those (Keras 3.15)
    save every variable twice (``variables/i`` and ``_all_variables/i``), doubling the SavedModel.
    """
    import tensorflow as tf

    module = tf.Module()
    module.model_variables = [v.value for v in model.variables]  # the tf.Variables, saved once
    fn = tf.function(serve, input_signature=list(input_signature), autograph=False)
    module.serve = fn
    try:
        tf.saved_model.save(module, path, signatures={"serving_default": fn.get_concrete_function()})
    except (ValueError, TypeError) as exc:
        raise ExportError(f"could not write a SavedModel of {model.name}: {exc}") from None


def write_classifier_saved_model(model: Any, path: str, input_spec: dict[str, Any],
                                 class_names: Sequence[str] | None = None) -> None:
    """Write a SavedModel whose ``serving_default`` maps raw inputs to logits, probabilities and label.

    Args:
      model: a Keras 3 classifier returning logits.
      path: an empty or missing directory.
      input_spec: ``{"name": ..., "shape": [None, ...], "dtype": ...}`` of the raw input.
      class_names: if given, the signature also returns ``class_name`` (tf.string).
    """
    import tensorflow as tf

    spec = tf.TensorSpec(tuple(input_spec["shape"]), tf.dtypes.as_dtype(input_spec["dtype"]),
                         name=input_spec["name"])
    names = tf.constant(list(class_names)) if class_names else None

    def serve(inputs):
        logits = tf.cast(model(inputs, training=False), tf.float32)
        label = tf.argmax(logits, axis=-1, output_type=tf.int32)
        out = {"logits": logits, "probabilities": tf.nn.softmax(logits, axis=-1), "label": label}
        if names is not None:
            out["class_name"] = tf.gather(names, label)
        return out

    save_serving_module(model, serve, [spec], path)


def write_text_classifier_saved_model(model: Any, preprocessor: Any, path: str, input_names: Sequence[str],
                                     class_names: Sequence[str] | None = None, logits_only: bool = False) -> None:
    """A SavedModel whose ``serving_default`` takes raw strings (``text``, and ``text_pair`` for pairs).

    Tokenization and packing run inside the graph (tensorflow-text ops: TF Serving needs a build
    that includes them). Returns logits, probabilities, label and class_name, or logits only.
    """
    import tensorflow as tf

    names = tf.constant(list(class_names)) if class_names else None
    specs = [tf.TensorSpec([None], tf.string, name=n) for n in input_names]

    def serve(*texts):
        logits = tf.cast(model(preprocessor(texts if len(texts) > 1 else texts[0]), training=False), tf.float32)
        if logits_only:
            return {"logits": logits}
        label = tf.argmax(logits, axis=-1, output_type=tf.int32)
        out = {"logits": logits, "probabilities": tf.nn.softmax(logits, axis=-1), "label": label}
        if names is not None:
            out["class_name"] = tf.gather(names, label)
        return out

    save_serving_module(model, serve, specs, path)


def write_logits_saved_model(model: Any, path: str, input_spec: dict[str, Any]) -> None:
    """A SavedModel with one signature returning logits only: the source for TFLite conversion.

    On-device code takes the argmax itself; a single float output keeps full-int8 conversion
    (int8 input and output) simple.
    """
    import tensorflow as tf

    spec = tf.TensorSpec(tuple(input_spec["shape"]), tf.dtypes.as_dtype(input_spec["dtype"]),
                         name=input_spec["name"])
    save_serving_module(model, lambda x: {"logits": tf.cast(model(x, training=False), tf.float32)}, [spec], path)


def directory_size(path: str) -> int:
    """Total bytes of the files under ``path``."""
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def write_translator_saved_model(translator: Any, path: str) -> None:
    """A SavedModel whose ``serving_default`` maps ``text`` (tf.string [batch]) to ``translation``
    (tf.string [batch]): tokenization, encoder, the decoding loop and detokenization in one graph."""
    import tensorflow as tf

    def serve(text):
        return {"translation": translator.target_tokenizer.detokenize(translator.generate_ids(text))}

    save_serving_module(translator.model, serve, [tf.TensorSpec([None], tf.string, name="text")], path)
