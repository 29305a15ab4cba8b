"""A real `zoo serve` on real exports (digits CNN, MiniLM sentiment classifier on raw strings,
transformer translator), run in this process by ModelServer (what the command runs; the command itself
starts and stops on SIGTERM in a fresh process at the end), queried over its real ports with an HTTP
client and TF Serving's official gRPC client: every wire
gives what calling the SavedModel directly gives; batching merges and splits correctly; a new version
swaps in under load with no failed request; a broken version is reported and never served. Where a test
needs a request to be running (merging, SIGTERM), a gate model holds it until the test releases it."""

from __future__ import annotations

import concurrent.futures
import os
import re
import shutil
import signal
import threading

import numpy as np
import pytest

from tests.export.serve_process import ServerProcess
from tests.waits import wait_until
from zoo.export.exporter import export_run
from zoo.rundir import RunDir

pytestmark = pytest.mark.slow

BATCHING = """
max_batch_size { value: 16 }
batch_timeout_micros { value: 20000 }
max_enqueued_batches { value: 100 }
num_batch_threads { value: 1 }
"""


@pytest.fixture(scope="module")
def base(digits_run, minilm_export, translate_export, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    base = str(root / "exports")
    export_run(digits_run.run_dir, base, "digits", "saved_model", latency_runs=2)
    for (version_dir, _), name in ((minilm_export, "sentiment"), (translate_export, "mt")):
        shutil.copytree(version_dir, os.path.join(base, name, "1"))  # the session's exports, made once
    write_gate_model(os.path.join(base, "gate", "1"))
    with open(root / "batching.txt", "w") as fh:
        fh.write(BATCHING)
    return root


@pytest.fixture(scope="module")
def server(base):
    """``zoo serve exports --batching-parameters-file batching.txt`` in this process (ModelServer: what the
    command runs, on background threads); its log goes to serve.log. The command's own start-up, SIGTERM
    and exit code are tested in a fresh process below."""
    import logging

    from zoo.export.serve.server import ModelServer, ServeOptions

    handler = logging.FileHandler(base / "serve.log")
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("zoo")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    options = ServeOptions(base=str(base / "exports"), port=0, rest_api_port=0,
                           batching_parameters_file=str(base / "batching.txt"))
    try:
        with ModelServer(options) as running:
            yield running
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        handler.close()
    with pytest.raises(OSError):  # stopped: the port no longer answers
        import socket

        socket.create_connection(("127.0.0.1", running.rest_port), timeout=5).close()
    assert "Traceback" not in (base / "serve.log").read_text()


def write_gate_model(path):
    """A SavedModel that holds each batch until a file exists: serving_default(x: float32 [B, 3], release:
    string [B]) -> y = 2 x. It first writes ``release[0] + '.started'``, then spins until ``release[0]``
    exists, so a test knows when a request is running and decides when it ends."""
    import tensorflow as tf

    class Gate(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x"),
                                      tf.TensorSpec([None], tf.string, name="release")])
        def serve(self, x, release):
            started = tf.io.write_file(release[0] + ".started", "")
            with tf.control_dependencies([started]):
                waited = tf.while_loop(lambda i: tf.equal(tf.size(tf.io.matching_files(release[0])), 0),
                                       lambda i: i + 1, [tf.constant(0)])
            with tf.control_dependencies(tf.nest.flatten(waited)):
                return {"y": tf.identity(x * 2.0)}

    module = Gate()
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})


def gate_request(url, x, release):
    import httpx

    r = httpx.post(f"{url}/v1/models/gate:predict", json={"inputs": {"x": x, "release": [release] * len(x)}},
                   timeout=300)
    assert r.status_code == 200, r.text
    return r.json()["outputs"]  # y, the only output (unnamed)


def scrape(url, metric, model):
    """The value of ``metric`` for ``model``'s version 1 serving_default in /monitoring/prometheus/metrics."""
    import httpx

    text = httpx.get(f"{url}/monitoring/prometheus/metrics", timeout=60).text
    labels = rf'\{{model="{model}",signature="serving_default",version="1"\}}'
    found = re.search(rf"^{metric}{labels} (\S+)$", text, re.M)
    return float(found.group(1)) if found else None


def direct(version_dir, inputs):
    import tensorflow as tf
    import tensorflow_text  # noqa: F401

    fn = tf.saved_model.load(version_dir).signatures["serving_default"]
    return {k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in inputs.items()}).items()}


def samples(base):
    """(model, named inputs as numpy, the same as JSON) for each export, from its run's eval sample."""
    out = []
    for name in ("digits", "sentiment", "mt"):
        import json

        report = json.load(open(os.path.join(base, "exports", name, "1", "report.json")))
        x, _ = RunDir(report["run_dir"]).eval_sample()
        if name == "digits":
            arr = np.asarray(x[:3], np.float32)
            out.append((name, {"images": arr}, {"images": arr.tolist()}))
        else:
            texts = [str(t) for t in x[:3]]
            key = "text"
            out.append((name, {key: np.asarray([t.encode() for t in texts], dtype=object)}, {key: texts}))
    return out


