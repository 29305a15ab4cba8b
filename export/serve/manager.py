"""Which models and versions are served: TF Serving's model config and version lifecycle.

Models come from a base path (every ``NAME/<int>`` holding a SavedModel, rescanned at every poll so
new exports appear) or a ``models.config`` (text-format ``ModelServerConfig``, re-read when it
changes). Each poll asks the version policy (``zoo.export.serve.lifecycle.next_actions``, a pure
function) what to do with the versions the config aspires to (``latest {num_versions}``, ``all``,
``specific``) and carries it out: new versions are loaded, warmed up and marked AVAILABLE, and only
then are the versions they replace retired; a retired version is UNLOADING until its last in-flight
request (queued in a batcher too) has finished, then END. A version that fails to load is END with
its error in the status, never served, and tried again up to ``max_load_retries`` times with a
doubling wait (TF Serving's ``--max_num_load_retries``, ``--load_retry_interval_micros``), and
whenever its directory changes. States and status as ``GetModelStatusResponse``: START, LOADING,
AVAILABLE, UNLOADING, END.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from zoo.export.serve.batching import Batcher, BatchingParameters, BatchScheduler
from zoo.export.serve.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from zoo.export.serve.lifecycle import Seen, State, next_actions, retry_due
from zoo.export.serve.tensors import Signature

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


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return -1.0


@dataclasses.dataclass
class Version:
    model: str
    number: int
    path: str
    state: State = State.START
    error: str = ""
    servable: Any = None
    refs: int = 0
    mtime: float = 0.0  # of its directory when the load started
    failures: int = 0  # failed loads of this directory content in a row
    failed_at: float = 0.0  # time.monotonic() of the last failure
    batchers: dict[str, Batcher] = dataclasses.field(default_factory=dict)


class Handle:
    """A version held for one request: it is not unloaded before ``close``."""

    def __init__(self, manager: ModelManager, version: Version):
        self._manager, self._version = manager, version
        self.model, self.number, self.servable = version.model, version.number, version.servable

    def signature(self, name: str | None) -> Signature:
        return self.servable.signature(name)

    def predict_signature(self, name: str | None) -> Signature:
        """The signature, which must be a predict one (classify / regress signatures have their own verbs)."""
        sig = self.signature(name)
        if sig.method != "tensorflow/serving/predict":
            raise FailedPrecondition(f"signature '{sig.name}' is a {sig.method} signature, not a predict one")
        return sig

    def signature_def_map(self) -> Any:
        """The version's SignatureDefs as the ``SignatureDefMap`` TF Serving's metadata APIs return."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        defs = get_model_metadata_pb2.SignatureDefMap()
        for key, d in self.servable.signature_defs.items():
            defs.signature_def[key].CopyFrom(d)
        return defs

    def run(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.servable.run(signature, inputs)

    def batcher(self, signature: str) -> Batcher | None:
        return self._manager.batcher_for(self._version, signature)

    def close(self) -> None:
        self._manager.release(self._version)

    def __enter__(self) -> Handle:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class ModelManager:
    """Loads, serves and retires versions; see the module docstring. Thread-safe."""

    def __init__(self, *, base: str | None = None, config_file: str | None = None,
                 configs: list[ModelConfig] | None = None,
                 batching: BatchingParameters | None = None, loader: Callable[[str], Any] | None = None,
                 warmup: Callable[[Any], int] | None = None,
                 on_batch: Callable[[str, int, str, int, int], None] | None = None,
                 max_load_retries: int = 5, load_retry_interval: float = 60.0):
        if sum(x is not None for x in (base, config_file, configs)) != 1:
            raise ValueError("serve one of: a base path, a model config file, a list of model configs")
        self.base, self.config_file, self.batching = base, config_file, batching
        self._loader, self._warmup, self._on_batch = loader, warmup, on_batch
        self.max_load_retries, self.load_retry_interval = max_load_retries, load_retry_interval
        # One pool of batch threads for every model, version and signature (TF Serving's shared scheduler).
        self._scheduler = BatchScheduler(batching.num_batch_threads) if batching is not None else None
        self._lock = threading.RLock()
        self._poll_lock = threading.Lock()
        self._models: dict[str, dict[int, Version]] = {}
        self._configs: dict[str, ModelConfig] = {}
        self._config_mtime = -2.0
        self._tflite_only_reported: set[str] = set()  # base-path models said once not to be served
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if config_file is not None:
            self._read_config_file(initial=True)
        if configs is not None:
            self.set_configs(configs)

    # -- configuration

    def _read_config_file(self, initial: bool = False) -> None:
        assert self.config_file is not None
        mtime = _mtime(self.config_file)
        if mtime == self._config_mtime:
            return
        try:
            with open(self.config_file, encoding="utf-8") as fh:
                configs = parse_model_config(fh.read(), self.config_file)
        except (OSError, ConfigFileError) as exc:
            if initial:
                raise ConfigFileError(str(exc)) from exc
            log.error("keeping the previous model config: %s", exc)
            self._config_mtime = mtime
            return
        self.set_configs(configs)
        self._config_mtime = mtime
        if not initial:
            log.info("model config reloaded from %s", self.config_file)

    def set_configs(self, configs: list[ModelConfig]) -> None:
        with self._lock:
            self._configs = {c.name: c for c in configs}

    def reload(self, configs: list[ModelConfig]) -> None:
        """Serve exactly these models from now on (ModelService.HandleReloadConfigRequest): the base path
        and config file are no longer watched. Applied by a poll before returning."""
        with self._lock:
            self.base = self.config_file = None
            self.set_configs(configs)
        self.poll()

    def configs(self) -> list[ModelConfig]:
        with self._lock:
            return list(self._configs.values())

    # -- polling

    def start(self, poll_seconds: float = 1.0) -> None:
        """Load what is there now (before returning), then poll every ``poll_seconds`` (0: never)."""
        self.poll()
        if poll_seconds > 0:
            self._thread = threading.Thread(target=self._poll_loop, args=(poll_seconds,), name="model-poller",
                                            daemon=True)
            self._thread.start()

    def _poll_loop(self, seconds: float) -> None:
        while not self._stop.wait(seconds):
            try:
                self.poll()
            except Exception:  # the poller must survive anything the file system does
                log.exception("model poll failed")

    def poll(self) -> None:
        with self._poll_lock:  # the poller thread and a reload request never load the same version twice
            self._poll()

    def _poll(self) -> None:
        if self.config_file is not None:
            self._read_config_file()
        elif self.base is not None:
            self.set_configs(scan_base(self.base, self._tflite_only_reported))
        configs = self.configs()
        for cfg in configs:
            self._poll_model(cfg)
        with self._lock:
            gone = [m for m in self._models if m not in self._configs]
        for name in gone:
            with self._lock:
                versions = list(self._models[name].values())
            for v in versions:
                self._retire(v)
            with self._lock:
                if all(v.state == State.END for v in self._models[name].values()):
                    del self._models[name]

    def _poll_model(self, cfg: ModelConfig) -> None:
        on_disk = versions_on_disk(cfg)
        aspired = cfg.aspired(on_disk)
        with self._lock:
            versions = self._models.setdefault(cfg.name, {})
        for _ in range(len(aspired) + len(versions) + 2):  # every round settles something; bounded all the same
            with self._lock:
                seen = {n: Seen(v.state, bool(v.error), self._retry_due(v), n in on_disk) for n, v in versions.items()}
            actions = next_actions(aspired, seen)
            if not actions:
                break
            for action in actions:
                if action.kind == "load":
                    self._load(cfg.name, action.version, os.path.join(cfg.base_path, str(action.version)))
                else:
                    self._retire(versions[action.version])
        with self._lock:
            for n in [n for n, v in versions.items() if v.state == State.END and n not in on_disk]:
                del versions[n]

    def _retry_due(self, version: Version) -> bool:
        """A failed version may load again: its directory changed, or a retry's wait has passed."""
        if version.state != State.END or not version.error:
            return False
        return version.mtime != _mtime(version.path) or retry_due(
            version.failures, version.failed_at, time.monotonic(), self.max_load_retries, self.load_retry_interval)

    def _load(self, model: str, number: int, path: str) -> None:
        with self._lock:
            previous = self._models[model].get(number)
            mtime = _mtime(path)
            # Retries of the same directory content count up; a changed directory starts again.
            failures = previous.failures if previous is not None and previous.mtime == mtime else 0
            version = Version(model, number, path, state=State.LOADING, mtime=mtime, failures=failures)
            self._models[model][number] = version
        log.info("loading %s version %d from %s%s", model, number, path,
                 f" (retry {failures} of {self.max_load_retries})" if failures else "")
        try:
            servable = (self._loader or _load_saved_model)(path)
            warmed = (self._warmup or _replay_warmup)(servable)
        except Exception as exc:  # a broken version is reported, never served, and never takes the server down
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            with self._lock:
                version.error = f"{type(exc).__name__}: {text}"[:500]
                version.failures += 1
                version.failed_at = time.monotonic()
                version.state = State.END
            left = self.max_load_retries - version.failures + 1
            log.error("%s version %d failed to load: %s (%s)", model, number, version.error,
                      f"{left} retr{'y' if left == 1 else 'ies'} left" if left > 0 else
                      "no retries left; it loads again when its directory changes")
            return
        with self._lock:
            version.servable = servable
            version.state = State.AVAILABLE
        log.info("%s version %d is AVAILABLE%s", model, number, f" ({warmed} warm-up requests)" if warmed else "")

    def _retire(self, version: Version) -> None:
        with self._lock:
            if version.state not in (State.AVAILABLE, State.LOADING):
                return
            version.state = State.UNLOADING
            log.info("unloading %s version %d once its %d in-flight requests finish", version.model,
                     version.number, version.refs)
            idle = version.refs == 0
        if idle:
            self._finish(version)

    def _finish(self, version: Version) -> None:
        with self._lock:
            batchers = list(version.batchers.values())
            version.batchers.clear()
        for b in batchers:
            b.stop()
        with self._lock:
            version.servable = None
            version.state = State.END
        log.info("%s version %d unloaded", version.model, version.number)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            versions = [v for vs in self._models.values() for v in vs.values()]
        for v in versions:
            with self._lock:
                batchers = list(v.batchers.values())
                v.batchers.clear()
            for b in batchers:
                b.stop()
        if self._scheduler is not None:
            self._scheduler.close()

    # -- requests

    def acquire(self, name: str, version: int | None = None, label: str | None = None) -> Handle:
        """Hold the requested version (newest AVAILABLE by default) for one request."""
        with self._lock:
            if name not in self._configs or name not in self._models:
                raise NotFound(f"Servable not found for request: Latest({name})")
            versions = self._models[name]
            if label is not None:
                labels = dict(self._configs[name].labels)
                if label not in labels:
                    raise InvalidArgument(f"Unrecognized servable version label: {label}")
                version = labels[label]
            if version is None:
                available = [v for n, v in sorted(versions.items()) if v.state == State.AVAILABLE]
                if not available:
                    states = ", ".join(f"{n}: {v.state}" for n, v in sorted(versions.items())) or "none on disk"
                    raise Unavailable(f"Servable not found for request: Latest({name}): no version is AVAILABLE "
                                      f"yet (versions: {states})")
                chosen = available[-1]
            else:
                chosen = versions.get(version)
                if chosen is None or chosen.state != State.AVAILABLE:
                    raise NotFound(f"Servable not found for request: Specific({name}, {version})")
            chosen.refs += 1
            return Handle(self, chosen)

    def release(self, version: Version) -> None:
        with self._lock:
            version.refs -= 1
            finish = version.refs == 0 and version.state == State.UNLOADING
        if finish:
            threading.Thread(target=self._finish, args=(version,), daemon=True).start()

    def batcher_for(self, version: Version, signature: str) -> Batcher | None:
        if self.batching is None:
            return None
        with self._lock:
            batcher = version.batchers.get(signature)
            if batcher is None:
                servable = version.servable

                def on_batch(rows: int, size: int, v: Version = version) -> None:
                    if self._on_batch is not None:
                        self._on_batch(v.model, v.number, signature, rows, size)

                batcher = Batcher(lambda inputs: servable.run(signature, inputs), self.batching,
                                  f"{version.model}-{version.number}-{signature}", on_batch, self._scheduler)
                version.batchers[signature] = batcher
            return batcher

    # -- status

    def status(self, name: str, version: int | None = None) -> list[tuple[int, str, str]]:
        """(version, state, error) of every version known, newest first (TF Serving's order)."""
        with self._lock:
            if name not in self._configs:
                raise NotFound(f"Could not find any versions of model {name}")
            versions = self._models.get(name, {})
            if version is not None:
                if version not in versions:
                    raise NotFound(f"Could not find version {version} of model {name}")
                return [(version, versions[version].state, versions[version].error)]
            if not versions:
                raise NotFound(f"Could not find any versions of model {name}")
            return [(n, v.state, v.error) for n, v in sorted(versions.items(), reverse=True)]

    def status_proto(self, name: str, version: int | None = None) -> Any:
        """``GetModelStatusResponse`` of a model (one version, or every version it knows)."""
        from tensorflow_serving.apis import get_model_status_pb2

        states = get_model_status_pb2.ModelVersionStatus.State
        response = get_model_status_pb2.GetModelStatusResponse()
        for number, state, error in self.status(name, version):
            entry = response.model_version_status.add(version=number, state=states.Value(state))
            entry.status.SetInParent()  # TF Serving always shows the status, OK included
            if error:
                entry.status.error_code = 13  # tensorflow.error.Code INTERNAL
                entry.status.error_message = error
        return response

    def model_names(self) -> list[str]:
        with self._lock:
            return sorted(self._configs)

    def available(self) -> dict[str, list[int]]:
        with self._lock:
            return {name: sorted(n for n, v in self._models.get(name, {}).items() if v.state == State.AVAILABLE)
                    for name in sorted(self._configs)}

    def ready(self) -> bool:
        """Every configured model has an AVAILABLE version (the readiness answer for load balancers)."""
        available = self.available()
        return bool(available) and all(available.values())

    def queued(self) -> dict[tuple[str, int, str], tuple[int, int]]:
        """(batches, requests) waiting for a batch thread, per (model, version, signature) with a batcher."""
        with self._lock:
            batchers = [((v.model, v.number, sig), b) for vs in self._models.values() for v in vs.values()
                        for sig, b in v.batchers.items()]
        return {key: b.queue_depth() for key, b in batchers}


def _load_saved_model(path: str) -> Any:
    from zoo.export.serve.servable import Servable

    return Servable(path)


def _replay_warmup(servable: Any) -> int:
    from zoo.export.serve.servable import replay_warmup

    return replay_warmup(servable)
