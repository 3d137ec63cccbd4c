"""The Python SDK against the running suite: a flow end to end (create, activate, trigger, read the instance and
its steps), pagination, and every error the server sends arriving as its typed exception."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from kalcifer.v1 import flow_pb2, instance_pb2
from kalcifer_client import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    KalciferClient,
    NotFound,
    Unauthenticated,
    graph_to_dict,
)

from tests.support.eventually import eventually
from tests.support.processes import Suite
from tests.support.tenants import Tenant, new_tenant

pytestmark = pytest.mark.e2e

# signup -> plan is pro? -> true: wait a second, then end; false: end at once.
GRAPH: dict[str, Any] = {
    "nodes": [
        {"id": "signup", "type": "event_entry", "config": {"event_type": "signup"}},
        {"id": "is_pro", "type": "condition", "config": {"field": "plan", "operator": "eq", "value": "pro"}},
        {"id": "pause", "type": "wait", "config": {"duration": "1s"}},
        {"id": "done", "type": "exit", "config": {"reason": "welcomed"}},
        {"id": "skip", "type": "exit", "config": {}},
    ],
    "edges": [
        {"source": "signup", "target": "is_pro"},
        {"source": "is_pro", "target": "pause", "branch": "true"},
        {"source": "is_pro", "target": "skip", "branch": "false"},
        {"source": "pause", "target": "done"},
    ],
}
WAIT_AN_HOUR: dict[str, Any] = {
    "nodes": [
        {"id": "start", "type": "event_entry", "config": {"event_type": "go"}},
        {"id": "hold", "type": "wait", "config": {"duration": "1h"}},
    ],
    "edges": [{"source": "start", "target": "hold"}],
}


@pytest.fixture(scope="module")
def tenant(suite: Suite) -> Tenant:
    return new_tenant(suite, "sdk-end-to-end")


@pytest.fixture
async def client(suite: Suite, tenant: Tenant) -> AsyncIterator[KalciferClient]:
    async with KalciferClient(suite.address("api"), tenant.key) as opened:
        yield opened


async def test_a_flow_runs_end_to_end_through_the_sdk(client: KalciferClient) -> None:
    flow = await client.flows.create("welcome", description="pro sign-ups wait, then end", graph=GRAPH)
    assert flow.status == flow_pb2.FLOW_STATUS_DRAFT
    assert graph_to_dict((await client.flows.get_version(flow.id, 1)).graph) == GRAPH

    activated = await client.flows.activate(flow.id)
    assert activated.status == flow_pb2.FLOW_STATUS_ACTIVE
    instance_id = await client.triggers.trigger_flow(flow.id, "ada", {"plan": "pro"})

    instance = await eventually(
        lambda: client.instances.get(instance_id),
        until=lambda found: found.status == instance_pb2.INSTANCE_STATUS_COMPLETED,
        within=60,
        what="the instance to complete after its one-second wait",
    )
    assert (instance.flow_id, instance.participant_id, instance.version_number) == (flow.id, "ada", 1)
    steps = [step async for step in client.instances.steps(instance_id)]
    assert [step.node_id for step in steps] == ["signup", "is_pro", "pause", "done"]
    assert all(step.status == instance_pb2.STEP_STATUS_COMPLETED for step in steps)
    assert steps[1].branch == "true"
    waited = steps[2].end_time.ToDatetime() - steps[2].start_time.ToDatetime()
    assert waited >= timedelta(seconds=1)
    listed = [found.id async for found in client.instances.list(flow_id=flow.id)]
    assert listed == [instance_id]


async def test_list_iterators_walk_every_page(suite: Suite) -> None:
    tenant = new_tenant(suite, "sdk-pages")
    async with KalciferClient(suite.address("api"), tenant.key) as client:
        created = {(await client.flows.create(f"flow {n}", graph=GRAPH)).id for n in range(7)}
        pages = client.flows.list(page_size=3)
        listed = [flow.id async for flow in pages]
    assert len(listed) == 7
    assert set(listed) == created


async def test_a_bad_graph_is_invalid_argument_naming_each_problem(client: KalciferClient) -> None:
    broken = {
        "nodes": [*GRAPH["nodes"][:2], {"id": "pause", "type": "wait", "config": {"duration": "soon"}}],
        "edges": GRAPH["edges"][:3],
    }
    with pytest.raises(InvalidArgument) as raised:
        await client.flows.create("broken", graph=broken)
    fields = {violation.field for violation in raised.value.violations}
    assert fields == {"nodes[2].config.duration", "edges[2].target"}  # the edge to `skip`, which is not there
    answer = await client.flows.validate(broken)
    assert not answer.valid
    assert len(answer.violations) >= 2


async def test_missing_resources_are_not_found(client: KalciferClient) -> None:
    missing = str(uuid.uuid4())
    with pytest.raises(NotFound) as raised:
        await client.flows.get(missing)
    assert (raised.value.resource_type, raised.value.resource_name) == ("flow", missing)
    with pytest.raises(NotFound):
        await client.instances.get(missing)


async def test_states_that_refuse_a_call_say_why(client: KalciferClient) -> None:
    draft = await client.flows.create("draft only", graph=WAIT_AN_HOUR)
    with pytest.raises(FailedPrecondition) as raised:
        await client.triggers.trigger_flow(draft.id, "bob")
    assert raised.value.reason == "FLOW_NOT_ACTIVE"

    await client.flows.activate(draft.id)
    await client.triggers.trigger_flow(draft.id, "bob")
    with pytest.raises(AlreadyExists) as again:
        await client.triggers.trigger_flow(draft.id, "bob")
    assert again.value.reason == "ALREADY_IN_FLOW"


async def test_a_bad_stuck_threshold_is_a_field_violation(client: KalciferClient) -> None:
    with pytest.raises(InvalidArgument) as raised:
        [stuck async for stuck in client.instances.stuck(overdue=timedelta(seconds=-5))]
    assert [violation.field for violation in raised.value.violations] == ["overdue_threshold"]


async def test_a_wrong_key_is_unauthenticated_and_not_retried(suite: Suite) -> None:
    async with KalciferClient(suite.address("api"), "not-a-key") as client:
        with pytest.raises(Unauthenticated) as raised:
            [flow async for flow in client.flows.list()]
    assert not raised.value.retryable


async def test_the_admin_token_manages_tenants_and_keys(suite: Suite) -> None:
    async with KalciferClient(suite.address("api"), suite.admin_token) as admin:
        created = await admin.tenants.create("sdk-admin")
        assert created.raw_key
        second = await admin.tenants.create_key(created.tenant.id, "second")
        keys = [key.name async for key in admin.tenants.list_keys(created.tenant.id)]
        assert sorted(keys) == ["default", "second"]
        revoked = await admin.tenants.revoke_key(second.api_key.id)
        assert revoked.revoked
        tenants = [tenant.id async for tenant in admin.tenants.list(page_size=1)]
        assert created.tenant.id in tenants
    async with KalciferClient(suite.address("api"), created.raw_key) as client:
        assert [flow async for flow in client.flows.list()] == []
