"""Dynamic batching, configured by TF Serving's batching parameters file.

A :class:`Batcher` serves one signature of one model version with a queue of its own. Requests join
the newest open batch when it has room (same trailing shapes and dtypes), or open a new one; a full
queue (``max_enqueued_batches`` waiting) is refused at once with RESOURCE_EXHAUSTED. The threads of
one :class:`BatchScheduler` (``num_batch_threads`` of them) serve every batcher of a server, as TF
Serving's shared batch scheduler does: they visit the queues round-robin and take a queue's oldest
batch once it is full, its ``batch_timeout_micros`` have passed, or a newer batch has opened behind
it; so under load batches grow while every thread is busy, and an idle server answers a lone request
after the timeout at most. Threads do not multiply with models, versions and signatures. A batch is
padded up to the next ``allowed_batch_sizes`` entry (copies of its first row, as TF Serving does),
run once, and split back by rows. Needs no TensorFlow.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np

from zoo.export.serve.errors import InvalidArgument, ResourceExhausted, Unavailable

log = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class BatchingParameters:
    """The fields of TF Serving's ``BatchingParameters`` this server honours (zoo's CPU defaults)."""

    max_batch_size: int = 32
    batch_timeout_micros: int = 1000
    max_enqueued_batches: int = 100
    num_batch_threads: int = max(1, os.cpu_count() or 1)
    allowed_batch_sizes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for field in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be at least 1, got {getattr(self, field)}")
        if self.batch_timeout_micros < 0:
            raise ValueError(f"batch_timeout_micros must be >= 0, got {self.batch_timeout_micros}")
        sizes = self.allowed_batch_sizes
        if sizes:
            if list(sizes) != sorted(set(sizes)) or sizes[0] < 1:
                raise ValueError(f"allowed_batch_sizes must be increasing positive numbers, got {list(sizes)}")
            if sizes[-1] != self.max_batch_size:
                raise ValueError(f"the last of allowed_batch_sizes ({sizes[-1]}) must equal max_batch_size "
                                 f"({self.max_batch_size}), as TF Serving requires")


_PROTO = None


def _proto_class() -> Any:
    """TF Serving's ``BatchingParameters`` message (``servables/tensorflow/session_bundle_config.proto``),
    declared here with the same field names and numbers: tensorflow-serving-api does not ship it."""
    global _PROTO
    if _PROTO is None:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

        pool = descriptor_pool.DescriptorPool()
        pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
        f = descriptor_pb2.FileDescriptorProto(name="zoo_batching.proto", package="tensorflow.serving",
                                               dependency=["google/protobuf/wrappers.proto"], syntax="proto3")
        m = f.message_type.add(name="BatchingParameters")
        label, opt, rep = descriptor_pb2.FieldDescriptorProto, 1, 3
        wrapped = [("max_batch_size", 1, "Int64Value"), ("batch_timeout_micros", 2, "Int64Value"),
                   ("thread_pool_name", 3, "StringValue"), ("num_batch_threads", 4, "Int64Value"),
                   ("max_enqueued_batches", 5, "Int64Value"), ("enable_large_batch_splitting", 8, "BoolValue"),
                   ("max_execution_batch_size", 9, "Int64Value")]
        for name, number, kind in wrapped:
            m.field.add(name=name, number=number, label=opt, type=label.TYPE_MESSAGE,
                        type_name=f".google.protobuf.{kind}")
        m.field.add(name="allowed_batch_sizes", number=6, label=rep, type=label.TYPE_INT64)
        m.field.add(name="pad_variable_length_inputs", number=7, label=opt, type=label.TYPE_BOOL)
        pool.Add(f)
        _PROTO = message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))
    return _PROTO


def parse_batching_parameters(text: str, source: str = "batching parameters") -> BatchingParameters:
    """Read TF Serving's batching parameters text proto (``max_batch_size { value: 32 }`` ...)."""
    from google.protobuf import text_format

    msg = _proto_class()()
    try:
        text_format.Parse(text, msg)
    except text_format.ParseError as exc:
        raise ValueError(f"{source}: {exc} (expected TF Serving's BatchingParameters text format, e.g. "
                         "'max_batch_size { value: 32 }')") from exc
    for ignored in ("thread_pool_name", "enable_large_batch_splitting", "max_execution_batch_size"):
        if msg.HasField(ignored):
            log.warning("%s: %s is not used by zoo serve (TF Serving reads it)", source, ignored)
    if msg.pad_variable_length_inputs:
        log.warning("%s: pad_variable_length_inputs is not used by zoo serve: requests whose inner shapes "
                    "differ are batched separately", source)
    defaults = BatchingParameters()
    values = {name: getattr(msg, name).value if msg.HasField(name) else getattr(defaults, name)
              for name in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads")}
    try:
        return BatchingParameters(**values, allowed_batch_sizes=tuple(msg.allowed_batch_sizes))
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from exc


@dataclasses.dataclass
class _Task:
    inputs: Arrays
    rows: int
    future: Future


@dataclasses.dataclass
class _Batch:
    key: tuple[Any, ...]
    created: float
    tasks: list[_Task] = dataclasses.field(default_factory=list)
    rows: int = 0


def batch_rows(inputs: Arrays) -> int:
    """The batch size of a request: dimension 0, the same for every input."""
    rows = {a.shape[0] if a.ndim else None for a in inputs.values()}
    if None in rows:
        raise InvalidArgument("a batched signature needs every input to have a batch dimension (rank >= 1)")
    if len(rows) != 1:
        raise InvalidArgument(f"the inputs have different batch sizes ({sorted(rows)}); they must agree")
    return rows.pop()


class BatchScheduler:
    """A pool of threads that runs the ready batches of every batcher registered with it, round-robin
    over their queues (TF Serving's ``SharedBatchScheduler``)."""

    def __init__(self, num_threads: int, name: str = "batch"):
        if num_threads < 1:
            raise ValueError(f"num_batch_threads must be at least 1, got {num_threads}")
        self.cv = threading.Condition()
        self._batchers: list[Batcher] = []
        self._next = 0
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
                         for i in range(num_threads)]
        for t in self._threads:
            t.start()

    def add(self, batcher: Batcher) -> None:
        with self.cv:
            if self._closed:
                raise Unavailable("the server is stopping")
            self._batchers.append(batcher)

    def remove(self, batcher: Batcher) -> None:
        with self.cv:
            if batcher in self._batchers:
                index = self._batchers.index(batcher)
                del self._batchers[index]
                if index < self._next:
                    self._next -= 1

    def _take(self) -> tuple[Batcher, _Batch] | None:
        """Under the lock: the next ready batch, round-robin from where the last one was taken; None when
        the scheduler is closed and every queue is empty."""
        while True:
            wait: float | None = None
            count = len(self._batchers)
            for step in range(count):
                index = (self._next + step) % count
                batcher = self._batchers[index]
                if not batcher._queue:
                    continue
                ready_in = batcher._ready_in(batcher._queue[0])
                if ready_in <= 0:
                    self._next = (index + 1) % count
                    batcher._running += 1
                    return batcher, batcher._queue.popleft()
                wait = ready_in if wait is None else min(wait, ready_in)
            if self._closed and wait is None:
                return None
            self.cv.wait(wait)

    def _work(self) -> None:
        while True:
            with self.cv:
                taken = self._take()
            if taken is None:
                return
            batcher, batch = taken
            try:
                batcher._process(batch)
            finally:
                with self.cv:
                    batcher._running -= 1
                    self.cv.notify_all()

    def close(self) -> None:
        """Run what is queued, then end the threads."""
        with self.cv:
            self._closed = True
            self.cv.notify_all()
        for t in self._threads:
            t.join()


