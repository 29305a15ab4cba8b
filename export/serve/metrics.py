"""Prometheus metrics of one server (its own registry, served at /monitoring/prometheus/metrics)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

LATENCY_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    def __init__(self, queued: Callable[[], dict[tuple[str, int, str], tuple[int, int]]],
                 states: Callable[[], dict[str, list[tuple[int, str, str]]]]):
        self.registry = CollectorRegistry()
        self.requests = Counter("zoo_serve_requests", "Requests answered, by model, API and status code",
                                ["model", "api", "code"], registry=self.registry)
        self.latency = Histogram("zoo_serve_request_latency_seconds", "Request latency (receipt to answer)",
                                 ["model", "api"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("zoo_serve_batch_size", "Rows per batch the model ran (before padding)",
                                    ["model", "version", "signature"], buckets=BATCH_BUCKETS, registry=self.registry)
        self.padding = Counter("zoo_serve_batch_padding_rows", "Rows added to reach an allowed batch size",
                               ["model", "version", "signature"], registry=self.registry)
        self.registry.register(_LiveGauges(queued, states))

    def on_batch(self, model: str, version: int, signature: str, rows: int, size: int) -> None:
        self.batch_size.labels(model, str(version), signature).observe(rows)
        if size > rows:
            self.padding.labels(model, str(version), signature).inc(size - rows)

    def observe(self, model: str, api: str, code: int | str, seconds: float) -> None:
        self.requests.labels(model, api, str(code)).inc()
        self.latency.labels(model, api).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _LiveGauges:
    """Queue depths (batches and requests) and version states, read from the manager at scrape time."""

    def __init__(self, queued: Callable[[], dict[tuple[str, int, str], tuple[int, int]]],
                 states: Callable[[], dict[str, list[tuple[int, str, str]]]]):
        self._queued, self._states = queued, states

    def collect(self) -> Any:
        labels = ["model", "version", "signature"]
        batches = GaugeMetricFamily("zoo_serve_queued_batches", "Batches waiting for a batch thread", labels=labels)
        requests = GaugeMetricFamily("zoo_serve_queued_requests", "Requests waiting in those batches", labels=labels)
        for (model, version, sig), (n_batches, n_requests) in self._queued().items():
            batches.add_metric([model, str(version), sig], n_batches)
            requests.add_metric([model, str(version), sig], n_requests)
        yield batches
        yield requests
        versions = GaugeMetricFamily("zoo_serve_model_version_state", "1 for the state each version is in",
                                     labels=["model", "version", "state"])
        for model, entries in self._states().items():
            for version, state, _ in entries:
                versions.add_metric([model, str(version), state], 1)
        yield versions
