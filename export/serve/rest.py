"""The REST side: TF Serving's /v1 API, KServe's v2 protocol and Prometheus metrics, as a Starlette app.

Request bodies are read with a size cap (413 beyond it), decoded by ``tensors`` against the
signature, run by the data plane (the batcher or a worker thread) under its deadline (504), and
answered with TF Serving's JSON shapes; every failure is ``{"error": "..."}`` with TF Serving's
status code. One access-log line per request.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from zoo.export.serve import examples, tensors
from zoo.export.serve.dataplane import DataPlane
from zoo.export.serve.errors import NotFound, ServingError

log = logging.getLogger(__name__)
access_log = logging.getLogger("zoo.serve.access")

# TF Serving's routes (model_servers/http_rest_api_util.cc): name, then a version or a label, then a verb.
V1_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
                     r"(?:(?P<metadata>/metadata)|:(?P<verb>predict|classify|regress))?$")
V2_MODEL = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>\d+))?(?P<tail>/ready|/infer)?$")


@dataclasses.dataclass(frozen=True)
class RestOptions:
    max_body_bytes: int = 32 << 20
    limits: tensors.Limits = tensors.Limits()
    cors: bool = False
    server_version: str = ""


def json_response(body: Any, status: int = 200) -> Response:
    # NaN / Infinity as TF Serving writes them (Starlette's JSONResponse refuses them).
    return Response(json.dumps(body, allow_nan=True, separators=(",", ":")), status_code=status,
                    media_type="application/json")


def error_response(exc: ServingError) -> Response:
    return json_response({"error": str(exc)}, exc.http_status)


class BodyTooLarge(ServingError):
    code = "INVALID_ARGUMENT"

    @property
    def http_status(self) -> int:
        return 413


class RestApi:
    def __init__(self, plane: DataPlane, options: RestOptions):
        self.plane, self.manager, self.options = plane, plane.manager, options

    # -- plumbing

    async def read_json(self, request: Request) -> Any:
        limit = self.options.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes "
                               "(zoo serve --max-body-bytes)")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"request body exceeds the limit of {limit} bytes (zoo serve --max-body-bytes)")
            chunks.append(chunk)
        raw = b"".join(chunks)
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise tensors.InvalidArgument(f"JSON Parse error: {exc}") from exc

    # -- TF Serving /v1

    async def v1(self, request: Request) -> Response:
        start = time.perf_counter()
        match = V1_PATH.match(request.url.path)
        if match is None or (request.method == "GET") != (match["verb"] is None) or \
                (request.method == "POST" and match["metadata"]):
            return json_response({"error": f"Malformed request: {request.method} {request.url.path}"}, 404)
        name, label = match["name"], match["label"]
        version = int(match["version"]) if match["version"] else None
        api = match["verb"] or ("metadata" if match["metadata"] else "status")
        try:
            if api == "status":
                response = self.status(name, version, label)
            elif api == "metadata":
                response = self.metadata(name, version, label)
            else:
                response = await self.predict(request, name, version, label, api)
        except ServingError as exc:
            self.plane.failed(exc, name, f"rest_{api}")
            response = error_response(exc)
        self.plane.observe(name, f"rest_{api}", response.status_code, start)
        return response

    def status(self, name: str, version: int | None, label: str | None) -> Response:
        from google.protobuf import json_format

        if label is not None:
            with self.manager.acquire(name, label=label) as held:
                version = held.number
        return json_response(json_format.MessageToDict(
            self.manager.status_proto(name, version), preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True))

    def metadata(self, name: str, version: int | None, label: str | None) -> Response:
        from google.protobuf import json_format

        with self.manager.acquire(name, version, label) as held:
            defs = json_format.MessageToDict(held.signature_def_map(), preserving_proto_field_name=True)
            return json_response({
                "model_spec": {"name": name, "signature_name": "", "version": str(held.number)},
                "metadata": {"signature_def": defs}})

    async def predict(self, request: Request, name: str, version: int | None, label: str | None,
                      verb: str) -> Response:
        body = await self.read_json(request)
        with self.manager.acquire(name, version, label) as held:
            sig_name = body.get("signature_name", "serving_default") if isinstance(body, dict) else "serving_default"
            if not isinstance(sig_name, str):
                raise tensors.InvalidArgument("'signature_name' must be a string")
            sig = held.signature(sig_name)
            if verb != "predict":
                key = examples.check_signature(sig, verb)
                serialized = examples.json_examples(body, self.options.limits)
                outputs = await self.plane.run_async(held, sig.name, {key: serialized})
                if verb == "classify":
                    results: Any = [[[label, score] for label, score in row]
                                    for row in examples.classifications(outputs, len(serialized))]
                else:
                    results = examples.regressions(outputs, len(serialized))
                return json_response({"results": results})
            sig = held.predict_signature(sig.name)
            inputs, row_format = tensors.rest_request(body, sig, self.options.limits)
            outputs = await self.plane.run_async(held, sig.name, inputs)
            return json_response(tensors.rest_response(outputs, sig, row_format))

    # -- KServe v2

    async def v2_server(self, request: Request) -> Response:
        return json_response({"name": "zoo-serve", "version": self.options.server_version, "extensions": []})

    async def v2_live(self, request: Request) -> Response:
        return json_response({"live": True})

    async def v2_ready(self, request: Request) -> Response:
        ready = self.manager.ready()
        return json_response({"ready": ready}, 200 if ready else 503)

    async def v2_model(self, request: Request) -> Response:
        start = time.perf_counter()
        match = V2_MODEL.match(request.url.path)
        if match is None or (request.method == "POST") != (match["tail"] == "/infer"):
            return json_response({"error": f"Malformed request: {request.method} {request.url.path}"}, 404)
        name, tail = match["name"], match["tail"]
        version = int(match["version"]) if match["version"] else None
        api = {"/ready": "v2_ready", "/infer": "v2_infer", None: "v2_metadata"}[tail]
        try:
            if tail == "/infer":
                response = await self.v2_infer(request, name, version)
            elif tail == "/ready":
                response = self.v2_model_ready(name, version)
            else:
                response = self.v2_metadata(name, version)
        except ServingError as exc:
            # KServe answers unknown models with 404 and every other failure with 400 (or the TF Serving code).
            self.plane.failed(exc, name, api)
            response = error_response(exc)
        self.plane.observe(name, api, response.status_code, start)
        return response

    def v2_model_ready(self, name: str, version: int | None) -> Response:
        try:
            with self.manager.acquire(name, version):
                return json_response({"name": name, "ready": True})
        except NotFound:
            raise
        except ServingError as exc:
            return json_response({"error": str(exc)}, 400)

    def v2_metadata(self, name: str, version: int | None) -> Response:
        with self.manager.acquire(name, version) as held:
            sig = held.signature("serving_default")
            return json_response({
                "name": name, "versions": [str(v) for v in self.manager.available().get(name, [])],
                "platform": "tensorflow_savedmodel",
                "inputs": [tensors.v2_tensor_metadata(i) for _, i in sorted(sig.inputs.items())],
                "outputs": [tensors.v2_tensor_metadata(o) for _, o in sorted(sig.outputs.items())]})

    async def v2_infer(self, request: Request, name: str, version: int | None) -> Response:
        body = await self.read_json(request)
        with self.manager.acquire(name, version) as held:
            params = body.get("parameters") if isinstance(body, dict) else None
            sig_name = params.get("signature_name") if isinstance(params, dict) else None
            sig = held.signature(sig_name if isinstance(sig_name, str) else "serving_default")
            inputs, requested = tensors.v2_request(body, sig, self.options.limits)
            outputs = await self.plane.run_async(held, sig.name, inputs)
            answer: dict[str, Any] = {"model_name": name, "model_version": str(held.number),
                                      "outputs": tensors.v2_outputs(outputs, sig, requested)}
            if isinstance(body.get("id"), str):
                answer["id"] = body["id"]
            return json_response(answer)

    # -- the rest

    async def prometheus(self, request: Request) -> Response:
        return Response(self.plane.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def not_found(self, request: Request, exc: Exception) -> Response:
        return json_response({"error": f"Malformed request: {request.method} {request.url.path}"}, 404)

    async def method_not_allowed(self, request: Request, exc: Exception) -> Response:
        return json_response({"error": f"{request.method} is not supported on {request.url.path}"}, 405)

    async def internal_error(self, request: Request, exc: Exception) -> Response:
        log.exception("internal error answering %s %s", request.method, request.url.path, exc_info=exc)
        return json_response({"error": f"internal error: {type(exc).__name__}: {exc}"}, 500)


class AccessLog:
    """ASGI middleware: one line per request (client, method, path, status, bytes, milliseconds)."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, seen = time.perf_counter(), {"status": 0, "bytes": 0}

        async def record(message: Any) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
            elif message["type"] == "http.response.body":
                seen["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            client = scope.get("client") or ("-", 0)
            access_log.info('%s "%s %s" %d %d %.1fms', client[0], scope["method"], scope["path"], seen["status"],
                            seen["bytes"], (time.perf_counter() - start) * 1e3)


def build_app(plane: DataPlane, options: RestOptions) -> Any:
    api = RestApi(plane, options)
    routes = [
        Route("/v1/models/{rest:path}", api.v1, methods=["GET", "POST"]),
        Route("/v2", api.v2_server, methods=["GET"]),
        Route("/v2/health/live", api.v2_live, methods=["GET"]),
        Route("/v2/health/ready", api.v2_ready, methods=["GET"]),
        Route("/v2/models/{rest:path}", api.v2_model, methods=["GET", "POST"]),
        Route("/monitoring/prometheus/metrics", api.prometheus, methods=["GET"]),
    ]
    app = Starlette(routes=routes, exception_handlers={404: api.not_found, 405: api.method_not_allowed,
                                                           Exception: api.internal_error})
    app.state.api = api
    wrapped: Any = app
    if options.cors:
        from starlette.middleware.cors import CORSMiddleware

        wrapped = CORSMiddleware(wrapped, allow_origins=["*"], allow_methods=["GET", "POST"], allow_headers=["*"])
    return AccessLog(wrapped)
