"""Fixtures of the API tests, all on the session's `suite`: one channel to the API per module, the service stubs on
it, and tenants of the module's own, named after it. A module whose tests each need a fresh tenant overrides
`tenant` (or `tenant_a`, `tenant_b`) with a function-scoped fixture."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from kalcifer.v1 import (
    customer_pb2_grpc,
    event_pb2_grpc,
    flow_pb2_grpc,
    instance_pb2_grpc,
    journey_pb2_grpc,
    node_type_pb2_grpc,
    segment_pb2_grpc,
    trigger_pb2_grpc,
)

from tests.integration.api.marketing import Stubs
from tests.support.processes import Suite
from tests.support.tenants import Tenant, new_tenant


def _module_tenant(suite: Suite, request: pytest.FixtureRequest, suffix: str = "") -> Tenant:
    name = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_").replace("_", "-")
    return new_tenant(suite, name + suffix)


@pytest.fixture(scope="module")
def tenant(suite: Suite, request: pytest.FixtureRequest) -> Tenant:
    """A tenant of this module's own."""
    return _module_tenant(suite, request)


@pytest.fixture(scope="module")
def tenant_a(suite: Suite, request: pytest.FixtureRequest) -> Tenant:
    """One of two tenants of this module's own (isolation tests)."""
    return _module_tenant(suite, request, "-a")


@pytest.fixture(scope="module")
def tenant_b(suite: Suite, request: pytest.FixtureRequest) -> Tenant:
    """The other of two tenants of this module's own."""
    return _module_tenant(suite, request, "-b")


@pytest.fixture(scope="module")
def channel(suite: Suite) -> Iterator[grpc.Channel]:
    """A channel to the suite's API."""
    with grpc.insecure_channel(suite.address("api")) as opened:
        yield opened


@pytest.fixture(scope="module")
def flows(channel: grpc.Channel) -> flow_pb2_grpc.FlowServiceStub:
    return flow_pb2_grpc.FlowServiceStub(channel)


@pytest.fixture(scope="module")
def instances(channel: grpc.Channel) -> instance_pb2_grpc.InstanceServiceStub:
    return instance_pb2_grpc.InstanceServiceStub(channel)


@pytest.fixture(scope="module")
def triggers(channel: grpc.Channel) -> trigger_pb2_grpc.TriggerServiceStub:
    return trigger_pb2_grpc.TriggerServiceStub(channel)


@pytest.fixture(scope="module")
def events(channel: grpc.Channel) -> event_pb2_grpc.EventServiceStub:
    return event_pb2_grpc.EventServiceStub(channel)


@pytest.fixture(scope="module")
def node_types(channel: grpc.Channel) -> node_type_pb2_grpc.NodeTypeServiceStub:
    return node_type_pb2_grpc.NodeTypeServiceStub(channel)


@pytest.fixture(scope="module")
def stubs(channel: grpc.Channel) -> Stubs:
    """The marketing services' stubs (journeys, customers, segments)."""
    return Stubs(
        journeys=journey_pb2_grpc.JourneyServiceStub(channel),
        customers=customer_pb2_grpc.CustomerServiceStub(channel),
        segments=segment_pb2_grpc.SegmentServiceStub(channel),
    )
