"""Kalcifer's Python SDK: `KalciferClient` over the generated `kalcifer.v1` stubs.

The curated surface is re-exported here; `kalcifer_client.errors`, `.retry` and `.graphs` hold the rest. The
generated messages and stubs are the package `kalcifer.v1` (e.g. `from kalcifer.v1 import flow_pb2`).
"""

from kalcifer_client._client import KalciferClient
from kalcifer_client._events import Event
from kalcifer_client.errors import (
    Aborted,
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    KalciferError,
    NotFound,
    PermissionDenied,
    PreconditionViolation,
    RateLimited,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)
from kalcifer_client.graphs import graph_from_dict, graph_to_dict
from kalcifer_client.retry import NO_RETRIES, RetryPolicy

__all__ = [
    "NO_RETRIES",
    "Aborted",
    "AlreadyExists",
    "DeadlineExceeded",
    "Event",
    "FailedPrecondition",
    "FieldViolation",
    "Internal",
    "InvalidArgument",
    "KalciferClient",
    "KalciferError",
    "NotFound",
    "PermissionDenied",
    "PreconditionViolation",
    "RateLimited",
    "ResourceExhausted",
    "RetryPolicy",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "graph_from_dict",
    "graph_to_dict",
]
