"""``zoo serve``: a model server for export base paths that speaks TF Serving's REST (/v1) and gRPC
APIs and the KServe / Open Inference Protocol v2, so what works against it deploys unchanged on
TF Serving. Modules, from the wire inwards:

- ``rest`` (Starlette app: /v1, /v2, /monitoring/prometheus/metrics) and ``grpc_service``
  (tensorflow.serving.PredictionService, ModelService, grpc.health.v1),
- ``tensors``: JSON / KServe v2 / TensorProto <-> numpy, checked against a signature,
- ``manager``: models.config and base paths, version policies and labels, polling, load, warm-up,
  unload after the last in-flight request,
- ``batching``: TF Serving's batching parameters and a dynamic batcher per version and signature,
- ``servable``: one loaded SavedModel version and its signatures,
- ``server``: start-up, ports, shutdown.
"""
