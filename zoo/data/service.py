"""tf.data service for distributed preprocessing: TensorFlow's own dispatcher and workers, run by zoo.

A training job whose input pipeline costs more CPU than its trainers have hands the pipeline to a tf.data
service (``tf.data.experimental.service``): a dispatcher hands out the epoch's files, service workers
read, parse, batch and mask them, and every trainer reads finished batches from whichever worker has
some. ``zoo launch --data-service-workers K`` starts one locally; in a cluster the dispatcher and the
workers are their own pods (recipes/deploy/data_service.yaml):

    python -m zoo.data.service dispatcher --port 5050
    python -m zoo.data.service worker --dispatcher zoo-data-dispatcher:5050 --port 5051 --address $POD_IP
    python -m zoo.data.service local --workers 2 --port 5050      # a dispatcher and 2 workers in one process

Each prints one ``ready`` line naming its address once it is serving, and runs until SIGTERM or Ctrl-C.

A run reads through the service with ``--set train.data_service=grpc://HOST:PORT`` (``zoo launch``
adds it): its training pipeline goes to the service with ``processing_mode="distributed_epoch"``, so
every record of a pass over the data is read by exactly one worker and reaches exactly one trainer.
The order in which workers finish their files is not deterministic, so a resumed run restarts the
pass it was in instead of skipping to its exact record (without the service it skips exactly).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from zoo.errors import ConfigError

PROTOCOL = "grpc"


def service_address(value: str) -> str:
    """``grpc://host:port`` from ``host:port`` or ``grpc://host:port``; a clear error otherwise."""
    address = value.strip()
    if address.startswith(f"{PROTOCOL}://"):
        address = address[len(PROTOCOL) + 3:]
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"train.data_service={value!r} is not a tf.data service address; give the dispatcher "
                          f"as grpc://HOST:PORT (e.g. grpc://127.0.0.1:5050)")
    return f"{PROTOCOL}://{host}:{port}"


def job_name(run_dir: str, first_step: int) -> str:
    """The service job the trainers of one run (and one resumption of it) share: they read its batches
    between them, each batch once. A resumed run starts a new job (the old one's position is lost)."""
    digest = hashlib.sha256(os.path.abspath(run_dir).encode()).hexdigest()[:12]
    return f"zoo-{digest}-step{first_step}"


def pass_files(files: Sequence[str], seed: int, first_pass: int, passes: int) -> list[str]:
    """The file order of passes ``first_pass .. first_pass + passes - 1`` one after the other, each a seeded
    permutation of ``files`` (what the dispatcher hands out, one file at a time, in this order)."""
    import numpy as np

    out: list[str] = []
    for p in range(first_pass, first_pass + passes):
        out += [files[i] for i in np.random.default_rng([seed, p]).permutation(len(files))]
    return out


def distribute(dataset: Any, address: str, job: str) -> Any:
    """``dataset`` read through the service at ``address`` as job ``job`` (distributed_epoch: its source,
    a list of files, is split between the service's workers, each file to one)."""
    import tensorflow as tf

    return dataset.apply(tf.data.experimental.service.distribute(
        processing_mode=tf.data.experimental.service.ShardingPolicy.DYNAMIC, service=address, job_name=job))


def _wait_for_stop() -> None:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(3600):
        pass


def _load_ops() -> None:
    """Register the ops a recipe's pipeline may hold (tensorflow-text's tokenizers) in this process."""
    import tensorflow_text  # noqa: F401


def start_dispatcher(port: int) -> Any:
    import tensorflow as tf

    return tf.data.experimental.service.DispatchServer(
        tf.data.experimental.service.DispatcherConfig(port=port, protocol=PROTOCOL))


def start_worker(dispatcher: str, port: int, address: str | None) -> Any:
    import tensorflow as tf

    config = tf.data.experimental.service.WorkerConfig(
        dispatcher_address=dispatcher.split("://")[-1], port=port, protocol=PROTOCOL,
        worker_address=f"{address}:{port}" if address else None)
    return tf.data.experimental.service.WorkerServer(config)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.data.service", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="role", required=True)
    p_d = sub.add_parser("dispatcher", help="the dispatcher (one per job)")
    p_d.add_argument("--port", type=int, default=5050)
    p_w = sub.add_parser("worker", help="a service worker")
    p_w.add_argument("--dispatcher", required=True, help="the dispatcher's HOST:PORT")
    p_w.add_argument("--port", type=int, default=5051)
    p_w.add_argument("--address", help="the host trainers reach this worker at (default: this host's name)")
    p_l = sub.add_parser("local", help="a dispatcher and --workers workers in this process (zoo launch)")
    p_l.add_argument("--workers", type=int, required=True)
    p_l.add_argument("--port", type=int, required=True, help="the dispatcher's port")
    p_l.add_argument("--worker-ports", dest="worker_ports", default="",
                     help="comma-separated ports of the workers (default: free ones)")
    args = parser.parse_args(argv)
    if args.role == "local" and args.workers < 1:
        print(f"error: --workers {args.workers}: the service needs at least 1 worker", file=sys.stderr)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from zoo.console import filtered_stderr

    with filtered_stderr():
        return _serve(args)


def _serve(args: argparse.Namespace) -> int:
    _load_ops()
    servers = []
    if args.role == "dispatcher":
        servers.append(start_dispatcher(args.port))
        print(f"ready: tf.data service dispatcher at {PROTOCOL}://{_host()}:{args.port}", flush=True)
    elif args.role == "worker":
        servers.append(start_worker(args.dispatcher, args.port, args.address))
        print(f"ready: tf.data service worker at {args.address or _host()}:{args.port}, dispatcher "
              f"{args.dispatcher}", flush=True)
    else:
        ports = [int(p) for p in args.worker_ports.split(",") if p] or [0] * args.workers
        servers.append(start_dispatcher(args.port))
        for port in ports:
            servers.append(start_worker(f"127.0.0.1:{args.port}", port, "127.0.0.1" if port else None))
        print(f"ready: tf.data service at {PROTOCOL}://127.0.0.1:{args.port} with {len(ports)} worker(s)",
              flush=True)
    _wait_for_stop()
    return 0


def _host() -> str:
    import socket

    return socket.gethostname()


if __name__ == "__main__":
    raise SystemExit(main())
