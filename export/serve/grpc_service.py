"""The gRPC side: TF Serving's ``tensorflow.serving.PredictionService`` and ``ModelService`` (the
servicers generated in tensorflow-serving-api) and the standard ``grpc.health.v1`` service."""

from __future__ import annotations

import concurrent.futures
import logging
import time
from typing import Any

import grpc
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from zoo.export.serve import examples, tensors
from zoo.export.serve.dataplane import DataPlane
from zoo.export.serve.errors import InvalidArgument, ServingError
from zoo.export.serve.manager import ModelManager
from zoo.export.serve.source import configs_from_proto

log = logging.getLogger(__name__)


def _version_request(spec: Any) -> tuple[int | None, str | None]:
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return spec.version.value, None
    if choice == "version_label":
        return None, spec.version_label
    return None, None


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, plane: DataPlane, limits: tensors.Limits):
        self.plane, self.manager, self.limits = plane, plane.manager, limits

    def _fail(self, context: Any, exc: ServingError, model: str, api: str, start: float) -> None:
        self.plane.failed(exc, model, api)
        self.plane.observe(model, api, exc.code, start)
        context.abort(getattr(grpc.StatusCode, exc.code), str(exc))

    def _run(self, held: Any, signature: str, inputs: dict[str, Any], context: Any) -> dict[str, Any]:
        return self.plane.run(held, signature, inputs, context.time_remaining())

    def Predict(self, request: Any, context: Any) -> Any:
        start, spec = time.perf_counter(), request.model_spec
        try:
            version, label = _version_request(spec)
            with self.manager.acquire(spec.name, version, label) as held:
                sig = held.predict_signature(spec.signature_name or "serving_default")
                inputs = {k: tensors.proto_to_array(v, k) for k, v in request.inputs.items()}
                inputs = tensors.check_inputs(sig, inputs, self.limits)
                wanted = list(request.output_filter) or sorted(sig.outputs)
                unknown = sorted(set(wanted) - set(sig.outputs))
                if unknown:
                    raise InvalidArgument(f"output_filter names {', '.join(unknown)}, which signature '{sig.name}' "
                                          f"does not have (outputs: {', '.join(sorted(sig.outputs))})")
                outputs = self._run(held, sig.name, inputs, context)
                response = predict_pb2.PredictResponse()
                response.model_spec.name = spec.name
                response.model_spec.version.value = held.number
                response.model_spec.signature_name = sig.name
                for name in wanted:
                    response.outputs[name].CopyFrom(tensors.array_to_proto(outputs[name]))
        except ServingError as exc:
            self._fail(context, exc, spec.name, "grpc_predict", start)
        self.plane.observe(spec.name, "grpc_predict", "OK", start)
        return response

    def GetModelMetadata(self, request: Any, context: Any) -> Any:
        start, spec = time.perf_counter(), request.model_spec
        try:
            fields = list(request.metadata_field)
            if not fields:
                raise InvalidArgument("GetModelMetadataRequest must specify at least one metadata_field")
            for field in fields:
                if field != "signature_def":
                    raise InvalidArgument(f"Metadata field {field} is not supported")
            version, label = _version_request(spec)
            with self.manager.acquire(spec.name, version, label) as held:
                response = get_model_metadata_pb2.GetModelMetadataResponse()
                response.model_spec.name = spec.name
                response.model_spec.version.value = held.number
                response.metadata["signature_def"].Pack(held.signature_def_map())
        except ServingError as exc:
            self._fail(context, exc, spec.name, "grpc_metadata", start)
        self.plane.observe(spec.name, "grpc_metadata", "OK", start)
        return response

    def _examples(self, request: Any, context: Any, verb: str) -> Any:
        start, spec = time.perf_counter(), request.model_spec
        try:
            version, label = _version_request(spec)
            with self.manager.acquire(spec.name, version, label) as held:
                sig = held.signature(spec.signature_name or "serving_default")
                key = examples.check_signature(sig, verb)
                serialized = examples.proto_examples(request.input, self.limits)
                outputs = self._run(held, sig.name, {key: serialized}, context)
                if verb == "classify":
                    response = classification_pb2.ClassificationResponse()
                    for row in examples.classifications(outputs, len(serialized)):
                        entry = response.result.classifications.add()
                        for name, score in row:
                            entry.classes.add(label=name, score=score)
                else:
                    response = regression_pb2.RegressionResponse()
                    for value in examples.regressions(outputs, len(serialized)):
                        response.result.regressions.add(value=value)
                response.model_spec.name = spec.name
                response.model_spec.version.value = held.number
                response.model_spec.signature_name = sig.name
        except ServingError as exc:
            self._fail(context, exc, spec.name, f"grpc_{verb}", start)
        self.plane.observe(spec.name, f"grpc_{verb}", "OK", start)
        return response

    def Classify(self, request: Any, context: Any) -> Any:
        return self._examples(request, context, "classify")

    def Regress(self, request: Any, context: Any) -> Any:
        return self._examples(request, context, "regress")

    def MultiInference(self, request: Any, context: Any) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "zoo serve does not implement MultiInference; call Predict")


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, manager: ModelManager):
        self.manager = manager

    def GetModelStatus(self, request: Any, context: Any) -> Any:
        spec = request.model_spec
        try:
            version, label = _version_request(spec)
            if label is not None:
                with self.manager.acquire(spec.name, label=label) as held:
                    version = held.number
            return self.manager.status_proto(spec.name, version)
        except ServingError as exc:
            context.abort(getattr(grpc.StatusCode, exc.code), str(exc))
        return get_model_status_pb2.GetModelStatusResponse()  # not reached: abort raises

    def HandleReloadConfigRequest(self, request: Any, context: Any) -> Any:
        response = model_management_pb2.ReloadConfigResponse()
        try:
            self.manager.reload(configs_from_proto(request.config, "ReloadConfigRequest", "."))
        except ValueError as exc:
            response.status.error_code = 3  # INVALID_ARGUMENT
            response.status.error_message = str(exc)
        return response


def build_server(plane: DataPlane, limits: tensors.Limits, max_message_bytes: int,
                 workers: int = 32) -> tuple[Any, Any]:
    """A grpc.Server with the services added (not started yet) and its health servicer."""
    from grpc_health.v1 import health, health_pb2_grpc

    options = [("grpc.max_receive_message_length", max_message_bytes),
               ("grpc.max_send_message_length", max_message_bytes),
               ("grpc.so_reuseport", 0)]  # a second server on a taken port must fail, not share it
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
                         options=options)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(plane, limits), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(plane.manager), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    return server, health_servicer
