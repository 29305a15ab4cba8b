"""Which versions are served: TF Serving's Manager (version lifecycle, reference counts, batchers).

At every poll the manager asks its source (``zoo.export.serve.source``: a base path rescanned so new
exports appear, a ``models.config`` re-read when it changes, or a fixed list) which models to serve, then
asks the version policy (``zoo.export.serve.lifecycle.next_actions``, a pure
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
from zoo.export.serve.source import ModelConfig, StaticSource, modified_time, source_for, versions_on_disk
from zoo.export.serve.tensors import Signature

log = logging.getLogger(__name__)


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
                 configs: list[ModelConfig] | None = None, source: Any = None,
                 batching: BatchingParameters | None = None, loader: Callable[[str], Any] | None = None,
                 warmup: Callable[[Any], int] | None = None,
                 on_batch: Callable[[str, int, str, int, int], None] | None = None,
                 max_load_retries: int = 5, load_retry_interval: float = 60.0):
        # Where the models come from (a base path, a models.config, a list; or any object with configs()).
        self.source = source if source is not None else source_for(base=base, config_file=config_file,
                                                                    configs=configs)
        self.batching = batching
        self._loader, self._warmup, self._on_batch = loader, warmup, on_batch
        self.max_load_retries, self.load_retry_interval = max_load_retries, load_retry_interval
        # One pool of batch threads for every model, version and signature (TF Serving's shared scheduler).
        self._scheduler = BatchScheduler(batching.num_batch_threads) if batching is not None else None
        self._lock = threading.RLock()
        self._poll_lock = threading.Lock()
        self._models: dict[str, dict[int, Version]] = {}
        self._configs: dict[str, ModelConfig] = {}  # what the source said at the last poll
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- configuration

    def reload(self, configs: list[ModelConfig]) -> None:
        """Serve exactly these models from now on (ModelService.HandleReloadConfigRequest): the base path
        and config file are no longer watched. Applied by a poll before returning."""
        with self._lock:
            self.source = StaticSource(configs)
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
        with self._lock:
            source = self.source
        fresh = source.configs()
        with self._lock:
            self._configs = {c.name: c for c in fresh}
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
        return version.mtime != modified_time(version.path) or retry_due(
            version.failures, version.failed_at, time.monotonic(), self.max_load_retries, self.load_retry_interval)

    def _load(self, model: str, number: int, path: str) -> None:
        with self._lock:
            previous = self._models[model].get(number)
            mtime = modified_time(path)
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