def assert_same(got, want, context):
    assert set(got) == set(want), context
    for k in want:
        w = np.asarray(want[k])
        g = np.asarray(got[k], dtype=object if w.dtype == object else w.dtype)
        if w.dtype == object:
            assert [v if isinstance(v, bytes) else str(v).encode() for v in g.ravel()] == list(w.ravel()), (context, k)
        elif w.dtype.kind in "iu":
            assert np.array_equal(g, w), (context, k)
        else:
            assert np.allclose(g, w, atol=1e-5, rtol=0), (context, k, float(np.abs(g - w).max()))


def test_every_wire_gives_the_saved_models_own_outputs(server, base):
    import grpc
    import httpx
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(server.grpc_address))
    with httpx.Client(base_url=server.rest_url, timeout=60) as http:
        for name, arrays, as_json in samples(base):
            want = direct(str(base / "exports" / name / "1"), arrays)
            rows = len(next(iter(arrays.values())))
            key = next(iter(as_json))
            instances = as_json[key]  # one input: plain values per instance
            r = http.post(f"/v1/models/{name}:predict", json={"instances": instances})
            assert r.status_code == 200, r.text
            preds = r.json()["predictions"]
            row = {k: [p[k] for p in preds] for k in preds[0]} if isinstance(preds[0], dict) else \
                {next(iter(want)): preds}
            assert_same({k: _bytes(v) for k, v in row.items()}, want, (name, "row"))
            r = http.post(f"/v1/models/{name}/versions/1:predict", json={"inputs": as_json})
            cols = r.json()["outputs"]
            cols = cols if isinstance(cols, dict) else {next(iter(want)): cols}
            assert_same({k: _bytes(v) for k, v in cols.items()}, want, (name, "columnar"))
            spec = {"name": key, "shape": list(arrays[key].shape), "data": np.asarray(instances).ravel().tolist(),
                    "datatype": "BYTES" if arrays[key].dtype == object else "FP32"}
            r = http.post(f"/v2/models/{name}/infer", json={"inputs": [spec]})
            assert r.status_code == 200, r.text
            v2 = {o["name"]: np.asarray(o["data"], dtype=object if o["datatype"] == "BYTES" else None)
                  .reshape(o["shape"]) for o in r.json()["outputs"]}
            assert_same({k: _bytes(v) for k, v in v2.items()}, want, (name, "v2"))
            request = predict_pb2.PredictRequest()
            request.model_spec.name = name
            request.inputs[key].CopyFrom(tf.make_tensor_proto(arrays[key]))
            reply = stub.Predict(request, timeout=60)
            assert reply.model_spec.version.value == 1
            assert_same({k: tf.make_ndarray(v) for k, v in reply.outputs.items()}, want, (name, "grpc"))
            assert rows == 3
        status = http.get("/v1/models/sentiment").json()
        assert status["model_version_status"][0]["state"] == "AVAILABLE"
        sig = http.get("/v1/models/sentiment/metadata").json()["metadata"]["signature_def"]["signature_def"]
        assert sig["serving_default"]["inputs"]["text"]["dtype"] == "DT_STRING"
        assert http.get("/v2/health/ready").status_code == 200
    assert "2 warm-up requests" in open(base / "serve.log").read()  # replayed before AVAILABLE


def _bytes(values):
    arr = np.asarray(values, dtype=object)
    if arr.size and all(isinstance(v, str) for v in arr.ravel()):
        return np.vectorize(lambda s: s.encode(), otypes=[object])(arr)
    return np.asarray(values)


