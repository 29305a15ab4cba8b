"""tf.distribute strategies by name, with errors that say what the machine lacks."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from typing import Any

from zoo.errors import ConfigError, DeviceError, unknown_name
from zoo.recipes.engine.config import STRATEGIES

log = logging.getLogger(__name__)

_MULTI_WORKER: dict[str, Any] = {}
_MIRRORED: dict[tuple[str, ...], Any] = {}


def split_cpu(num_devices: int) -> list[str]:
    """Split the host CPU into ``num_devices`` logical devices (to test multi-replica code on CPU).

    Must run before TensorFlow executes any op; afterwards the split is fixed for the process.
    """
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    current = tf.config.get_logical_device_configuration(cpus[0])
    if current is None or len(current) != num_devices:
        try:
            tf.config.set_logical_device_configuration(
                cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(num_devices)]
            )
        except RuntimeError as exc:
            have = len(tf.config.list_logical_devices("CPU"))
            raise DeviceError(
                f"cannot split the CPU into {num_devices} devices: TensorFlow is already initialized with "
                f"{have}; pass --cpu-devices before anything else runs (or set it first in your script)"
            ) from exc
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def _check_devices(devices: Sequence[str]) -> list[str]:
    import tensorflow as tf

    known = {d.name.lower() for d in tf.config.list_logical_devices()}
    short = {n.split("device:")[-1].lower() for n in known}  # "/job:localhost/.../device:CPU:0" -> "cpu:0"
    out = []
    for dev in devices:
        key = dev.lower().lstrip("/")
        if key not in short and dev.lower() not in known:
            raise DeviceError(
                f"device {dev!r} does not exist here; available: {', '.join(sorted(short))}"
                " (split the CPU with --cpu-devices N to get cpu:0..cpu:N-1)"
            )
        out.append("/" + key)
    return out


def build_strategy(name: str = "default", devices: Sequence[str] | None = None, tpu: str | None = None) -> Any:
    """Return a tf.distribute strategy.

    Args:
      name: ``default`` (no distribution), ``one_device``, ``mirrored``, ``multi_worker``
        (reads ``TF_CONFIG``) or ``tpu``.
      devices: for ``mirrored`` the replica devices (default: all GPUs, else all logical CPUs);
        for ``one_device`` the single device (default the first GPU, else ``cpu:0``).
      tpu: TPU name or address for ``tpu`` (default: the one the environment describes).
    """
    import tensorflow as tf

    if name not in STRATEGIES:
        raise unknown_name("strategy", name, STRATEGIES)
    raw = os.environ.get("TF_CONFIG")
    if raw:  # every strategy but the default reads it; a malformed one fails deep inside TensorFlow
        try:
            json.loads(raw)
        except ValueError as exc:
            raise DeviceError(f"TF_CONFIG is not a valid cluster spec (not JSON): {raw}") from exc
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        if devices and len(devices) != 1:
            raise ConfigError(f"one_device takes exactly one device, got {list(devices)}")
        if devices:
            device = _check_devices(devices)[0]
        else:
            device = "/gpu:0" if tf.config.list_logical_devices("GPU") else "/cpu:0"
        return tf.distribute.OneDeviceStrategy(device)
    if name == "mirrored":
        if devices:
            devs = _check_devices(devices)
        else:
            gpus = tf.config.list_logical_devices("GPU")
            # The short form _check_devices returns, so the cache below sees one device set, one key.
            devs = ["/" + d.name.split("device:")[-1].lower() for d in (gpus or tf.config.list_logical_devices("CPU"))]
        # One strategy per device set and process: two MirroredStrategy objects over the same
        # devices reuse collective instance keys, and the second one's all-reduce then fails with
        # "Shape mismatch in the collective instance" (seen running two models in one process).
        key = tuple(devs)
        if key not in _MIRRORED:
            log.info("MirroredStrategy over %s", devs)
            _MIRRORED[key] = tf.distribute.MirroredStrategy(devs)
        return _MIRRORED[key]
    if name == "multi_worker":
        raw = os.environ.get("TF_CONFIG")
        if not raw:
            raise DeviceError(
                "multi_worker needs TF_CONFIG describing the cluster, e.g. "
                '{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}}'
            )
        try:
            tf_config = json.loads(raw)
            tf_config["cluster"]["worker"]
            tf_config["task"]["index"]
        except (ValueError, KeyError, TypeError) as exc:
            raise DeviceError(f"TF_CONFIG is not a valid cluster spec ({exc!r}): {raw}") from exc
        if raw in _MULTI_WORKER:  # one per process and cluster: a second one cannot start once ops have run
            return _MULTI_WORKER[raw]
        try:
            _MULTI_WORKER[raw] = tf.distribute.MultiWorkerMirroredStrategy()
            return _MULTI_WORKER[raw]
        except RuntimeError as exc:
            raise DeviceError(
                f"cannot start multi_worker here ({exc}): the strategy must be created before TensorFlow runs "
                "any op, so create it first in your script (zoo's recipes do)"
            ) from exc
    # tpu
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as exc:
        raise DeviceError(
            f"no TPU found ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "run on a TPU VM or name the TPU with --set train.tpu=NAME, or use --strategy default/mirrored here"
        ) from exc
    return tf.distribute.TPUStrategy(resolver)


def task_name() -> str:
    """``<type>-<index>`` of this process in TF_CONFIG (``chief-0`` when there is none)."""
    try:
        task = json.loads(os.environ.get("TF_CONFIG") or "{}").get("task", {})
    except ValueError:
        task = {}
    return f"{task.get('type', 'chief')}-{task.get('index', 0)}"


def cluster_tasks() -> tuple[str, list[str]]:
    """(the chief's task name, every other task's) of the TF_CONFIG cluster: ``worker-0`` is the chief
    when the cluster has no ``chief`` task. Parameter servers and evaluators hold no training state."""
    try:
        cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    except ValueError:
        cluster = {}
    tasks = [f"{kind}-{i}" for kind in ("chief", "worker") for i in range(len(cluster.get(kind, [])))]
    if not tasks:
        return "chief-0", []
    return tasks[0], tasks[1:]


def is_chief() -> bool:
    """True unless this process is a non-chief worker of a multi-worker job (those write no outputs)."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return True
    try:
        spec = json.loads(raw)
    except ValueError:
        return True
    task = spec.get("task", {})
    if task.get("type") == "chief":
        return True
    first_worker = task.get("type", "worker") == "worker" and task.get("index", 0) == 0
    return first_worker and "chief" not in spec.get("cluster", {})


def check_xla(strategy: Any, jit_compile: bool) -> None:
    """Refuse XLA over several CPU replicas of one process, before anything is written.

    TensorFlow compiles the replicated train step into one XLA cluster on the first CPU, which then
    cannot read the replica variables that live on the other logical CPUs ("Trying to access
    resource ... located in device CPU:1 from device CPU:0"; TensorFlow's XLA known issues,
    tfvariable_on_a_different_device). GPUs and separate worker processes are not affected.
    """
    if not jit_compile or strategy.num_replicas_in_sync < 2:
        return
    devices = list(getattr(strategy.extended, "worker_devices", ()))
    local_cpus = [d for d in devices if "CPU" in d.upper().split("DEVICE:")[-1]]
    if len(local_cpus) > 1:
        raise DeviceError(
            f"XLA (--xla / train.jit_compile) cannot compile a step mirrored over {len(local_cpus)} CPU devices of "
            "one process: TensorFlow's XLA cluster cannot reach variables on the other logical CPUs. Drop --xla, "
            "or use one device (XLA alone), GPUs, or --strategy multi_worker with one process per replica")
