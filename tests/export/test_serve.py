"""zoo serve's logic in one process, on a stand-in model: wire formats, error codes, limits, batching,
version lifecycle, gRPC services, and a bounded fuzz of request bodies. The real server on real
exports is tested in test_serve_e2e.py."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import shutil
import threading
import time

import numpy as np
import pytest

from tests.export.serve_fakes import FakeServable, Gate
from tests.waits import wait_until
from zoo.export.serve.batching import Batcher, BatchingParameters, parse_batching_parameters
from zoo.export.serve.dataplane import DataPlane
from zoo.export.serve.errors import InvalidArgument, ResourceExhausted
from zoo.export.serve.manager import ModelManager
from zoo.export.serve.metrics import Metrics
from zoo.export.serve.rest import RestOptions, build_app
from zoo.export.serve.source import ConfigFileError, ModelConfig, parse_model_config
from zoo.export.serve.tensors import Limits


def make_versions(base, name, versions, saved_model=True):
    for v in versions:
        path = os.path.join(base, name, str(v))
        os.makedirs(path, exist_ok=True)
        if saved_model:
            open(os.path.join(path, "saved_model.pb"), "wb").close()


def fake_loader(gate=None):
    def load(path):
        return FakeServable(path, gate, version_tag=float(os.path.basename(path)) * 100)
    return load


def start_manager(base, *, batching=None, gate=None, configs=None, config_file=None):
    metrics_holder = {}
    manager = ModelManager(base=None if (configs or config_file) else str(base), config_file=config_file,
                           configs=configs, batching=batching, loader=fake_loader(gate), warmup=lambda s: 0,
                           on_batch=lambda *a: metrics_holder["m"].on_batch(*a))
    manager.start(poll_seconds=0)
    metrics = Metrics(manager.queued, lambda: {n: manager.status(n) for n in manager.model_names()})
    metrics_holder["m"] = metrics
    return manager, metrics


def rest_app(manager, metrics, request_timeout=30.0, **options):
    """The REST app on a data plane of its own, as zoo serve builds it."""
    return build_app(DataPlane(manager, metrics, request_timeout), RestOptions(**options))


@pytest.fixture
def served(tmp_path):
    from starlette.testclient import TestClient

    make_versions(tmp_path, "dbl", [1, 2])
    manager, metrics = start_manager(tmp_path, configs=[ModelConfig("dbl", str(tmp_path / "dbl"), "all")])
    app = rest_app(manager, metrics, 5, max_body_bytes=4096, limits=Limits(max_instances=8, max_string_bytes=64))
    with TestClient(app) as client:
        yield client, manager
    manager.stop()


# -- REST /v1


def test_row_and_columnar_requests_give_tf_serving_shapes(served):
    client, _ = served
    row = client.post("/v1/models/dbl:predict", json={"instances": [[1, 2, 3], [4, 5, 6]]})
    assert row.status_code == 200, row.text
    preds = row.json()["predictions"]  # several outputs: one object per row
    assert [p["total"] for p in preds] == [6, 15]
    assert preds[1]["y"] == [208, 210, 212]  # version 2 (the newest) served
    col = client.post("/v1/models/dbl/versions/1:predict", json={"inputs": {"x": [[1, 2, 3]]}})
    assert col.json() == {"outputs": {"total": [6.0], "y": [[102.0, 104.0, 106.0]]}}
    single = client.post("/v1/models/dbl:predict", json={"signature_name": "single", "instances": [[0, 0, 1]]})
    assert single.json() == {"predictions": [[200.0, 200.0, 202.0]]}  # one output: unnamed
    single_col = client.post("/v1/models/dbl:predict", json={"signature_name": "single", "inputs": [[0, 0, 1]]})
    assert single_col.json() == {"outputs": [[200.0, 200.0, 202.0]]}


def test_bytes_travel_as_b64_and_named_instances(served):
    client, _ = served
    blob = bytes([0, 255, 10]) + b"x"
    r = client.post("/v1/models/dbl:predict", json={
        "signature_name": "pairs",
        "instances": [{"text": "caf\u00e9", "count": 2},
                      {"text": {"b64": base64.b64encode(blob).decode()}, "count": 3}]})
    assert r.status_code == 200, r.text
    first, second = r.json()["predictions"]
    assert first["upper"] == "CAF\u00e9" and base64.b64decode(first["joined_bytes"]["b64"]) == "caf\u00e9#2".encode()
    assert base64.b64decode(second["joined_bytes"]["b64"]) == blob + b"#3"  # *_bytes outputs come back as b64


def test_status_metadata_and_labels(tmp_path):
    from starlette.testclient import TestClient

    make_versions(tmp_path, "dbl", [1, 2, 3])
    cfg = ModelConfig("dbl", str(tmp_path / "dbl"), "all", labels=(("canary", 3), ("stable", 2)))
    manager, metrics = start_manager(tmp_path, configs=[cfg])
    with TestClient(rest_app(manager, metrics)) as client:
        status = client.get("/v1/models/dbl").json()
        assert [s["version"] for s in status["model_version_status"]] == ["3", "2", "1"]
        assert status["model_version_status"][0] == {"version": "3", "state": "AVAILABLE",
                                                     "status": {"error_code": "OK", "error_message": ""}}
        assert client.get("/v1/models/dbl/labels/stable").json()["model_version_status"][0]["version"] == "2"
        r = client.post("/v1/models/dbl/labels/stable:predict", json={"instances": [[0, 0, 0]]})
        assert r.json()["predictions"][0]["y"] == [200.0] * 3
        meta = client.get("/v1/models/dbl/versions/1/metadata").json()
        assert meta["model_spec"] == {"name": "dbl", "signature_name": "", "version": "1"}
        sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
        assert sig["method_name"] == "tensorflow/serving/predict"
        assert sig["inputs"]["x"]["dtype"] == "DT_FLOAT"
        assert sig["inputs"]["x"]["tensor_shape"]["dim"] == [{"size": "-1"}, {"size": "3"}]
        r = client.post("/v1/models/dbl/labels/nope:predict", json={"instances": [[0, 0, 0]]})
        assert (r.status_code, r.json()) == (400, {"error": "Unrecognized servable version label: nope"})
    manager.stop()


@pytest.mark.parametrize("method,path,body,status,message", [
    ("POST", "/v1/models/nope:predict", {"instances": [[1, 2, 3]]}, 404,
     "Servable not found for request: Latest(nope)"),
    ("POST", "/v1/models/dbl/versions/9:predict", {"instances": [[1, 2, 3]]}, 404, "Specific(dbl, 9)"),
    ("GET", "/v1/models/dbl/versions/9", None, 404, "Could not find version 9"),
    ("POST", "/v1/models/dbl:predict", {"nothing": 1}, 400, "Missing 'inputs' or 'instances' key"),
    ("POST", "/v1/models/dbl:predict", {"instances": []}, 400, "No values in 'instances' array"),
    ("POST", "/v1/models/dbl:predict", {"instances": [[1]], "inputs": [[1]]}, 400, "both 'instances' and 'inputs'"),
    ("POST", "/v1/models/dbl:predict", {"instances": [[1, 2]]}, 400,
     "has shape [1, 2]; the signature expects [-1, 3]"),
    ("POST", "/v1/models/dbl:predict", {"instances": [["a", "b", "c"]]}, 400, "expects float32 numbers"),
    ("POST", "/v1/models/dbl:predict", {"instances": [[1, 2, 3], [1, 2]]}, 400, "same shape"),
    # As TF Serving: a number float32 cannot hold (beyond its range, or an integer past 2**24) is refused.
    ("POST", "/v1/models/dbl:predict", {"instances": [[1e39, 2, 3]]}, 400,
     "cannot convert a value to float32 without loss of precision"),
    ("POST", "/v1/models/dbl:predict", {"instances": [[2**24 + 1, 2, 3]]}, 400, "without loss of precision"),
    ("POST", "/v1/models/dbl:predict", {"signature_name": "nope", "instances": [[1, 2, 3]]}, 404,
     'signature name: "nope" not found'),
    ("POST", "/v1/models/dbl:predict", {"signature_name": "pairs", "instances": [{"text": {"b64": "!!"}, "count": 1}]},
     400, "invalid base64"),
    ("POST", "/v1/models/dbl:predict",
     {"signature_name": "pairs", "instances": [{"text": {"b64": "-_8="}, "count": 1}]},
     400, "standard base64 alphabet"),
    ("POST", "/v1/models/dbl:predict", {"signature_name": "pairs", "instances": [{"text": "a", "count": 1.5}]},
     400, "fractional"),
    ("POST", "/v1/models/dbl:predict", {"signature_name": "pairs", "instances": [{"text": "a", "count": 2**40}]},
     400, "out of the range of int32"),
    ("POST", "/v1/models/dbl:predict", {"signature_name": "pairs", "instances": [{"text": "a"}]}, 400,
     "instance 0 has keys ['text']"),
    ("POST", "/v1/models/dbl:predict", {"instances": [[1, 2, 3]] * 9}, 400, "limit is 8"),
    ("POST", "/v1/models/dbl:predict", {"signature_name": "pairs", "instances": [{"text": "x" * 65, "count": 1}]},
     400, "longer than the limit of 64 bytes"),
    ("POST", "/v1/models/dbl:classify", {"examples": [{"x": 1}]}, 400,
     "Expected classification signature method_name to be tensorflow/serving/classify. "
     "Was: tensorflow/serving/predict"),
    ("POST", "/v1/models/dbl:classify", {"signature_name": "classify", "examples": []}, 400,
     "non-empty 'examples' list"),
    ("POST", "/v1/models/dbl:classify", {"signature_name": "classify", "examples": [{"x": [1, "a"]}]}, 400,
     "values must be all numbers or all strings"),
    ("POST", "/v1/models/dbl:regress", {"signature_name": "classify", "examples": [{"x": 1}]}, 400,
     "Expected regression signature method_name to be tensorflow/serving/regress"),
    ("POST", "/v1/models/dbl:explain", {"instances": [[1, 2, 3]]}, 404, "Malformed request"),
    ("GET", "/v1/models/dbl:predict", None, 404, "Malformed request"),
    ("POST", "/v1/models/../../etc:predict", {"instances": [[1, 2, 3]]}, 404, ""),
    ("GET", "/nothing/here", None, 404, "Malformed request"),
])
def test_bad_requests_get_tf_serving_codes_and_error_bodies(served, method, path, body, status, message):
    client, _ = served
    r = client.request(method, path, content=None if body is None else json.dumps(body))
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert message in r.json()["error"]
    assert client.get("/v1/models/dbl").status_code == 200  # the server still answers


def test_malformed_json_and_oversized_bodies(served):
    client, _ = served
    r = client.post("/v1/models/dbl:predict", content=b'{"instances": [1, 2')
    assert r.status_code == 400 and r.json()["error"].startswith("JSON Parse error")
    r = client.post("/v1/models/dbl:predict", content=b"\xff\xfe")
    assert r.status_code == 400
    big = json.dumps({"instances": [[1.0, 2.0, 3.0]] * 400})
    r = client.post("/v1/models/dbl:predict", content=big)
    assert r.status_code == 413 and "limit of 4096 bytes" in r.json()["error"]

    def chunks():  # no Content-Length: the limit holds while streaming
        for _ in range(100):
            yield b" " * 100

    r = client.post("/v1/models/dbl:predict", content=chunks())
    assert r.status_code == 413


def test_deadline_and_unavailable(tmp_path):
    from starlette.testclient import TestClient

    make_versions(tmp_path, "slow", [1])
    gate = Gate()  # the model holds the request until after the answer: the deadline must pass first
    manager, metrics = start_manager(tmp_path, gate=gate)
    with TestClient(rest_app(manager, metrics, 0.05)) as client:
        r = client.post("/v1/models/slow:predict", json={"instances": [[1, 2, 3]]})
        assert r.status_code == 504 and "Deadline exceeded" in r.json()["error"]
        assert gate.started.is_set()  # the model was running it when the deadline answered
    gate.released.set()
    manager.stop()
    # A configured model with no loadable version: 503, and the status says why.
    make_versions(tmp_path, "broken", [1], saved_model=True)
    manager, metrics = start_manager(tmp_path)
    with TestClient(rest_app(manager, metrics)) as client:
        r = client.post("/v1/models/broken:predict", json={"instances": [[1, 2, 3]]})
        assert r.status_code == 503 and "no version is AVAILABLE" in r.json()["error"]
        entry = client.get("/v1/models/broken").json()["model_version_status"][0]
        assert entry["state"] == "END" and "SavedModel file does not exist" in entry["status"]["error_message"]
        assert client.get("/v2/health/ready").status_code == 503  # one model has nothing to serve
        assert client.get("/v2/health/live").status_code == 200
        assert client.post("/v1/models/slow:predict", json={"instances": [[1, 2, 3]]}).status_code == 200
    manager.stop()


def test_a_model_failure_is_answered_500_and_logged_once_with_its_cause(tmp_path, caplog):
    import logging

    from starlette.testclient import TestClient

    from zoo.export.serve.errors import ServingError

    class Breaking(FakeServable):
        def run(self, signature, inputs):
            if signature == "single":
                try:
                    raise RuntimeError("kernel crashed")
                except RuntimeError as exc:
                    raise ServingError("the model failed: kernel crashed") from exc
            return super().run(signature, inputs)

    make_versions(tmp_path, "m", [1])
    manager = ModelManager(base=str(tmp_path), loader=Breaking, warmup=lambda s: 0)
    manager.start(poll_seconds=0)
    metrics = Metrics(manager.queued, lambda: {})
    with TestClient(rest_app(manager, metrics)) as client, caplog.at_level(logging.INFO):
        r = client.post("/v1/models/m:predict", json={"signature_name": "single", "instances": [[1, 2, 3]]})
        assert (r.status_code, r.json()) == (500, {"error": "the model failed: kernel crashed"})
        bad = client.post("/v1/models/m:predict", json={"instances": [[1, 2]]})
        assert bad.status_code == 400  # the client's mistake: answered, not logged as a failure
    failures = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert len(failures) == 1, [rec.getMessage() for rec in failures]
    assert failures[0].getMessage() == "rest_predict on m failed: the model failed: kernel crashed"
    assert isinstance(failures[0].exc_info[1].__cause__, RuntimeError)  # the traceback keeps the cause
    manager.stop()


def test_queue_full_is_429_at_once(tmp_path):
    from starlette.testclient import TestClient

    make_versions(tmp_path, "dbl", [1])
    params = BatchingParameters(max_batch_size=1, batch_timeout_micros=0, max_enqueued_batches=1, num_batch_threads=1)
    gate = Gate()
    manager, metrics = start_manager(tmp_path, batching=params, gate=gate)
    with TestClient(rest_app(manager, metrics)) as client, \
            concurrent.futures.ThreadPoolExecutor(2) as pool:
        def post():
            return client.post("/v1/models/dbl:predict", json={"instances": [[1, 2, 3]]})

        running = pool.submit(post)
        gate.wait_started()  # the only batch thread runs the first request and holds it
        queued = pool.submit(post)
        wait_until(lambda: manager.queued() == {("dbl", 1, "serving_default"): (1, 1)}, "the second request queued")
        refused = [post() for _ in range(2)]  # the queue is full: refused at once, while the others are held
        assert [r.status_code for r in refused] == [429, 429], [r.text for r in refused]
        assert "queue to which this task was submitted is full" in refused[0].json()["error"]
        gate.released.set()
        assert [running.result().status_code, queued.result().status_code] == [200, 200]
        assert post().status_code == 200  # the queue drained: taken again
        text = client.get("/monitoring/prometheus/metrics").text
        assert 'zoo_serve_requests_total{api="rest_predict",code="429",model="dbl"} 2.0' in text
        assert 'zoo_serve_requests_total{api="rest_predict",code="200",model="dbl"} 3.0' in text
    manager.stop()


# -- KServe v2


def test_v2_protocol(served):
    client, _ = served
    meta = client.get("/v2/models/dbl").json()
    assert meta["versions"] == ["1", "2"] and meta["platform"] == "tensorflow_savedmodel"
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]
    body = {"id": "r1", "inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]}],
            "outputs": [{"name": "total"}]}
    r = client.post("/v2/models/dbl/versions/1/infer", json=body).json()
    assert r == {"model_name": "dbl", "model_version": "1", "id": "r1",
                 "outputs": [{"name": "total", "datatype": "FP32", "shape": [2], "data": [6.0, 15.0]}]}
    nested = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [[1, 2, 3]]}]}
    assert client.post("/v2/models/dbl/infer", json=nested).status_code == 200
    strings = {"parameters": {"signature_name": "pairs"}, "inputs": [
        {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hi"]},
        {"name": "count", "shape": [1], "datatype": "INT32", "data": [7]}]}
    out = client.post("/v2/models/dbl/infer", json=strings).json()["outputs"]
    assert {o["name"]: o["data"] for o in out}["upper"] == ["HI"]
    assert client.get("/v2/models/dbl/ready").json() == {"name": "dbl", "ready": True}
    assert client.get("/v2/models/nope/ready").status_code == 404
    assert client.get("/v2/health/ready").json() == {"ready": True}
    bad = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP64", "data": [1] * 6}]}
    r = client.post("/v2/models/dbl/infer", json=bad)
    assert r.status_code == 400 and "does not match the model's FP32" in r.json()["error"]
    short = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [1] * 5}]}
    assert "do not fill shape" in client.post("/v2/models/dbl/infer", json=short).json()["error"]
    assert client.post("/v2/models/nope/infer", json=body).status_code == 404


def test_fuzzed_bodies_never_give_5xx(served):
    """A bounded fuzz: arbitrary JSON to every POST route; always a 2xx/4xx with a JSON body."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    client, _ = served
    scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8)
    values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) |
                          st.dictionaries(st.sampled_from(["b64", "x", "text", "count", "name", "shape", "datatype",
                                                           "data", "instances", "inputs"]) | st.text(max_size=4),
                                          inner, max_size=4), max_leaves=20)
    floats = st.floats(-1e6, 1e6, width=32)
    valid = st.fixed_dictionaries({"instances": st.lists(st.lists(floats, min_size=3, max_size=3), min_size=1,
                                                         max_size=4)})
    named = st.fixed_dictionaries({"signature_name": st.sampled_from(["pairs", "single", "classify", 3]),
                                   "instances": values})
    bodies = valid | values | st.fixed_dictionaries({"instances": values}) | \
        st.fixed_dictionaries({"inputs": values}) | named
    paths = st.sampled_from(["/v1/models/dbl:predict", "/v1/models/dbl:regress", "/v2/models/dbl/infer",
                             "/v1/models/dbl/versions/1:predict"])
    seen = set()

    @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(paths, bodies)
    def check(path, body):
        r = client.post(path, content=json.dumps(body, allow_nan=True))
        seen.add(r.status_code)
        assert r.status_code < 500, (path, body, r.text)
        assert isinstance(r.json(), dict)

    check()
    assert 400 in seen and 200 in seen  # the fuzz reached both sides
    assert client.get("/v2/health/live").status_code == 200


