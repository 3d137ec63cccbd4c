"""The SDK reads what the server writes: statuses built by the server's own mapping table become the right typed
exceptions, and its graph conversion agrees with the services' (`kalcifer_common.graphs`)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from hypothesis import given
from hypothesis import strategies as st
from kalcifer_client import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    KalciferError,
    NotFound,
    PreconditionViolation,
    RateLimited,
    ResourceExhausted,
    RetryPolicy,
    Unauthenticated,
    Unavailable,
    graph_from_dict,
    graph_to_dict,
)
from kalcifer_client.errors import error_from_status
from kalcifer_common import errors
from kalcifer_common.graphs import graph_from_json, graph_to_json
from kalcifer_common.rpc.errors import status_for


def _as_client_sees_it(error: BaseException) -> KalciferError:
    status = status_for(error)
    return error_from_status(status.code, status.details, status.trailing_metadata)


def test_each_domain_error_arrives_as_its_typed_exception() -> None:
    cases: list[tuple[BaseException, type[KalciferError]]] = [
        (errors.NotFound("flow", "f-1"), NotFound),
        (errors.AlreadyExists("live", reason="ALREADY_IN_FLOW"), AlreadyExists),
        (errors.InvalidArgument.single("name", "is required"), InvalidArgument),
        (errors.FailedPrecondition("FLOW_NOT_ACTIVE", "not active"), FailedPrecondition),
        (errors.EtagMismatch("flow", "f-1"), Aborted),
        (errors.ResourceExhausted("QUOTA", "too many"), ResourceExhausted),
        (errors.ResourceExhausted("RATE_LIMITED", "slow down", retry_after_seconds=0.25), RateLimited),
        (errors.Unauthenticated("who are you"), Unauthenticated),
        (errors.Unavailable("database down"), Unavailable),
    ]
    for domain_error, expected in cases:
        assert type(_as_client_sees_it(domain_error)) is expected, domain_error


def test_details_become_fields() -> None:
    invalid = _as_client_sees_it(
        errors.InvalidArgument([errors.FieldViolation("a", "bad"), errors.FieldViolation("b.c", "worse")])
    )
    assert invalid.violations == (FieldViolation("a", "bad"), FieldViolation("b.c", "worse"))
    assert not invalid.retryable

    precondition = _as_client_sees_it(errors.FailedPrecondition("FLOW_IN_USE", "in use", metadata={"journey": "j"}))
    assert (precondition.reason, precondition.metadata) == ("FLOW_IN_USE", {"journey": "j"})

    limited = _as_client_sees_it(errors.ResourceExhausted("RATE_LIMITED", "slow down", retry_after_seconds=0.25))
    assert limited.retry_after == pytest.approx(0.25)
    assert limited.retryable

    missing = _as_client_sees_it(errors.NotFound("instance", "i-1"))
    assert (missing.resource_type, missing.resource_name) == ("instance", "i-1")


def test_precondition_failure_details_are_listed() -> None:
    failure = error_details_pb2.PreconditionFailure()
    failure.violations.add(type="TOS", subject="tenant", description="terms not accepted")
    packed = any_pb2.Any()
    packed.Pack(failure)
    status = status_pb2.Status(code=code_pb2.FAILED_PRECONDITION, message="no", details=[packed])
    error = error_from_status(
        grpc.StatusCode.FAILED_PRECONDITION, "no", (("grpc-status-details-bin", status.SerializeToString()),)
    )
    assert error.precondition_violations == (PreconditionViolation("TOS", "tenant", "terms not accepted"),)


def test_a_status_without_details_keeps_code_and_message() -> None:
    error = error_from_status(grpc.StatusCode.UNAVAILABLE, "connection refused", ())
    assert isinstance(error, Unavailable)
    assert (error.message, error.reason, error.violations) == ("connection refused", "", ())


def test_backoff_stays_within_its_ceiling_and_honours_retry_info() -> None:
    policy = RetryPolicy(initial_backoff=0.1, max_backoff=1.0, multiplier=2.0)
    for retry in range(1, 10):
        assert 0 <= policy.delay(retry, None) <= min(1.0, 0.1 * 2 ** (retry - 1))
        assert 2.0 <= policy.delay(retry, 2.0) <= 2.2
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


_json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=False, allow_infinity=False), st.text()
)
_json = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
_ids = st.text(min_size=1, max_size=8)
_graphs = st.fixed_dictionaries(
    {
        "nodes": st.lists(
            st.fixed_dictionaries(
                {"id": _ids, "type": _ids, "config": st.dictionaries(st.text(max_size=5), _json, max_size=3)},
                optional={
                    "position": st.fixed_dictionaries({"x": st.integers(-500, 500), "y": st.integers(-500, 500)})
                },
            ),
            max_size=4,
        ),
        "edges": st.lists(
            st.fixed_dictionaries({"source": _ids, "target": _ids}, optional={"id": _ids, "branch": _ids}),
            max_size=4,
        ),
    }
)


@given(_graphs)
def test_the_sdk_and_the_services_convert_graphs_alike(graph: dict[str, Any]) -> None:
    ours = graph_from_dict(graph)
    assert ours == graph_from_json(graph)
    assert graph_to_dict(ours) == graph_to_json(ours) == graph
