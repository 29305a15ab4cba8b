"""Mixed precision as a context manager: the global Keras policy is set and always restored."""

from __future__ import annotations

import contextlib
import logging
import platform
from collections.abc import Iterator
from typing import Any

from zoo.errors import unknown_name
from zoo.recipes.engine.config import PRECISIONS

log = logging.getLogger(__name__)

# /proc/cpuinfo flags of CPU units that compute in bfloat16: AVX-512 BF16 and AMX (x86), BF16 (Arm).
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


@contextlib.contextmanager
def precision_scope(policy: str) -> Iterator[str]:
    """Use Keras dtype policy ``policy`` inside the block, restoring the previous one after.

    Models built inside keep their policy afterwards. Classifier layers of zoo models are
    pinned to float32, so logits and softmax stay float32 under every policy; Keras'
    ``compile`` wraps the optimizer in a ``LossScaleOptimizer`` for ``mixed_float16``.
    """
    import keras

    if policy not in PRECISIONS:
        raise unknown_name("precision", policy, PRECISIONS)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield policy
    finally:
        keras.config.set_dtype_policy(previous)


def has_loss_scaling(model: Any) -> bool:
    """True when the compiled model's optimizer scales the loss (float16 training)."""
    import keras

    return isinstance(getattr(model, "optimizer", None), keras.optimizers.LossScaleOptimizer)


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU feature flags (x86 ``flags``, Arm ``Features``) from ``/proc/cpuinfo`` or the text given."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as fh:
                cpuinfo = fh.read()
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def warn_if_slow_bfloat16(policy: str, device_types: set[str], cpuinfo: str | None = None) -> bool:
    """Warn (and return True) when ``mixed_bfloat16`` will train on a CPU without bfloat16 units.

    There each bfloat16 matmul is emulated in float32 plus casts, so the policy costs speed instead
    of buying it. GPUs and TPUs are not judged here (``device_types`` holds the strategy's device
    types, e.g. ``{"CPU"}``)."""
    if policy != "mixed_bfloat16" or device_types - {"CPU"}:
        return False
    flags = cpu_flags(cpuinfo)
    if not flags or flags & set(BF16_FLAGS):
        return False  # unknown CPU (no /proc/cpuinfo): say nothing rather than guess
    log.warning("train.precision=mixed_bfloat16 on a CPU without bfloat16 units (%s has none of %s): "
                "bfloat16 is emulated here and usually trains slower than float32; use "
                "--set train.precision=float32 unless you are checking bfloat16 numerics",
                platform.processor() or "this CPU", ", ".join(BF16_FLAGS))
    return True


def warn_if_xla_bfloat16(policy: str, jit_compile: bool, device_types: set[str]) -> bool:
    """Warn (and return True) when ``mixed_bfloat16`` is combined with XLA on CPU only.

    XLA's CPU backend compiles bfloat16 matmuls without oneDNN's bfloat16 kernels: on a 2-core
    AVX-512-bf16 EPYC a BERT-small step under XLA took as long as float32 (0.94x its speed), 1.47x
    the same bfloat16 step without XLA (``benchmarks/bert.py``'s XLA rows)."""
    if policy != "mixed_bfloat16" or not jit_compile or device_types - {"CPU"}:
        return False
    log.warning("train.precision=mixed_bfloat16 with XLA (--xla / train.jit_compile) on CPU: XLA's CPU "
                "backend does not use the bfloat16 matmul kernels, so the step runs no faster than float32; "
                "drop --xla to keep bfloat16's speed-up")
    return True
