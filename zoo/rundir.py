"""The run directory: the contract between training, export and serving, owned here alone.

A run directory holds::

    config.yaml       the resolved config (rerunning with --config config.yaml repeats the run)
    run.json          what every consumer needs: recipe, task, model, inputs, vocabularies, classes
    backup/           BackupAndRestore state while a run is unfinished (a restart resumes here)
    checkpoints/      weights after every epoch
    logs/             TensorBoard event files
    metrics.json      per-epoch metrics, resumes, and the final evaluation
    curves.png        loss and metric curves
    vocab.txt         (text tasks) the WordPiece vocabulary; target_vocab.txt for separate target vocabularies
    eval_sample.npz   held-out examples that exports are verified on
    calibration.npz   training inputs for int8 calibration
    model.keras       the final model, written last (its presence marks a finished run)

``run.json`` is one dataclass per task (each task plugin in ``zoo.tasks`` declares its own) plus a
schema version; :class:`RunDir` is
the only code that joins paths inside a run directory or reads its keys. A reader gets typed
fields and the objects it needs (``load_model``, ``eval_sample``, ``preprocessor``...), and a
clear error for an unfinished run, a missing file, an unknown task or a newer schema.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from zoo.errors import ZooError

# Bump when a change to run.json would be misread by older code; readers refuse newer versions.
SCHEMA_VERSION = 1


class RunDirError(ZooError, ValueError):
    """A run directory that is missing, unfinished, incomplete or not readable by this version."""


# ----------------------------------------------------------------------------- run.json schema


@dataclass(frozen=True)
class SignatureTensor:
    """One raw tensor of the serving signature, an input as it takes it or an output as it gives it."""

    name: str
    dtype: str
    shape: tuple[Any, ...] = (None,)
    pair_name: str | None = None          # text pairs: the second string input
    pixel_range: tuple[float, float] | None = None  # images: the range of raw pixel values


@dataclass(frozen=True)
class WordPieceSpec:
    """How raw text becomes BERT inputs: the vocabulary file in the run dir and the packing."""

    vocabulary_file: str
    sequence_length: int
    lowercase: bool


@dataclass(frozen=True)
class Seq2SeqTextSpec:
    """Tokenization of both sides of a text-to-text model."""

    source_vocabulary_file: str
    target_vocabulary_file: str
    max_source_length: int
    max_target_length: int
    lowercase: bool


@dataclass(frozen=True)
class RunInfo:
    """Fields every run.json has. ``data`` is the recipe's free-form data summary (counts, skipped files)."""

    TASK: ClassVar[str] = ""
    recipe: str
    model: str
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def task(self) -> str:
        return self.TASK


def info_to_json(info: RunInfo) -> dict[str, Any]:
    """run.json content: the task, the schema version, then the dataclass fields."""
    return {"schema_version": SCHEMA_VERSION, "task": info.task, **_plain(dataclasses.asdict(info))}


def info_from_json(data: dict[str, Any], where: str = "run.json") -> RunInfo:
    """Parse run.json content into its task's dataclass, with errors naming the file."""
    version = data.get("schema_version", 1)  # files from before the field existed have this schema
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise RunDirError(f"{where} has schema version {version!r}, newer than this kzoo reads ({SCHEMA_VERSION}); "
                          "upgrade kzoo to read this run")
    from zoo.tasks import run_info_classes

    classes = run_info_classes()
    task = data.get("task")
    if task not in classes:
        raise RunDirError(f"{where} is for task {task!r}, which this kzoo does not know; known tasks: "
                          + ", ".join(sorted(classes)))
    fields = {k: v for k, v in data.items() if k not in ("schema_version", "task")}
    try:
        return _build(classes[task], fields, where)
    except RunDirError:
        raise
    except (TypeError, ValueError) as exc:
        raise RunDirError(f"{where} does not fit the {task} schema: {exc}") from exc


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise RunDirError(f"{where}: unknown field(s) {', '.join(unknown)} for {cls.__name__}")
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp) and isinstance(value, dict):
            value = _build(tp, value, where)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