# -- batching


def test_batching_parameters_file():
    params = parse_batching_parameters("""
        max_batch_size { value: 8 }
        batch_timeout_micros { value: 500 }
        max_enqueued_batches { value: 3 }
        num_batch_threads { value: 2 }
        allowed_batch_sizes: 2
        allowed_batch_sizes: 4
        allowed_batch_sizes: 8
    """)
    assert params == BatchingParameters(8, 500, 3, 2, (2, 4, 8))
    with pytest.raises(ValueError, match="batching.txt: .*BatchingParameters text format"):
        parse_batching_parameters("max_batch_size: oops", "batching.txt")
    with pytest.raises(ValueError, match=r"last of allowed_batch_sizes \(4\) must equal max_batch_size \(8\)"):
        parse_batching_parameters("max_batch_size { value: 8 } allowed_batch_sizes: 4")


def test_concurrent_requests_merge_and_split_back_exactly():
    seen, gate = [], Gate()

    def run(inputs):
        if not gate.started.is_set():  # the first batch holds the only worker until every request is queued
            gate.started.set()
            assert gate.released.wait(120)
        seen.append(len(inputs["x"]))
        return {"y": inputs["x"] * 2, "rowsum": inputs["x"].sum(axis=1)}

    batcher = Batcher(run, BatchingParameters(max_batch_size=16, batch_timeout_micros=20000, max_enqueued_batches=50,
                                              num_batch_threads=1, allowed_batch_sizes=(4, 8, 16)))
    rng = np.random.default_rng(0)
    requests = [rng.normal(size=(int(rng.integers(1, 5)), 3)).astype(np.float32) for _ in range(40)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        futures = list(pool.map(lambda x: batcher.submit({"x": x}), requests))
        gate.released.set()  # every request is queued (at most the first one was taken)
        results = [f.result(10) for f in futures]
    batcher.stop()
    for x, out in zip(requests, results):
        assert out["y"].shape == x.shape and np.array_equal(out["y"], x * 2)
        assert np.array_equal(out["rowsum"], x.sum(axis=1))
    assert max(seen) > 4 and len(seen) < len(requests)  # merged
    assert set(seen) <= {4, 8, 16}  # padded up to an allowed size


def test_batcher_refuses_what_it_cannot_take():
    gate = Gate()

    def run(inputs):
        gate.started.set()
        assert gate.released.wait(120)
        return inputs

    batcher = Batcher(run,
                      BatchingParameters(max_batch_size=2, batch_timeout_micros=0, max_enqueued_batches=1,
                                         num_batch_threads=1))
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(InvalidArgument, match="Task size 3 is larger than maximum input batch size 2"):
        batcher.submit({"x": np.zeros((3, 3), np.float32)})
    with pytest.raises(InvalidArgument, match="different batch sizes"):
        batcher.submit({"x": x, "z": np.zeros((1,), np.float32)})
    running = batcher.submit({"x": x})
    gate.wait_started()  # the worker holds it
    queued = batcher.submit({"x": x})
    with pytest.raises(ResourceExhausted, match="queue to which this task was submitted is full"):
        batcher.submit({"x": x})
    gate.released.set()
    assert running.result(5)["x"].shape == (2, 3) and queued.result(5)["x"].shape == (2, 3)
    batcher.stop()


def test_one_pool_of_batch_threads_serves_every_batcher_round_robin():
    """Two batchers on a one-thread scheduler: while one holds the thread the other's request waits, and
    the ready batches are then taken from the two queues in turn."""
    from zoo.export.serve.batching import BatchScheduler

    before = {t.ident for t in threading.enumerate()}
    scheduler = BatchScheduler(1)
    pool = [t for t in threading.enumerate() if t.ident not in before]
    assert [t.name for t in pool] == ["batch-0"]
    gate, order = Gate(), []

    def runner(name):
        def run(inputs):
            if not gate.started.is_set():
                gate.started.set()
                assert gate.released.wait(120)
            order.append(name)
            return inputs
        return run

    params = BatchingParameters(max_batch_size=1, batch_timeout_micros=0, max_enqueued_batches=10)
    a, b = (Batcher(runner(n), params, n, scheduler=scheduler) for n in ("a", "b"))
    x = np.zeros((1, 3), np.float32)
    first = a.submit({"x": x})
    gate.wait_started()  # the only thread holds a's first batch
    waiting = [a.submit({"x": x}) for _ in range(3)] + [b.submit({"x": x}) for _ in range(3)]
    assert a.queue_depth() == (3, 3) and b.queue_depth() == (3, 3)  # b's requests wait: no thread of its own
    gate.released.set()
    for f in [first, *waiting]:
        assert f.result(120)["x"].shape == (1, 3)
    assert order == ["a", "b", "a", "b", "a", "b", "a"], order  # a's first, then the queues in turn
    a.stop()
    b.stop()
    assert pool[0].is_alive()  # the pool outlives its batchers
    scheduler.close()
    assert not pool[0].is_alive()


def test_the_manager_runs_every_model_on_one_batch_thread_pool(tmp_path):
    make_versions(tmp_path, "a", [1])
    make_versions(tmp_path, "b", [1, 2])
    params = BatchingParameters(max_batch_size=4, batch_timeout_micros=0, num_batch_threads=2)
    before = {t.ident for t in threading.enumerate()}
    configs = [ModelConfig("a", str(tmp_path / "a")), ModelConfig("b", str(tmp_path / "b"), "all")]
    manager, metrics = start_manager(tmp_path, batching=params, configs=configs)
    x = {"x": np.ones((1, 3), np.float32)}
    for name, version in (("a", None), ("b", 1), ("b", 2)):
        with manager.acquire(name, version) as held:
            for sig in ("serving_default", "single"):
                assert DataPlane(manager, metrics, 0).run(held, sig, x)["y"].shape == (1, 3)
    assert len(manager.queued()) == 6  # six batchers...
    new = [t for t in threading.enumerate() if t.ident not in before and t.name.startswith("batch")]
    assert len(new) == 2, [t.name for t in new]  # ...on the scheduler's two threads
    manager.stop()


def test_a_failing_batch_fails_each_request_and_the_worker_lives_on():
    calls = []

    def run(inputs):
        calls.append(1)
        if len(calls) == 1:
            raise InvalidArgument("bad batch")
        return inputs

    batcher = Batcher(run, BatchingParameters(max_batch_size=4, batch_timeout_micros=0, num_batch_threads=1))
    with pytest.raises(InvalidArgument, match="bad batch"):
        batcher.submit({"x": np.ones((1, 1))}).result(5)
    assert batcher.submit({"x": np.ones((1, 1))}).result(5)["x"].shape == (1, 1)
    batcher.stop()


# -- versions


def test_version_policies_and_staging_dirs(tmp_path):
    make_versions(tmp_path, "m", [1, 2, 3, 5])
    os.makedirs(tmp_path / "m" / ".tmp-6-123-abc")  # an export in progress
    os.makedirs(tmp_path / "m" / "notes")
    cases = {("latest", 2, ()): [3, 5], ("all", 1, ()): [1, 2, 3, 5], ("specific", 1, (2, 4)): [2]}
    for (policy, num, versions), want in cases.items():
        manager, _ = start_manager(tmp_path, configs=[ModelConfig("m", str(tmp_path / "m"), policy, num, versions)])
        assert manager.available() == {"m": want}, policy
        manager.stop()


def test_new_version_swaps_in_and_the_old_one_waits_for_its_requests(tmp_path):
    make_versions(tmp_path, "m", [1])
    manager, _ = start_manager(tmp_path)
    held = manager.acquire("m")  # a request in flight on version 1
    make_versions(tmp_path, "m", [2])
    manager.poll()
    assert manager.status("m") == [(2, "AVAILABLE", ""), (1, "UNLOADING", "")]
    with manager.acquire("m") as new:
        assert new.number == 2  # new requests go to the new version at once
    assert held.run("serving_default", {"x": np.ones((1, 3), np.float32)})["y"][0, 0] == 102.0
    held.close()
    wait_until(lambda: manager.status("m")[1][1] == "END", "version 1 to unload once released")
    assert manager.status("m") == [(2, "AVAILABLE", ""), (1, "END", "")]
    # A broken newer version is reported and never served; version 2 stays.
    make_versions(tmp_path, "m", [3])
    os.rename(tmp_path / "m" / "3", tmp_path / "m" / "broken")
    make_versions(tmp_path, "m", [4])
    os.makedirs(tmp_path / "m" / "4" / "broken")
    manager._loader = lambda path: FakeServable(path + "/broken") if path.endswith("4") else FakeServable(path)
    manager.poll()
    status = dict((v, (s, e)) for v, s, e in manager.status("m"))
    assert status[4][0] == "END" and "does not exist" in status[4][1]
    with manager.acquire("m") as current:
        assert current.number == 2
    manager.stop()


def test_deleting_the_newest_version_rolls_back_to_the_previous_one(tmp_path):
    make_versions(tmp_path, "m", [1])
    manager, _ = start_manager(tmp_path)
    make_versions(tmp_path, "m", [2])
    manager.poll()
    assert manager.status("m") == [(2, "AVAILABLE", ""), (1, "END", "")]  # 1 retired by 2
    shutil.rmtree(tmp_path / "m" / "2")  # a bad release: delete it, as with TF Serving
    manager.poll()
    assert manager.available() == {"m": [1]}  # 1 is loaded again, not left END
    with manager.acquire("m") as handle:
        assert handle.run("serving_default", {"x": np.zeros((1, 3), np.float32)})["y"][0, 0] == 100.0
    manager.stop()


def test_a_failed_load_is_retried_then_left_until_its_folder_changes(tmp_path, caplog):
    import logging

    make_versions(tmp_path, "m", [1])
    attempts = []

    def flaky(path):  # fails its first three loads
        attempts.append(path)
        if len(attempts) <= 3:
            raise OSError(f"transient read error {len(attempts)}")
        return FakeServable(path)

    manager = ModelManager(base=str(tmp_path), loader=flaky, warmup=lambda s: 0, max_load_retries=1,
                           load_retry_interval=0.0)
    with caplog.at_level(logging.INFO, logger="zoo.export.serve.manager"):
        manager.start(poll_seconds=0)
        assert len(attempts) == 2  # the load and one retry
        assert manager.status("m") == [(1, "END", "OSError: transient read error 2")]
        manager.poll()
        assert len(attempts) == 2  # no retries left: not tried at every poll
        os.utime(tmp_path / "m" / "1", (time.time() + 5, time.time() + 5))  # the folder changed
        manager.poll()
        assert len(attempts) == 4 and manager.available() == {"m": [1]}  # failed once more, the retry loaded
    text = caplog.text
    assert "(1 retry left)" in text and "no retries left; it loads again when its directory changes" in text
    assert "(retry 1 of 1)" in text
    manager.stop()
    # With the interval not yet passed, a poll does not retry.
    attempts.clear()
    manager = ModelManager(base=str(tmp_path), loader=flaky, warmup=lambda s: 0, max_load_retries=5,
                           load_retry_interval=3600.0)
    manager.start(poll_seconds=0)
    manager.poll()
    assert len(attempts) == 1 and manager.status("m")[0][1] == "END"
    manager.stop()


def test_model_config_file(tmp_path):
    text = """model_config_list {
      config { name: 'a' base_path: 'models/a' model_platform: 'tensorflow'
               model_version_policy { latest { num_versions: 2 } } }
      config { name: 'b' base_path: '/srv/b' model_version_policy { specific { versions: 3 versions: 4 } }
               version_labels { key: 'stable' value: 3 } }
    }"""
    path = str(tmp_path / "models.config")
    a, b = parse_model_config(text, path)
    assert a == ModelConfig("a", str(tmp_path / "models" / "a"), "latest", 2)
    assert b == ModelConfig("b", "/srv/b", "specific", 1, (3, 4), (("stable", 3),))
    for bad, message in [("model_config_list { config { name: 'a' } }", "needs a name and a base_path"),
                         ("model_config_list { config { name: 'a' base_path: '/x' } config { name: 'a' "
                          "base_path: '/y' } }", "configured twice"),
                         ("model_config_list { config { name: 'a' base_path: '/x' model_platform: 'onnx' } }",
                          "zoo serve serves 'tensorflow'"),
                         ("model_config_list { oops }", "ModelServerConfig text format")]:
        with pytest.raises(ConfigFileError, match=message):
            parse_model_config(bad, path)
    # The file is re-read when it changes; a broken edit keeps the previous models.
    make_versions(tmp_path / "models", "a", [1])
    with open(path, "w") as fh:
        fh.write("model_config_list { config { name: 'a' base_path: 'models/a' } }")
    manager, _ = start_manager(tmp_path, config_file=path)
    assert manager.available() == {"a": [1]}
    with open(path, "w") as fh:
        fh.write("model_config_list { config { name: 'a' base_path: ")
    os.utime(path, (time.time() + 5, time.time() + 5))
    manager.poll()
    assert manager.available() == {"a": [1]}
    manager.stop()


# -- gRPC


def test_grpc_services_in_process(tmp_path):
    import grpc
    import tensorflow as tf
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from tensorflow_serving.apis import (
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_management_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    from zoo.export.serve.grpc_service import build_server

    make_versions(tmp_path, "dbl", [1, 2])
    manager, metrics = start_manager(tmp_path, batching=BatchingParameters(max_batch_size=8, num_batch_threads=1),
                                     configs=[ModelConfig("dbl", str(tmp_path / "dbl"), "all")])
    server, health = build_server(DataPlane(manager, metrics, 5), Limits(max_instances=100), max_message_bytes=1 << 20)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    health.set("", health_pb2.HealthCheckResponse.SERVING)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "dbl"
        request.model_spec.version.value = 1
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[1, 2, 3]], np.float32)))
        request.output_filter.append("total")
        reply = stub.Predict(request, timeout=10)
        assert reply.model_spec.version.value == 1 and reply.model_spec.signature_name == "serving_default"
        assert list(reply.outputs) == ["total"] and tf.make_ndarray(reply.outputs["total"]).tolist() == [6.0]
        for mutate, code, text in [
            (lambda r: setattr(r.model_spec, "name", "nope"), grpc.StatusCode.NOT_FOUND, "Latest(nope)"),
            (lambda r: r.inputs["x"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 3), np.float64))),
             grpc.StatusCode.INVALID_ARGUMENT, "expects float32, got float64"),
            (lambda r: r.output_filter.append("nope"), grpc.StatusCode.INVALID_ARGUMENT, "output_filter names nope"),
            (lambda r: setattr(r.model_spec, "signature_name", "classify"), grpc.StatusCode.FAILED_PRECONDITION,
             "not a predict one"),
            (lambda r: r.inputs["x"].CopyFrom(tf.make_tensor_proto(np.zeros((9, 3), np.float32))),
             grpc.StatusCode.INVALID_ARGUMENT, "larger than maximum input batch size 8"),
        ]:
            bad = predict_pb2.PredictRequest()
            bad.CopyFrom(request)
            mutate(bad)
            with pytest.raises(grpc.RpcError) as err:
                stub.Predict(bad, timeout=10)
            assert err.value.code() == code and text in err.value.details(), err.value.details()
        meta = get_model_metadata_pb2.GetModelMetadataRequest()
        meta.model_spec.name = "dbl"
        meta.metadata_field.append("signature_def")
        defs = get_model_metadata_pb2.SignatureDefMap()
        stub.GetModelMetadata(meta, timeout=10).metadata["signature_def"].Unpack(defs)
        assert set(defs.signature_def) == {"serving_default", "pairs", "single", "classify"}
        models = model_service_pb2_grpc.ModelServiceStub(channel)
        status = get_model_status_pb2.GetModelStatusRequest()
        status.model_spec.name = "dbl"
        assert [s.version for s in models.GetModelStatus(status, timeout=10).model_version_status] == [2, 1]
        reload = model_management_pb2.ReloadConfigRequest()
        c = reload.config.model_config_list.config.add(name="other", base_path=str(tmp_path / "dbl"))
        c.model_version_policy.all.SetInParent()
        assert models.HandleReloadConfigRequest(reload, timeout=10).status.error_code == 0
        assert manager.available() == {"other": [1, 2]}
        check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert check.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        server.stop(0)
        manager.stop()


