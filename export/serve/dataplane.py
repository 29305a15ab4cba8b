"""The protocol-neutral data plane (KServe's ``DataPlane``): REST /v1, KServe v2 and gRPC decode their
own wire formats, then run requests, wait within a deadline, count answers and report failures here,
the same way for all three."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from zoo.export.serve.errors import DeadlineExceeded, ServingError
from zoo.export.serve.manager import Handle, ModelManager
from zoo.export.serve.metrics import Metrics

log = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]


class DataPlane:
    """Runs decoded requests for every protocol: through the version's batcher when batching is on, else
    on a shared pool of ``workers`` threads; ``timeout`` (``--request-timeout``, 0: none) bounds every wait."""

    def __init__(self, manager: ModelManager, metrics: Metrics, timeout: float, workers: int = 32):
        self.manager, self.metrics, self.timeout = manager, metrics, timeout
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="run")

    def submit(self, held: Handle, signature: str, inputs: Arrays) -> Future:
        batcher = held.batcher(signature)
        if batcher is not None:
            return batcher.submit(inputs)
        return self.executor.submit(held.run, signature, inputs)

    def _limit(self, client_seconds: float | None) -> tuple[float | None, str]:
        """Seconds to wait and what set them: the server's timeout or the client's deadline, the sooner."""
        limits = [(t, what) for t, what in ((self.timeout or None, "zoo serve --request-timeout"),
                                             (client_seconds, "the client's deadline")) if t is not None]
        if not limits:
            return None, ""
        seconds, what = min(limits, key=lambda pair: pair[0])
        return max(0.0, seconds), what

    @staticmethod
    def _expired(future: Future, seconds: float, what: str) -> DeadlineExceeded:
        future.cancel()  # still queued in a batcher: it is dropped, never run
        return DeadlineExceeded(f"Deadline exceeded: no answer within {seconds:g} s ({what})")

    def run(self, held: Handle, signature: str, inputs: Arrays, client_seconds: float | None = None) -> Arrays:
        """Run and wait in this thread (gRPC's handlers); ``client_seconds``: the time the client has left."""
        future = self.submit(held, signature, inputs)
        seconds, what = self._limit(client_seconds)
        try:
            return future.result(seconds)
        except TimeoutError as exc:
            raise self._expired(future, seconds or 0.0, what) from exc

    async def run_async(self, held: Handle, signature: str, inputs: Arrays) -> Arrays:
        """Run and wait without holding the event loop (the REST handlers)."""
        future = self.submit(held, signature, inputs)
        seconds, what = self._limit(None)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), seconds)
        except TimeoutError as exc:
            raise self._expired(future, seconds or 0.0, what) from exc

    def observe(self, model: str, api: str, code: int | str, start: float) -> None:
        """Count one answer (a model name nobody configured is counted as '-', so clients cannot grow the
        metrics without bound)."""
        known = model in self.manager.model_names()
        self.metrics.observe(model if known else "-", api, code, time.perf_counter() - start)

    def failed(self, exc: ServingError, model: str, api: str) -> None:
        """A request failed: the server's own failures (INTERNAL: the model broke, not the request) are
        logged once, here, with the traceback and its causes; the client's mistakes only get answered."""
        if exc.code == "INTERNAL":
            log.error("%s on %s failed: %s", api, model, exc, exc_info=exc)

    def close(self) -> None:
        self.executor.shutdown(wait=True)