def test_concurrent_requests_are_batched_and_split_back_exactly(server, base, tmp_path):
    import httpx

    x, _ = RunDir(_run_dir(base, "digits")).eval_sample()
    x = np.asarray(x[:48], np.float32)
    want = direct(str(base / "exports" / "digits" / "1"), {"images": x})
    chunks = [(i, i + 1 + (i // 3) % 3) for i in range(0, 45, 3)]  # requests of 1, 2 and 3 rows

    def call(span):
        a, b = span
        with httpx.Client(base_url=server.rest_url, timeout=60) as http:
            r = http.post("/v1/models/digits:predict", json={"inputs": x[a:b].tolist()})
            assert r.status_code == 200, r.text
            return span, r.json()["outputs"]

    with concurrent.futures.ThreadPoolExecutor(len(chunks)) as pool:
        for (a, b), out in pool.map(call, chunks):
            assert out["label"] == want["label"][a:b].tolist()
            assert np.allclose(out["probabilities"], want["probabilities"][a:b], atol=1e-5)
    # Merging made certain: the gate model holds the only batch thread while the requests queue up behind it.
    release = str(tmp_path / "go")
    sizes = [1, 2, 3] * 4
    rows = np.arange(sum(sizes) * 3, dtype=np.float32).reshape(-1, 3)
    spans = [(a, a + n) for a, n in zip(np.cumsum([0, *sizes[:-1]]), sizes)]
    with concurrent.futures.ThreadPoolExecutor(len(spans) + 1) as pool:
        first = pool.submit(gate_request, server.rest_url, [[0.0, 0.0, 0.0]], release)
        wait_until(lambda: os.path.exists(release + ".started"), "the gate model to run the first request")
        pending = [(span, pool.submit(gate_request, server.rest_url, rows[span[0]:span[1]].tolist(), release))
                   for span in spans]
        queued = wait_until(lambda: scrape(server.rest_url, "zoo_serve_queued_requests", "gate") == len(spans)
                            and scrape(server.rest_url, "zoo_serve_queued_batches", "gate"), "every request to queue")
        open(release, "w").close()
        assert first.result() == [[0.0, 0.0, 0.0]]
        for (a, b), future in pending:
            assert future.result() == (rows[a:b] * 2).tolist(), (a, b)  # each request got its own rows back
    assert scrape(server.rest_url, "zoo_serve_batch_size_count", "gate") == 1 + queued < 1 + len(spans)  # merged


def _run_dir(base, name):
    import json

    return json.load(open(os.path.join(base, "exports", name, "1", "report.json")))["run_dir"]


def test_a_new_version_swaps_in_under_load_and_a_broken_one_is_never_served(server, base, digits_run):
    import grpc
    import httpx
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    x, _ = RunDir(digits_run.run_dir).eval_sample()
    body = {"instances": np.asarray(x[:2], np.float32).tolist()}
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "digits"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(np.asarray(x[:2], np.float32)))
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(server.grpc_address))
    stop, failures, versions, sent = threading.Event(), [], set(), [0]

    def client():
        with httpx.Client(base_url=server.rest_url, timeout=60) as http:
            while not stop.is_set() and sent[0] < 5000:  # bounded
                sent[0] += 2
                r = http.post("/v1/models/digits:predict", json=body)
                if r.status_code != 200:
                    failures.append(r.text)
                try:
                    versions.add(stub.Predict(request, timeout=60).model_spec.version.value)
                except grpc.RpcError as exc:
                    failures.append(exc.details())

    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    def states():
        status = httpx.get(f"{server.rest_url}/v1/models/digits", timeout=60).json()["model_version_status"]
        return [(s["version"], s["state"]) for s in status]

    try:
        wait_until(lambda: 1 in versions and sent[0] > 10, "clients answered by version 1")
        export_run(digits_run.run_dir, str(base / "exports"), "digits", "saved_model", latency_runs=2)  # version 2
        wait_until(lambda: states() == [("2", "AVAILABLE"), ("1", "END")], "version 2 in, version 1 out")
        wait_until(lambda: 2 in versions or failures, "clients answered by version 2")  # requests keep flowing
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not failures, failures[:3]
    assert versions == {1, 2} and sent[0] > 10
    # A version directory that is not a SavedModel: reported with its error, version 2 still served.
    broken = base / "exports" / "digits" / "3"
    os.makedirs(broken)
    with open(broken / "saved_model.pb", "wb") as fh:
        fh.write(b"not a protobuf")
    wait_until(lambda: states()[0] == ("3", "END"), "the broken version 3 to be reported")
    status = httpx.get(f"{server.rest_url}/v1/models/digits", timeout=60).json()["model_version_status"]
    assert status[0]["state"] == "END" and status[0]["status"]["error_message"], status
    assert stub.Predict(request, timeout=60).model_spec.version.value == 2
    shutil.rmtree(broken)


def test_every_export_carries_tf_serving_warmup_records(base):
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    for name, inputs in (("digits", {"images"}), ("sentiment", {"text"}), ("mt", {"text"})):
        path = base / "exports" / name / "1" / "assets.extra" / "tf_serving_warmup_requests"
        records = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(str(path))]
        assert [len(next(iter(r.predict_log.request.inputs.values())).string_val) or
                tf.make_ndarray(next(iter(r.predict_log.request.inputs.values()))).shape[0] for r in records] == [1, 8]
        for r in records:
            assert set(r.predict_log.request.inputs) == inputs
            assert r.predict_log.request.model_spec.signature_name == "serving_default"


def test_sigterm_finishes_requests_in_flight_then_exits(tmp_path):
    import httpx

    write_gate_model(str(tmp_path / "exports" / "gate" / "1"))
    release = str(tmp_path / "go")
    with ServerProcess(["exports", "--port", "0", "--rest-api-port", "0"], tmp_path, str(tmp_path / "s.log")) as server:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(gate_request, server.rest_url, [[1.0, 2.0, 3.0]], release)
            wait_until(lambda: os.path.exists(release + ".started"), "the request to be running")
            server.send(signal.SIGTERM)
            wait_until(lambda: "stopping: no new requests" in server.log_so_far(), "the server to start stopping")
            assert not in_flight.done()  # SIGTERM came while the request was running
            open(release, "w").close()
            assert in_flight.result() == [[2.0, 4.0, 6.0]]  # answered although SIGTERM came first
    assert server.returncode == 0 and "zoo serve: stopped" in server.log
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.rest_url + "/v2/health/live", timeout=5)
