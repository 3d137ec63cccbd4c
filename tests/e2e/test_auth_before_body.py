"""Authentication happens on the metadata, before the request body is decoded; a body that is no valid message
is INVALID_ARGUMENT, never INTERNAL (SPEC 10)."""

from __future__ import annotations

import grpc
import pytest

from tests.support.processes import Suite
from tests.support.rpc import bearer, reason_of
from tests.support.tenants import new_tenant

GARBAGE = b"\xff\xff\xff\xff\x0f" + b"\x0a\xff\xff\xff" * 64  # truncated varints and lengths: no valid message


def _raw(channel: grpc.Channel, method: str) -> grpc.UnaryUnaryMultiCallable[bytes, bytes]:
    return channel.unary_unary(method, request_serializer=None, response_deserializer=None)


@pytest.mark.parametrize(
    "method",
    [
        "/kalcifer.v1.FlowService/ListFlows",
        "/kalcifer.v1.TriggerService/TriggerFlow",
        "/kalcifer.v1.TenantService/CreateTenant",
    ],
)
def test_an_anonymous_caller_is_refused_before_its_body_is_read(
    suite: Suite, channel: grpc.Channel, method: str
) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        _raw(channel, method)(GARBAGE)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason_of(refused.value) == "UNAUTHENTICATED"


def test_an_authenticated_caller_with_a_body_that_is_no_message_gets_invalid_argument(
    suite: Suite, channel: grpc.Channel
) -> None:
    tenant = new_tenant(suite, "garbage-sender")
    with pytest.raises(grpc.RpcError) as refused:
        _raw(channel, "/kalcifer.v1.FlowService/ListFlows")(GARBAGE, metadata=tenant.auth)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid protobuf message" in (refused.value.details() or "")


def test_a_bad_admin_token_is_refused_on_metadata_alone(suite: Suite, channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        _raw(channel, "/kalcifer.v1.TenantService/CreateTenant")(GARBAGE, metadata=bearer("not-the-admin-token"))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
