"""``zoo serve``: start the manager, the gRPC server and the REST server; stop them gracefully.

Start-up loads every configured version (as TF Serving does before it opens its ports), binds both
ports (127.0.0.1 unless ``--host`` says otherwise; port 0 picks a free one), prints the models,
versions and URLs, then serves until SIGTERM or Ctrl-C: no new connections, in-flight requests
finish (REST and gRPC), then the process exits 0. :class:`ModelServer` is the same server as an object,
started and stopped from Python (the tests serve with it in their own process).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from zoo.errors import ZooError
from zoo.export.serve.batching import BatchingParameters, parse_batching_parameters
from zoo.export.serve.errors import ServingError
from zoo.export.serve.manager import ModelManager
from zoo.export.serve.source import ConfigFileError
from zoo.export.serve.tensors import Limits

log = logging.getLogger(__name__)

INT32_MAX = 2**31 - 1  # TF Serving's gRPC message limit


class ServeError(ZooError, RuntimeError):
    """A server that cannot start (bad paths, config files, ports)."""


@dataclasses.dataclass
class ServeOptions:
    base: str | None = None
    model_config_file: str | None = None
    host: str = "127.0.0.1"
    port: int = 8500  # gRPC, as TF Serving
    rest_api_port: int = 8501
    enable_batching: bool = False
    batching_parameters_file: str | None = None
    file_system_poll_wait_seconds: float = 1.0
    max_num_load_retries: int = 5  # TF Serving's defaults
    load_retry_interval_micros: int = 60_000_000
    max_body_bytes: int = 32 << 20
    max_instances: int = 1024
    max_string_bytes: int = 1 << 20
    request_timeout: float = 30.0
    grpc_max_message_bytes: int = INT32_MAX
    cors: bool = False


def _batching(options: ServeOptions) -> BatchingParameters | None:
    if options.batching_parameters_file:
        try:
            with open(options.batching_parameters_file, encoding="utf-8") as fh:
                return parse_batching_parameters(fh.read(), options.batching_parameters_file)
        except OSError as exc:
            raise ServeError(f"cannot read --batching-parameters-file: {exc}") from exc
        except ValueError as exc:
            raise ServeError(str(exc)) from exc
    return BatchingParameters() if options.enable_batching else None


def _check(options: ServeOptions) -> None:
    if options.base is None and options.model_config_file is None:
        raise ServeError("say what to serve: the export base path (zoo serve exports) or a TF Serving model config "
                         "(zoo serve --model-config-file exports/models.config)")
    if options.base is not None and options.model_config_file is not None:
        raise ServeError("give the base path or --model-config-file, not both (models.config names its own paths)")
    if options.base is not None and not os.path.isdir(options.base):
        raise ServeError(f"{options.base!r} is not a directory; serve the --to folder of `zoo export` "
                         "(it holds NAME/<version>/ directories)")
    if options.model_config_file is not None and not os.path.isfile(options.model_config_file):
        raise ServeError(f"--model-config-file {options.model_config_file!r} does not exist (`zoo export` writes "
                         "BASE/models.config)")
    for name in ("port", "rest_api_port"):
        if not 0 <= getattr(options, name) <= 65535:
            raise ServeError(f"--{name.replace('_', '-')} must be between 0 and 65535")
    if options.port and options.port == options.rest_api_port:
        raise ServeError("--port (gRPC) and --rest-api-port must differ")
    for name in ("max_num_load_retries", "load_retry_interval_micros"):
        if getattr(options, name) < 0:
            raise ServeError(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(options, name)}")


def _bind(host: str, port: int, what: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY on accepted connections only when the socket says
    # it is TCP; with proto 0 every keep-alive response waited ~40 ms on Nagle + the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port} for {what}: {exc.strerror or exc}; choose another port "
                         f"(port 0 picks a free one)") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def describe(manager: ModelManager) -> list[str]:
    lines = []
    for name in manager.model_names():
        try:
            entries = manager.status(name)
        except ServingError:
            entries = []
        parts = [f"{v} {state}" + (f" ({error})" if error else "") for v, state, error in entries]
        lines.append(f"  {name:<16} " + ("; ".join(parts) if parts else "no version on disk yet"))
    return lines or ["  (no models yet: exports appear as they are published)"]


class ModelServer:
    """``zoo serve`` as an object. Constructing it checks the options, binds both ports (``rest_port``,
    ``grpc_port``; 0 picks free ones) and builds the manager, the data plane and both servers;
    ``start()`` loads the models and serves from background threads until ``stop()``, which stops both
    sides taking requests, finishes the ones in flight and unloads (``with ModelServer(o) as s:`` does
    both); ``run()`` serves in this (main) thread until SIGTERM / Ctrl-C, as the command does."""

    def __init__(self, options: ServeOptions):
        _check(options)  # before TensorFlow is imported: a mistyped path is answered at once
        self.options, self.batching = options, _batching(options)
        import uvicorn

        import zoo
        from zoo.export.serve.dataplane import DataPlane
        from zoo.export.serve.grpc_service import build_server
        from zoo.export.serve.metrics import Metrics
        from zoo.export.serve.rest import RestOptions, build_app

        try:
            self.manager = ModelManager(base=options.base, config_file=options.model_config_file,
                                        batching=self.batching, on_batch=self._on_batch,
                                        max_load_retries=options.max_num_load_retries,
                                        load_retry_interval=options.load_retry_interval_micros / 1e6)
        except ConfigFileError as exc:
            raise ServeError(str(exc)) from exc
        manager = self.manager
        self.metrics = Metrics(manager.queued, lambda: {n: manager.status(n) for n in manager.model_names()
                                                        if _has_status(manager, n)})
        limits = Limits(options.max_instances, options.max_string_bytes)
        self.plane = DataPlane(manager, self.metrics, options.request_timeout)
        self._rest_sock = _bind(options.host, options.rest_api_port, "REST")
        self._grpc, self._health = build_server(self.plane, limits, options.grpc_max_message_bytes)
        try:
            grpc_port = self._grpc.add_insecure_port(f"[{options.host}]:{options.port}" if ":" in options.host
                                                     else f"{options.host}:{options.port}")
        except RuntimeError:
            grpc_port = 0
        if grpc_port == 0:
            self._rest_sock.close()
            raise ServeError(f"cannot listen on {options.host}:{options.port} for gRPC (in use, or not an address "
                             "of this machine); choose another --port (0 picks a free one)")
        self.rest_port, self.grpc_port = self._rest_sock.getsockname()[1], grpc_port
        shown = f"[{options.host}]" if ":" in options.host else options.host
        self.rest_url, self.grpc_address = f"http://{shown}:{self.rest_port}", f"{shown}:{self.grpc_port}"
        app = build_app(self.plane, RestOptions(options.max_body_bytes, limits, options.cors, zoo.__version__))
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", timeout_graceful_shutdown=30,
                                server_header=False)
        self._rest = _Server(config, on_exit=self._stop_grpc)
        self._grpc_stopped: list[Any] = []
        self._stop_health = threading.Event()
        self._thread: threading.Thread | None = None

    def _on_batch(self, *args: Any) -> None:
        self.metrics.on_batch(*args)

    def _begin(self) -> None:
        """Load what is configured (before answering anything, as TF Serving), then open the gRPC side."""
        from grpc_health.v1 import health_pb2

        self.manager.start(self.options.file_system_poll_wait_seconds)

        def update_health() -> None:
            serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
            while not self._stop_health.is_set():
                state = serving if self.manager.ready() else not_serving
                for service in ("", "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService"):
                    self._health.set(service, state)
                self._stop_health.wait(0.5)

        threading.Thread(target=update_health, name="health", daemon=True).start()
        self._grpc.start()

    def _stop_grpc(self) -> None:  # both sides stop taking requests at the same moment
        if not self._grpc_stopped:
            log.info("stopping: no new requests; finishing the ones in flight")
            self._grpc_stopped.append(self._grpc.stop(grace=30))

    def _finish(self) -> None:
        self._stop_grpc()
        self._grpc_stopped[0].wait()
        self._stop_health.set()
        self.manager.stop()
        self.plane.close()

    def start(self) -> ModelServer:
        """Serve from background threads; returns once the REST side accepts connections."""
        self._begin()
        self._thread = threading.Thread(target=self._rest.run, kwargs={"sockets": [self._rest_sock]}, name="rest",
                                        daemon=True)
        self._thread.start()
        while not self._rest.started and self._thread.is_alive():
            time.sleep(0.01)
        if not self._rest.started:
            self._finish()
            raise ServeError("the REST server did not start (see the log above)")
        return self

    def stop(self) -> None:
        """Stop taking requests, finish those in flight (REST and gRPC), unload every version."""
        if self._thread is None:
            return
        self._stop_grpc()
        self._rest.should_exit = True
        self._thread.join()
        self._thread = None
        self._finish()

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def run(self) -> None:
        """Serve in this thread until SIGTERM / Ctrl-C, printing the models and addresses first."""
        self._begin()
        print("zoo serve: models", *describe(self.manager), sep="\n")
        print(f"REST  {self.rest_url}  (TF Serving /v1/models/NAME[:predict], KServe /v2, "
              "/monitoring/prometheus/metrics)")
        print(f"gRPC  {self.grpc_address}  (tensorflow.serving.PredictionService, ModelService, grpc.health.v1)")
        print("batching: " + (str(dataclasses.asdict(self.batching)) if self.batching else "off (--enable-batching)"))
        print("Ctrl-C or SIGTERM stops after the requests in flight.", flush=True)
        try:
            self._rest.run(sockets=[self._rest_sock])
        finally:
            self._finish()


def serve(options: ServeOptions) -> int:
    """Run the server until SIGTERM / Ctrl-C; returns the exit code."""
    ModelServer(options).run()
    print("zoo serve: stopped", file=sys.stderr)
    return 0


def _server_class() -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, but a SIGTERM / Ctrl-C is not re-raised once the REST side has stopped (uvicorn
        does that, which would kill the process before the gRPC side and the batchers finish), and it
        stops the gRPC side at the same moment."""

        def __init__(self, config: Any, on_exit: Any):
            super().__init__(config)
            self._on_exit = on_exit

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():  # ModelServer.start(): stop() stops it
                yield
                return
            previous = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            self._on_exit()

    return Server


def _Server(config: Any, on_exit: Any) -> Any:  # noqa: N802 (a class built on first use: uvicorn imports late)
    return _server_class()(config, on_exit)


def _has_status(manager: ModelManager, name: str) -> bool:
    try:
        manager.status(name)
    except ServingError:
        return False
    return True
