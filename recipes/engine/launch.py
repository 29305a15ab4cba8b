"""``zoo launch``: a multi-worker job on this machine, one process per worker, as a cluster would run it.

    zoo launch --workers 2 -- zoo train image_classify --run-dir runs/mw

starts N copies of the command, each with the ``TF_CONFIG`` a cluster manager (Kubeflow's TFJob,
an indexed Kubernetes Job) would give it: the same ``cluster.worker`` list of ``host:port``
addresses, and its own ``task.index``. ``--strategy multi_worker`` is added to a ``zoo train``
command that names no strategy. Worker 0 is the chief: it alone writes the run dir; the others keep
their resume state under ``<run dir>/.workers/``. Their output is shown line by line, prefixed with the
worker's index.

``--data-service-workers K`` also starts a tf.data service (a dispatcher and K service workers, one
process: ``python -m zoo.data.service local``) before the job and stops it after; a ``zoo train``
command gets ``--set train.data_service=grpc://HOST:PORT``, so its training pipeline runs on the
service's workers (``zoo.data.service``).

If a worker dies, the others are stopped (a synchronous job cannot go on without it) and the command
fails with one line; running the same command again resumes every worker from the newest epoch all of
them saved. Ctrl-C stops every worker the same way.

No TensorFlow is imported here: the launcher only starts and watches processes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

from zoo.errors import ConfigError, ZooError


class WorkerFailed(ZooError):
    """A worker of the job exited with an error or was killed."""


def free_ports(count: int, host: str) -> list[int]:
    """``count`` distinct ports that are free on ``host`` now (bound, read, released)."""
    sockets, ports = [], []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((host, 0))
            sockets.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in sockets:
            s.close()
    return ports


def worker_command(command: Sequence[str], data_service: str = "") -> list[str]:
    """The command a worker runs: ``zoo ...`` through this Python (the same environment), and
    ``--strategy multi_worker`` added to a ``zoo train`` that names none (``data_service``: the
    ``train.data_service`` it reads through, added to a ``zoo train``)."""
    cmd = list(command)
    if not cmd:
        raise ConfigError("zoo launch needs the command to run after --, e.g. "
                          "zoo launch --workers 2 -- zoo train image_classify")
    if cmd[0] == "zoo":
        cmd = [sys.executable, "-m", "zoo.cli", *cmd[1:]]
        args = cmd[3:]
        if args[:1] == ["train"]:
            strategy = next((a.split("=", 1)[1] if "=" in a else (args[i + 1] if i + 1 < len(args) else "")
                             for i, a in enumerate(args) if a.split("=", 1)[0] == "--strategy"), None)
            if strategy is None:
                cmd += ["--strategy", "multi_worker"]
            elif strategy != "multi_worker":
                raise ConfigError(f"zoo launch runs a multi-worker job, but the command asks for --strategy "
                                  f"{strategy}; drop it (zoo launch adds --strategy multi_worker)")
            if data_service:
                cmd += ["--set", f"train.data_service={data_service}"]
    if data_service and cmd[3:4] != ["train"]:
        raise ConfigError("--data-service-workers feeds the input pipeline of a `zoo train` command; the command "
                          f"after -- is {' '.join(command)!r}")
    return cmd


def tf_configs(addresses: Sequence[str]) -> list[str]:
    """The ``TF_CONFIG`` of each worker of a cluster of ``addresses``."""
    return [json.dumps({"cluster": {"worker": list(addresses)}, "task": {"type": "worker", "index": i}})
            for i in range(len(addresses))]


def indexed_job_tf_config(env: dict[str, str]) -> str:
    """The TF_CONFIG of one pod of a Kubernetes indexed Job (recipes/deploy/multiworker_job.yaml).

    Kubernetes gives each pod ``JOB_COMPLETION_INDEX`` and, with ``subdomain`` set to a headless
    Service, the DNS name ``<job>-<index>.<service>``; the manifest sets ``ZOO_JOB``, ``ZOO_SERVICE``,
    ``ZOO_WORKERS`` and ``ZOO_PORT``.
    """
    missing = [k for k in ("JOB_COMPLETION_INDEX", "ZOO_JOB", "ZOO_SERVICE", "ZOO_WORKERS") if not env.get(k)]
    if missing:
        raise ConfigError(f"cannot build TF_CONFIG: {', '.join(missing)} not set (run this inside a pod of "
                          "recipes/deploy/multiworker_job.yaml)")
    workers, index, port = int(env["ZOO_WORKERS"]), int(env["JOB_COMPLETION_INDEX"]), int(env.get("ZOO_PORT", 2222))
    if not 0 <= index < workers:
        raise ConfigError(f"JOB_COMPLETION_INDEX={index} is outside the job's {workers} workers")
    return tf_configs([f"{env['ZOO_JOB']}-{i}.{env['ZOO_SERVICE']}:{port}" for i in range(workers)])[index]


def _stream(proc: subprocess.Popen, prefix: str, sink: object) -> None:
    for line in proc.stdout:  # type: ignore[union-attr]
        sink.write(f"{prefix}{line}")  # type: ignore[attr-defined]
        sink.flush()  # type: ignore[attr-defined]


def launch(workers: int, command: Sequence[str], host: str = "127.0.0.1", port_base: int | None = None,
           grace_seconds: float = 10.0, data_service_workers: int = 0) -> int:
    """Run ``command`` as a ``workers``-process multi-worker job; the exit code is 0 when all succeed."""
    if workers < 1:
        raise ConfigError(f"--workers {workers}: a job needs at least 1 worker")
    if data_service_workers < 0:
        raise ConfigError(f"--data-service-workers {data_service_workers}: give 0 (no tf.data service) or more")
    ports = list(range(port_base, port_base + workers + 1)) if port_base else free_ports(workers + 1, host)
    service_address = f"grpc://{host}:{ports[-1]}" if data_service_workers else ""
    cmd = worker_command(command, service_address)
    addresses = [f"{host}:{p}" for p in ports[:workers]]
    service = None
    if data_service_workers:
        service = start_service(data_service_workers, ports[-1], grace_seconds)
    try:
        return _run_workers(cmd, addresses, grace_seconds, service)
    finally:
        if service is not None:
            _stop([service], signal.SIGTERM, grace_seconds)


def start_service(workers: int, port: int, grace_seconds: float) -> subprocess.Popen:
    """A tf.data service (dispatcher at ``port`` and ``workers`` workers) in one process, once it serves."""
    proc = subprocess.Popen([sys.executable, "-m", "zoo.data.service", "local", "--workers", str(workers),
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1, start_new_session=True)
    lines = []
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line.rstrip("\n"))
            if line.startswith("ready: "):
                print(f"zoo launch: {line[len('ready: '):].strip()}", file=sys.stderr)
                break
        else:
            proc.wait()
            raise WorkerFailed(f"the tf.data service did not start (exit {proc.returncode}): "
                               f"{lines[-1] if lines else 'no output'}")
    except BaseException:
        _stop([proc], signal.SIGTERM, grace_seconds)
        raise
    threading.Thread(target=_stream, args=(proc, "[data service] ", sys.stderr), daemon=True).start()
    return proc


def _run_workers(cmd: list[str], addresses: list[str], grace_seconds: float,
                 service: subprocess.Popen | None = None) -> int:
    workers = len(addresses)
    procs: list[subprocess.Popen] = []
    threads = []
    for index, tf_config in enumerate(tf_configs(addresses)):
        env = {**os.environ, "TF_CONFIG": tf_config}
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                bufsize=1, start_new_session=True)  # Ctrl-C reaches them through us, once
        procs.append(proc)
        # Each worker's stdout and stderr, merged and prefixed: worker 0's lines on stdout, the others' on stderr.
        t = threading.Thread(target=_stream, args=(proc, f"[worker {index}] ", sys.stdout if index == 0 else
                                                   sys.stderr), daemon=True)
        t.start()
        threads.append(t)
    print(f"zoo launch: {workers} worker(s) at {', '.join(addresses)}; worker 0 is the chief", file=sys.stderr)
    failed: tuple[int, int] | None = None
    try:
        while True:
            codes = [p.poll() for p in procs]
            bad = next(((i, c) for i, c in enumerate(codes) if c not in (None, 0)), None)
            if bad is not None:
                failed = bad
                break
            if all(c == 0 for c in codes):
                break
            if service is not None and service.poll() is not None:
                failed = (-1, service.returncode)
                break
            time.sleep(0.2)
    except KeyboardInterrupt:
        _stop(procs, signal.SIGINT, grace_seconds)
        for t in threads:
            t.join(timeout=5)
        raise
    if failed is not None:
        _stop(procs, signal.SIGTERM, grace_seconds)
    for t in threads:
        t.join(timeout=5)
    if failed is not None:
        index, code = failed
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        raise WorkerFailed(f"{'the tf.data service' if index < 0 else f'worker {index}'} {how}; the "
                           f"{'' if index < 0 else 'other '}workers were stopped. Run the same command again to "
                           "resume every worker from the newest epoch they all saved")
    return 0


def _stop(procs: Sequence[subprocess.Popen], sig: int, grace_seconds: float) -> None:
    """Send ``sig`` to every worker still running, then SIGKILL those still running after the grace period."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(sig)
    deadline = time.time() + grace_seconds
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


if __name__ == "__main__":
    # python -m zoo.recipes.engine.launch tf-config: print this pod's TF_CONFIG (indexed Job manifests).
    if sys.argv[1:] != ["tf-config"]:
        print("usage: python -m zoo.recipes.engine.launch tf-config", file=sys.stderr)
        raise SystemExit(2)
    try:
        print(indexed_job_tf_config(dict(os.environ)))
    except ZooError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
