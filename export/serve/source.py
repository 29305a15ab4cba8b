"""Where the served models come from: TF Serving's Source, apart from the version lifecycle.

A source answers one question at every poll: which models should be served now, each with its base path
and version policy (:class:`ModelConfig`). :class:`BasePathSource` rescans a base path (every ``NAME/<int>``
holding a SavedModel, so new exports appear); :class:`ConfigFileSource` re-reads a ``models.config``
(text-format ``ModelServerConfig``) when it changes and keeps the previous models if the new file is
broken; :class:`StaticSource` is a fixed list (a ReloadConfigRequest's, or a test's). The manager
(``zoo.export.serve.manager``) asks its source, then the version policy, then loads and retires.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

log = logging.getLogger(__name__)


class ConfigFileError(ValueError):
    """A models.config that cannot be used, with the reason."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """One ``model_config_list`` entry."""

    name: str
    base_path: str
    policy: str = "latest"  # latest | all | specific
    num_versions: int = 1
    versions: tuple[int, ...] = ()
    labels: tuple[tuple[str, int], ...] = ()
    saved_model_only: bool = False  # base-path mode: TFLite-only versions are not candidates

    def aspired(self, on_disk: list[int]) -> list[int]:
        if self.policy == "all":
            return list(on_disk)
        if self.policy == "specific":
            return [v for v in on_disk if v in self.versions]
        return list(on_disk[-self.num_versions:])


def parse_model_config(text: str, source: str) -> list[ModelConfig]:
    """TF Serving's ``model_config_list { config { ... } }`` -> ModelConfigs (relative base paths are
    taken from the config file's folder)."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    msg = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, msg)
    except text_format.ParseError as exc:
        raise ConfigFileError(f"{source}: {exc} (expected TF Serving's ModelServerConfig text format: "
                              "model_config_list { config { name: 'x' base_path: '/models/x' } })") from exc
    return configs_from_proto(msg, source, os.path.dirname(os.path.abspath(source)))


def configs_from_proto(msg: Any, source: str, folder: str) -> list[ModelConfig]:
    """ModelConfigs of a ``ModelServerConfig`` message (a file's, or a ReloadConfigRequest's)."""
    if msg.WhichOneof("config") != "model_config_list":
        raise ConfigFileError(f"{source}: needs a model_config_list (custom_model_config is not supported)")
    out, seen = [], set()
    for c in msg.model_config_list.config:
        if not c.name or not c.base_path:
            raise ConfigFileError(f"{source}: every config needs a name and a base_path")
        if c.name in seen:
            raise ConfigFileError(f"{source}: model '{c.name}' is configured twice")
        seen.add(c.name)
        if c.model_platform not in ("", "tensorflow"):
            raise ConfigFileError(f"{source}: model '{c.name}' has model_platform '{c.model_platform}'; "
                                  "zoo serve serves 'tensorflow' SavedModels")
        kind = c.model_version_policy.WhichOneof("policy_choice") or "latest"
        num = c.model_version_policy.latest.num_versions if kind == "latest" else 1
        versions = tuple(c.model_version_policy.specific.versions) if kind == "specific" else ()
        if kind == "specific" and not versions:
            raise ConfigFileError(f"{source}: model '{c.name}': a specific policy needs at least one version")
        base = c.base_path if os.path.isabs(c.base_path) else os.path.join(folder, c.base_path)
        out.append(ModelConfig(c.name, base, kind, max(1, num), versions,
                               tuple(sorted((k, int(v)) for k, v in c.version_labels.items()))))
    return out


def scan_base(base: str, reported: set[str]) -> list[ModelConfig]:
    """Every ``NAME`` directory under ``base`` (hidden ones excepted) with a SavedModel version, latest
    version served. A model whose versions hold TFLite files only is left out, said once in the log
    (``reported``: the caller's names already said)."""
    try:
        names = sorted(d for d in os.listdir(base) if not d.startswith(".") and os.path.isdir(os.path.join(base, d)))
    except OSError as exc:
        log.warning("cannot list %s: %s", base, exc)
        return []
    configs = []
    for name in names:
        cfg = ModelConfig(name, os.path.join(base, name), saved_model_only=True)
        if versions_on_disk(cfg):
            configs.append(cfg)
        elif name not in reported and versions_on_disk(dataclasses.replace(cfg, saved_model_only=False)):
            reported.add(name)
            log.info("not serving %s: its versions hold TFLite files only, no SavedModel", name)
    return configs


def versions_on_disk(cfg: ModelConfig) -> list[int]:
    """Integer version directories (staging dirs ``.tmp-*`` and other names are not versions)."""
    try:
        names = os.listdir(cfg.base_path)
    except OSError:
        return []
    found = []
    for d in names:
        path = os.path.join(cfg.base_path, d)
        if d.isdigit() and os.path.isdir(path):
            if cfg.saved_model_only and not os.path.isfile(os.path.join(path, "saved_model.pb")):
                continue
            found.append(int(d))
    return sorted(found)


def modified_time(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return -1.0


class StaticSource:
    """A fixed list of models."""

    def __init__(self, configs: list[ModelConfig]):
        self._configs = list(configs)

    def configs(self) -> list[ModelConfig]:
        return list(self._configs)


class BasePathSource:
    """Every model under a base path, rescanned at each call."""

    def __init__(self, base: str):
        self.base = base
        self._tflite_only_reported: set[str] = set()  # models said once not to be served

    def configs(self) -> list[ModelConfig]:
        return scan_base(self.base, self._tflite_only_reported)


class ConfigFileSource:
    """The models of a ``models.config``, re-read when its modification time changes. A file that cannot be
    read at start-up is a ConfigFileError; later, the previous models stay and the error is logged."""

    def __init__(self, path: str):
        self.path = path
        self._mtime = -2.0
        self._configs: list[ModelConfig] = []
        self._read(initial=True)

    def configs(self) -> list[ModelConfig]:
        self._read()
        return list(self._configs)

    def _read(self, initial: bool = False) -> None:
        mtime = modified_time(self.path)
        if mtime == self._mtime:
            return
        try:
            with open(self.path, encoding="utf-8") as fh:
                configs = parse_model_config(fh.read(), self.path)
        except (OSError, ConfigFileError) as exc:
            if initial:
                raise ConfigFileError(str(exc)) from exc
            log.error("keeping the previous model config: %s", exc)
            self._mtime = mtime
            return
        self._configs, self._mtime = configs, mtime
        if not initial:
            log.info("model config reloaded from %s", self.path)


def source_for(*, base: str | None = None, config_file: str | None = None,
               configs: list[ModelConfig] | None = None) -> Any:
    """The source of exactly one of: a base path, a models.config file, a list of configs."""
    if sum(x is not None for x in (base, config_file, configs)) != 1:
        raise ValueError("serve one of: a base path, a model config file, a list of model configs")
    if base is not None:
        return BasePathSource(base)
    if config_file is not None:
        return ConfigFileSource(config_file)
    return StaticSource(configs or [])
