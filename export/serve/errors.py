"""Failures a request can meet, with the status codes TF Serving gives them on each wire.

The codes are gRPC's (``tensorflow.error.Code``); REST maps them as TF Serving's
``model_servers/http_server.cc`` does (400 for bad arguments, 404 unknown servable, 429 queue
full, 501 unimplemented, 503 unavailable, 504 deadline).
"""

from __future__ import annotations

HTTP_STATUS = {
    "INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400,
    "NOT_FOUND": 404, "RESOURCE_EXHAUSTED": 429, "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504, "INTERNAL": 500,
}


class ServingError(Exception):
    """A request that cannot be answered; ``code`` is the gRPC status name."""

    code = "INTERNAL"

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]


class InvalidArgument(ServingError):
    code = "INVALID_ARGUMENT"


class NotFound(ServingError):
    code = "NOT_FOUND"


class Unavailable(ServingError):
    code = "UNAVAILABLE"


class ResourceExhausted(ServingError):
    code = "RESOURCE_EXHAUSTED"


class DeadlineExceeded(ServingError):
    code = "DEADLINE_EXCEEDED"


class FailedPrecondition(ServingError):
    code = "FAILED_PRECONDITION"