def test_grpc_and_rest_share_one_deadline_batched_or_not(tmp_path):
    """The data plane's deadline holds on gRPC for unbatched requests too (they used to run inline in the
    handler, beyond any timeout), with the same message as REST."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from zoo.export.serve.grpc_service import build_server

    make_versions(tmp_path, "slow", [1])
    gate = Gate()
    manager, metrics = start_manager(tmp_path, gate=gate)
    server, _ = build_server(DataPlane(manager, metrics, 0.05), Limits(), max_message_bytes=1 << 20)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "slow"
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 3), np.float32)))
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        with pytest.raises(grpc.RpcError) as err:
            stub.Predict(request, timeout=120)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "no answer within 0.05 s (zoo serve --request-timeout)" in err.value.details()
        assert gate.started.is_set()  # the model was running it
    finally:
        gate.released.set()
        server.stop(0)
        manager.stop()
    from starlette.testclient import TestClient

    gate = Gate()
    manager, metrics = start_manager(tmp_path, gate=gate)
    with TestClient(rest_app(manager, metrics, 0.05)) as client:
        r = client.post("/v1/models/slow:predict", json={"instances": [[1, 2, 3]]})
        assert r.json()["error"] == "Deadline exceeded: no answer within 0.05 s (zoo serve --request-timeout)"
    gate.released.set()
    manager.stop()


def test_base_path_mode_serves_savedmodel_versions_only(tmp_path):
    make_versions(tmp_path, "cnn", [1, 2])
    make_versions(tmp_path, "cnn", [3], saved_model=False)  # a TFLite-only version (zoo compress qat)
    make_versions(tmp_path, "qat", [1], saved_model=False)  # a TFLite-only model
    os.makedirs(tmp_path / ".tmp-1-99-x")
    (tmp_path / "models.config").write_text("model_config_list {}")
    manager, _ = start_manager(tmp_path)
    assert manager.available() == {"cnn": [2]} and manager.ready()
    make_versions(tmp_path, "late", [1])  # an export published while serving appears at the next poll
    manager.poll()
    assert manager.available() == {"cnn": [2], "late": [1]}
    manager.stop()


def test_deploy_files_parse_as_tf_serving_reads_them(tmp_path):
    """export/deploy: the batching file parses; tf_serving.sh --write-config turns the exporter's host paths
    into /models/NAME, and the result is a valid ModelServerConfig."""
    import subprocess

    from zoo.export.publish import write_models_config

    deploy = os.path.join(os.path.dirname(__file__), "..", "..", "export", "deploy")
    params = parse_batching_parameters(open(os.path.join(deploy, "batching.txt")).read())
    assert params.max_batch_size == 32 and params.allowed_batch_sizes[-1] == 32
    make_versions(tmp_path / "base", "digits", [1])
    make_versions(tmp_path / "base", "sentiment", [1, 2])
    write_models_config(str(tmp_path / "base"))
    out = subprocess.run(["bash", os.path.join(deploy, "tf_serving.sh"), "--write-config", str(tmp_path / "base"),
                          str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    configs = parse_model_config(open(tmp_path / "out" / "models.config").read(), str(tmp_path / "out" / "x"))
    assert [(c.name, c.base_path) for c in configs] == [("digits", "/models/digits"),
                                                        ("sentiment", "/models/sentiment")]
    assert parse_batching_parameters(open(tmp_path / "out" / "batching.txt").read()) == params


def write_example_signatures_model(path):
    """A SavedModel as Estimator exports made them: classify, regress and predict signatures on serialized
    tf.Example (feature x: 2 floats). scores = softmax(x @ W), classes 'neg'/'pos', regression = x0 + x1."""
    import tensorflow as tf

    v1 = tf.compat.v1
    with tf.Graph().as_default():
        serialized = v1.placeholder(tf.string, [None], name="tf_example")
        x = tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([2], tf.float32)})["x"]
        scores = tf.nn.softmax(tf.matmul(x, tf.constant([[1.0, -1.0], [2.0, 0.5]])))
        classes = tf.tile(tf.constant([["neg", "pos"]]), [tf.shape(x)[0], 1])
        total = tf.reduce_sum(x, axis=1, keepdims=True)
        with v1.Session() as sess:
            builder = v1.saved_model.Builder(path)
            builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map={
                "serving_default": v1.saved_model.classification_signature_def(serialized, classes, scores),
                "regress": v1.saved_model.regression_signature_def(serialized, total),
                "predict": v1.saved_model.predict_signature_def({"examples": serialized}, {"scores": scores})})
            builder.save()


def test_classify_and_regress_on_example_signatures(tmp_path):
    import grpc
    import tensorflow as tf
    from starlette.testclient import TestClient
    from tensorflow_serving.apis import classification_pb2, prediction_service_pb2_grpc, regression_pb2

    from zoo.export.serve.grpc_service import build_server

    write_example_signatures_model(str(tmp_path / "est" / "1"))
    manager = ModelManager(base=str(tmp_path))
    manager.start(poll_seconds=0)
    metrics = Metrics(manager.queued, lambda: {})
    x = np.array([[1.0, 2.0], [0.5, -3.0]], np.float32)
    want = tf.nn.softmax(x @ np.array([[1.0, -1.0], [2.0, 0.5]], np.float32)).numpy()
    with TestClient(rest_app(manager, metrics)) as client:
        r = client.post("/v1/models/est:classify", json={"examples": [{"x": [1.0, 2.0]}, {"x": [0.5, -3.0]}]})
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert [[label for label, _ in row] for row in results] == [["neg", "pos"]] * 2
        assert np.allclose([[score for _, score in row] for row in results], want, atol=1e-6)
        r = client.post("/v1/models/est:regress", json={"signature_name": "regress", "context": {"x": [1.0, 1.0]},
                                                         "examples": [{"x": [1.0, 2.0]}, {}]})
        assert r.json() == {"results": [3.0, 2.0]}  # the second example takes x from the context
        r = client.post("/v1/models/est:predict", json={"signature_name": "serving_default", "instances": ["x"]})
        assert r.status_code == 400 and "not a predict one" in r.json()["error"]
        r = client.post("/v1/models/est:classify", json={"examples": [{"y": [1.0]}]})
        assert r.status_code == 400 and "the model refused the input" in r.json()["error"]  # feature x missing
    server, _ = build_server(DataPlane(manager, metrics, 30), Limits(), max_message_bytes=1 << 20)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        request = classification_pb2.ClassificationRequest()
        request.model_spec.name = "est"
        for row in x:
            request.input.example_list.examples.add().features.feature["x"].float_list.value.extend(row.tolist())
        reply = stub.Classify(request, timeout=30)
        assert reply.model_spec.version.value == 1
        got = [[c.score for c in entry.classes] for entry in reply.result.classifications]
        assert np.allclose(got, want, atol=1e-6)
        request = regression_pb2.RegressionRequest()
        request.model_spec.name, request.model_spec.signature_name = "est", "regress"
        request.input.example_list.examples.add().features.feature["x"].float_list.value.extend([4.0, 5.0])
        assert [r.value for r in stub.Regress(request, timeout=30).result.regressions] == [9.0]
    finally:
        server.stop(0)
        manager.stop()


@pytest.mark.slow
def test_command_line_mistakes_are_one_line_errors(tmp_path):
    """Fresh `zoo serve` processes fed what a careless user types: one `error:` line, exit 2, no traceback."""
    import socket
    import subprocess
    import sys

    make_versions(tmp_path, "m", [1])
    (tmp_path / "bad.config").write_text("model_config_list { config { name: 'x' } }")
    (tmp_path / "bad_batching.txt").write_text("max_batch_size: 3")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = str(taken.getsockname()[1])
    cases = [([], "say what to serve"),
             (["nowhere"], "'nowhere' is not a directory"),
             (["m", "--model-config-file", "bad.config"], "not both"),
             (["--model-config-file", "bad.config"], "bad.config: every config needs a name and a base_path"),
             (["--model-config-file", "missing.config"], "does not exist"),
             ([".", "--batching-parameters-file", "bad_batching.txt"], "BatchingParameters text format"),
             ([".", "--rest-api-port", "70000"], "--rest-api-port must be between 0 and 65535"),
             ([".", "--max_num_load_retries", "-1"], "--max-num-load-retries must be 0 or more, got -1"),
             ([".", "--rest-api-port", port, "--port", "0"], f"cannot listen on 127.0.0.1:{port} for REST"),
             ([".", "--rest-api-port", "0", "--port", port], f"cannot listen on 127.0.0.1:{port} for gRPC")]
    try:
        for args, message in cases:
            out = subprocess.run([sys.executable, "-m", "zoo.cli", "serve", *args], cwd=str(tmp_path),
                                 capture_output=True, text=True, timeout=300)
            assert out.returncode == 2, (args, out.stderr)
            lines = out.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (args, out.stderr)
    finally:
        taken.close()