# ----------------------------------------------------------------------------- the directory


class RunDir:
    """Paths and contents of one run directory.

    ``RunDir(path)`` only names it (training writes through it); :meth:`open` reads one that exists
    and checks it is complete enough for the caller.
    """

    CONFIG = "config.yaml"
    INFO = "run.json"
    BACKUP = "backup"
    CHECKPOINTS = "checkpoints"
    LOGS = "logs"
    METRICS = "metrics.json"
    CURVES = "curves.png"
    EVAL_SAMPLE = "eval_sample.npz"
    CALIBRATION = "calibration.npz"
    MODEL = "model.keras"
    MODEL_TMP = "model.tmp.keras"
    VOCAB = "vocab.txt"
    TARGET_VOCAB = "target_vocab.txt"
    COMPRESSED = "compressed"
    COMPRESSION = "compression.json"  # what a derived (compressed) run was made with
    WORKERS = ".workers"
    # Files a derived run (a pruned copy) shares with the run it came from.
    SHARED_FILES = (CONFIG, INFO, EVAL_SAMPLE, CALIBRATION, VOCAB, TARGET_VOCAB)

    def __init__(self, path: str):
        self.path = str(path)
        self._info: RunInfo | None = None

    def __repr__(self) -> str:
        return f"RunDir({self.path!r})"

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    # Named paths, so no caller spells a file name.
    config_path = property(lambda self: self.file(self.CONFIG))
    info_path = property(lambda self: self.file(self.INFO))
    backup_dir = property(lambda self: self.file(self.BACKUP))
    checkpoints_dir = property(lambda self: self.file(self.CHECKPOINTS))
    logs_dir = property(lambda self: self.file(self.LOGS))
    metrics_path = property(lambda self: self.file(self.METRICS))
    curves_path = property(lambda self: self.file(self.CURVES))
    eval_sample_path = property(lambda self: self.file(self.EVAL_SAMPLE))
    calibration_path = property(lambda self: self.file(self.CALIBRATION))
    model_path = property(lambda self: self.file(self.MODEL))

    # Weight states, named by the number of epochs they completed: backup/epoch-0007.weights.h5 (model and
    # optimizer, for resuming) and checkpoints/epoch-007.weights.h5 (kept for the user, the newest few).
    _STATE = re.compile(r"^epoch-(\d+)\.weights\.h5$")

    def backup_state_path(self, epoch: int) -> str:
        return os.path.join(self.backup_dir, f"epoch-{epoch:04d}.weights.h5")

    def checkpoint_path(self, epoch: int) -> str:
        return os.path.join(self.checkpoints_dir, f"epoch-{epoch:03d}.weights.h5")

    def _states(self, folder: str) -> list[tuple[int, str]]:
        if not os.path.isdir(folder):
            return []
        found = [(int(m.group(1)), os.path.join(folder, f)) for f in os.listdir(folder)
                 if (m := self._STATE.match(f))]
        return sorted(found, reverse=True)

    def backup_states(self) -> list[tuple[int, str]]:
        """(epochs completed, file) of the resume states in backup/, newest first."""
        return self._states(self.backup_dir)

    def checkpoints(self) -> list[tuple[int, str]]:
        """(epochs completed, file) of the epoch checkpoints, newest first."""
        return self._states(self.checkpoints_dir)

    def worker_dir(self, task: str) -> RunDir:
        """Resume state of a non-chief multi-worker task (it never writes the run dir itself)."""
        return RunDir(os.path.join(self.workers_root, task))

    @property
    def workers_root(self) -> str:
        """Where non-chief multi-worker tasks keep their resume state (removed when the last one ends)."""
        return os.path.join(self.path, self.WORKERS)

    def compressed_dir(self, label: str) -> RunDir:
        """A run derived from this one (``compressed/prune-0.80``)."""
        return RunDir(os.path.join(self.path, self.COMPRESSED, label))

    def staging(self) -> RunDir:
        """A sibling directory to build this run dir in before renaming it into place."""
        return RunDir(self.path.rstrip(os.sep) + ".tmp")

    # -- state

    @property
    def exists(self) -> bool:
        return os.path.isdir(self.path)

    @property
    def is_finished(self) -> bool:
        return os.path.isfile(self.model_path)

    @classmethod
    def open(cls, path: str, *, finished: bool = True, need: tuple[str, ...] = ()) -> RunDir:
        """An existing run dir with a readable run.json; ``finished`` requires model.keras,
        ``need`` lists further files (e.g. ``RunDir.EVAL_SAMPLE``) that must be there."""
        run = cls(path)
        if not path or not run.exists:
            raise RunDirError(f"run dir {path!r} does not exist; pass the directory `zoo train` wrote "
                              "(runs/<recipe>-<time> by default)")
        if not os.path.isfile(run.info_path):
            raise RunDirError(f"{path!r} has no {cls.INFO}; it is not a run dir written by `zoo train`")
        if finished and not run.is_finished:
            raise RunDirError(
                f"run dir {path!r} has no final model ({cls.MODEL}): the run did not finish. Resume it with "
                f"`zoo train {run.info.recipe} --run-dir {path}` and the same settings, then try again")
        for name in need:
            if not os.path.isfile(run.file(name)):
                raise RunDirError(f"run dir {path!r} lacks {name}; it was written by an incomplete or older run. "
                                  "Train it again with `zoo train`")
        return run

    # -- run.json

    @property
    def info(self) -> RunInfo:
        if self._info is None:
            try:
                with open(self.info_path, encoding="utf-8") as fh:
                    data = json.load(fh)
            except FileNotFoundError as exc:
                raise RunDirError(f"{self.path!r} has no {self.INFO}") from exc
            except (ValueError, UnicodeDecodeError) as exc:
                raise RunDirError(f"{self.info_path} is not valid JSON ({exc}); the run dir is damaged") from exc
            if not isinstance(data, dict):
                raise RunDirError(f"{self.info_path} must hold a JSON object")
            self._info = info_from_json(data, self.info_path)
        return self._info

    def expect(self, *classes: type[RunInfo], purpose: str) -> Any:
        """The run's info if it is one of ``classes``; otherwise an error saying what ``purpose`` needs."""
        info = self.info
        if not isinstance(info, classes):
            wanted = " or ".join(c.TASK for c in classes)
            raise RunDirError(f"{self.path!r} holds a {info.recipe} run (task {info.task}); "
                              f"{purpose} needs a run of task {wanted}")
        return info

    def write_info(self, info: RunInfo) -> None:
        from zoo.atomic import write_json_atomic

        write_json_atomic(self.info_path, info_to_json(info))
        self._info = info

    def read_config(self) -> dict[str, Any]:
        """config.yaml as a nested dict."""
        from zoo.config import load_config_file

        return load_config_file(self.config_path)

    def config_section(self, name: str) -> dict[str, Any]:
        """One top-level section of config.yaml (``model``, ``data``, ``train``...)."""
        config = self.read_config()
        if not isinstance(config.get(name), dict):
            raise RunDirError(f"{self.config_path} has no {name!r} section; the run dir is damaged or not from "
                              "`zoo train`")
        return dict(config[name])

    def model_config(self) -> Any:
        """The model's config dataclass, rebuilt from config.yaml through the registry."""
        from zoo import registry

        fields = self.config_section("model")
        return registry.make_config(fields.pop("name"), **fields)

    # -- contents

    def load_model(self, compile: bool = False) -> Any:
        import zoo

        return zoo.load(self.model_path, compile=compile)

    def _arrays(self, name: str, keys: tuple[str, ...]) -> tuple[Any, ...]:
        import numpy as np

        try:
            with np.load(self.file(name)) as z:
                return tuple(z[k] for k in keys)
        except FileNotFoundError as exc:
            raise RunDirError(f"run dir {self.path!r} lacks {name}; train the run again with `zoo train`") from exc
        except (OSError, ValueError, KeyError) as exc:
            raise RunDirError(f"{self.file(name)} is damaged ({exc}); train the run again") from exc

    def eval_sample(self) -> tuple[Any, Any]:
        """(inputs, labels or reference targets) held out for verifying exports."""
        return self._arrays(self.EVAL_SAMPLE, ("x", "y"))  # type: ignore[return-value]

    def calibration(self) -> Any:
        """Training inputs for int8 calibration, or None if the run has none."""
        if not os.path.isfile(self.calibration_path):
            return None
        return self._arrays(self.CALIBRATION, ("x",))[0]

    def write_eval_sample(self, x: Any, y: Any) -> None:
        self._write_arrays(self.EVAL_SAMPLE, x=x, y=y)

    def write_calibration(self, x: Any) -> None:
        self._write_arrays(self.CALIBRATION, x=x)

    def _write_arrays(self, name: str, **arrays: Any) -> None:
        import numpy as np

        # Texts travel as object arrays (variable length); the file keeps NumPy's str dtype so it loads
        # without pickle. These samples are small (a few hundred examples), so fixed width is harmless here.
        arrays = {k: np.asarray(v, dtype=str) if np.asarray(v).dtype == object else v for k, v in arrays.items()}
        tmp = self.file(f".{name}.tmp-{os.getpid()}.npz")
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, self.file(name))

    def write_text(self, name: str, text: str) -> None:
        from zoo.atomic import write_text_atomic

        write_text_atomic(self.file(name), text)

    def preprocessor(self) -> Any:
        """The ``BertPreprocessor`` a text classifier or masked LM was trained with."""
        from zoo.tasks.masked_lm import MaskedLMInfo
        from zoo.tasks.text_classification import TextClassificationInfo
        from zoo.tokenizers import BertPreprocessor, load_vocabulary

        info = self.expect(TextClassificationInfo, MaskedLMInfo, purpose="a BERT preprocessor")
        p = info.preprocessor
        return BertPreprocessor(load_vocabulary(self.file(p.vocabulary_file)), sequence_length=p.sequence_length,
                                lowercase=p.lowercase)

    def vocabulary(self) -> list[str]:
        """The WordPiece vocabulary of a BERT run."""
        from zoo.tasks.masked_lm import MaskedLMInfo
        from zoo.tasks.question_answering import QuestionAnsweringInfo
        from zoo.tasks.text_classification import TextClassificationInfo
        from zoo.tokenizers import load_vocabulary

        info = self.expect(TextClassificationInfo, MaskedLMInfo, QuestionAnsweringInfo, purpose="a vocabulary")
        return load_vocabulary(self.file(info.preprocessor.vocabulary_file))

    def tokenizers(self) -> tuple[Any, Any]:
        """(source, target) ``TextTokenizer`` of a translation run (the same object when shared)."""
        from zoo.tasks.translation import TranslationInfo
        from zoo.tokenizers import TextTokenizer, load_vocabulary

        p = self.expect(TranslationInfo, purpose="seq2seq tokenizers").preprocessor
        source = TextTokenizer(load_vocabulary(self.file(p.source_vocabulary_file)), p.lowercase)
        if p.target_vocabulary_file == p.source_vocabulary_file:
            return source, source
        return source, TextTokenizer(load_vocabulary(self.file(p.target_vocabulary_file)), p.lowercase)

    def copy_shared_files(self, target: RunDir) -> None:
        """Copy the files a derived run shares with this one into ``target`` (which must exist)."""
        import shutil

        for name in self.SHARED_FILES:
            if os.path.isfile(self.file(name)):
                shutil.copy2(self.file(name), target.file(name))


__all__ = ["SCHEMA_VERSION", "RunDir", "RunDirError", "RunInfo", "SignatureTensor", "WordPieceSpec", "Seq2SeqTextSpec",
           "info_to_json", "info_from_json"]