class Batcher:
    """Merges concurrent requests to one signature into batches; see the module docstring. Without a
    ``scheduler`` the batcher has one of its own with ``params.num_batch_threads`` threads."""

    def __init__(self, run: Callable[[Arrays], Arrays], params: BatchingParameters, name: str = "",
                 on_batch: Callable[[int, int], None] | None = None, scheduler: BatchScheduler | None = None):
        self._run, self.params, self.name, self._on_batch = run, params, name, on_batch
        self._own_scheduler = scheduler is None
        self._scheduler = scheduler or BatchScheduler(params.num_batch_threads, f"batch-{name}")
        self._cv = self._scheduler.cv  # one lock for the scheduler and all its queues
        self._queue: collections.deque[_Batch] = collections.deque()
        self._running = 0  # batches of this batcher being run now
        self._stopping = False
        self._scheduler.add(self)

    def queue_depth(self) -> tuple[int, int]:
        """(batches, requests) waiting for a batch thread."""
        with self._cv:
            return len(self._queue), sum(len(b.tasks) for b in self._queue)

    def submit(self, inputs: Arrays) -> Future:
        """Queue one request; its future gets the request's own rows of every output."""
        rows = batch_rows(inputs)
        if rows > self.params.max_batch_size:
            raise InvalidArgument(f"Task size {rows} is larger than maximum input batch size "
                                  f"{self.params.max_batch_size}; send at most that many instances per request")
        key = tuple(sorted((n, a.shape[1:], a.dtype.str) for n, a in inputs.items()))
        task = _Task(inputs, rows, Future())
        with self._cv:
            if self._stopping:
                raise Unavailable(f"{self.name} is unloading; retry")
            last = self._queue[-1] if self._queue else None
            if last is not None and last.key == key and last.rows + rows <= self.params.max_batch_size:
                last.tasks.append(task)
                last.rows += rows
            else:
                if len(self._queue) >= self.params.max_enqueued_batches:
                    raise ResourceExhausted("The batch scheduling queue to which this task was submitted is full "
                                            f"({self.params.max_enqueued_batches} batches wait); retry later")
                self._queue.append(_Batch(key, time.monotonic(), [task], rows))
            self._cv.notify_all()
        return task.future

    def _ready_in(self, batch: _Batch) -> float:
        if self._stopping or batch.rows >= self.params.max_batch_size or len(self._queue) > 1:
            return 0.0
        return batch.created + self.params.batch_timeout_micros / 1e6 - time.monotonic()

    def _process(self, batch: _Batch) -> None:
        tasks = [t for t in batch.tasks if t.future.set_running_or_notify_cancel()]  # drop timed-out requests
        if not tasks:
            return
        rows = sum(t.rows for t in tasks)
        size = next((s for s in self.params.allowed_batch_sizes if s >= rows), rows)
        try:
            merged = {}
            for name in tasks[0].inputs:
                parts = [t.inputs[name] for t in tasks]
                if size > rows:
                    parts.append(np.repeat(parts[0][:1], size - rows, axis=0))
                merged[name] = np.concatenate(parts) if len(parts) > 1 else parts[0]
            outputs = self._run(merged)
            for out_name, arr in outputs.items():
                if arr.ndim == 0 or arr.shape[0] != size:
                    raise InvalidArgument(f"output '{out_name}' has no batch dimension of size {size}, so batched "
                                          "results cannot be split; serve this model without batching")
        except BaseException as exc:  # every waiting request gets the failure, the worker lives on
            for t in tasks:
                t.future.set_exception(exc)
            return
        if self._on_batch is not None:
            self._on_batch(rows, size)
        start = 0
        for t in tasks:
            t.future.set_result({n: a[start:start + t.rows] for n, a in outputs.items()})
            start += t.rows

    def stop(self) -> None:
        """Take no more requests, let the scheduler run what is queued, then leave it."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
            while self._queue or self._running:
                self._cv.wait()
        self._scheduler.remove(self)
        if self._own_scheduler:
            self._scheduler.close()
