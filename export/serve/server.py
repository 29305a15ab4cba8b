"""``zoo serve``: start the manager, the gRPC server and the REST server; stop them gracefully.

Start-up loads every configured version (as TF Serving does before it opens its ports), binds both
ports (127.0.0.1 unless ``--host`` says otherwise; port 0 picks a free one), prints the models,
versions and URLs, then serves until SIGTERM or Ctrl-C: no new connections, in-flight requests
finish (REST and gRPC), then the process exits 0.
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
from collections.abc import Iterator
from typing import Any

from zoo.errors import ZooError
from zoo.export.serve.batching import BatchingParameters, parse_batching_parameters
from zoo.export.serve.errors import ServingError
from zoo.export.serve.manager import ConfigFileError, ModelManager
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


def serve(options: ServeOptions) -> int:
    """Run the server until SIGTERM / Ctrl-C; returns the exit code."""
    _check(options)  # before TensorFlow is imported: a mistyped path is answered at once
    batching = _batching(options)
    import uvicorn
    from grpc_health.v1 import health_pb2

    import zoo
    from zoo.export.serve.dataplane import DataPlane
    from zoo.export.serve.grpc_service import build_server
    from zoo.export.serve.metrics import Metrics
    from zoo.export.serve.rest import RestOptions, build_app

    holder: dict[str, Any] = {}

    def on_batch(*args: Any) -> None:
        holder["metrics"].on_batch(*args)

    try:
        manager = ModelManager(base=options.base, config_file=options.model_config_file, batching=batching,
                               on_batch=on_batch, max_load_retries=options.max_num_load_retries,
                               load_retry_interval=options.load_retry_interval_micros / 1e6)
    except ConfigFileError as exc:
        raise ServeError(str(exc)) from exc
    metrics = Metrics(manager.queued,
                      lambda: {n: manager.status(n) for n in manager.model_names() if _has_status(manager, n)})
    holder["metrics"] = metrics
    limits = Limits(options.max_instances, options.max_string_bytes)

    rest_sock = _bind(options.host, options.rest_api_port, "REST")
    plane = DataPlane(manager, metrics, options.request_timeout)
    grpc_server, health = build_server(plane, limits, options.grpc_max_message_bytes)
    try:
        grpc_port = grpc_server.add_insecure_port(f"[{options.host}]:{options.port}" if ":" in options.host
                                                  else f"{options.host}:{options.port}")
    except RuntimeError:
        grpc_port = 0
    if grpc_port == 0:
        rest_sock.close()
        raise ServeError(f"cannot listen on {options.host}:{options.port} for gRPC (in use, or not an address of "
                         "this machine); choose another --port (0 picks a free one)")

    manager.start(options.file_system_poll_wait_seconds)
    stop_health = threading.Event()

    def update_health() -> None:
        serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
        while not stop_health.is_set():
            state = serving if manager.ready() else not_serving
            for service in ("", "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService"):
                health.set(service, state)
            stop_health.wait(0.5)

    health_thread = threading.Thread(target=update_health, name="health", daemon=True)
    health_thread.start()
    grpc_server.start()

    app = build_app(plane, RestOptions(options.max_body_bytes, limits, options.cors, zoo.__version__))
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", timeout_graceful_shutdown=30,
                            server_header=False)
    grpc_stopped: list[Any] = []

    def stop_grpc() -> None:  # both servers stop taking requests at the same moment
        if not grpc_stopped:
            log.info("stopping: no new requests; finishing the ones in flight")
            grpc_stopped.append(grpc_server.stop(grace=30))

    server = _Server(config, on_exit=stop_grpc)
    rest_port = rest_sock.getsockname()[1]
    shown = f"[{options.host}]" if ":" in options.host else options.host
    print("zoo serve: models", *describe(manager), sep="\n")
    print(f"REST  http://{shown}:{rest_port}  (TF Serving /v1/models/NAME[:predict], KServe /v2, "
          "/monitoring/prometheus/metrics)")
    print(f"gRPC  {shown}:{grpc_port}  (tensorflow.serving.PredictionService, ModelService, grpc.health.v1)")
    print("batching: " + (str(dataclasses.asdict(batching)) if batching else "off (--enable-batching)"))
    print("Ctrl-C or SIGTERM stops after the requests in flight.", flush=True)
    try:
        server.run(sockets=[rest_sock])
    finally:
        stop_grpc()
        grpc_stopped[0].wait()
        stop_health.set()
        manager.stop()
        plane.close()
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
