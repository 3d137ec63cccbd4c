"""TriggerFlow and TriggerWebhook starting real instances through the engine (flows set up as rows): the
engine's refusals reach the caller, webhooks start every active listening flow once, and request_ids replay."""

from __future__ import annotations

import functools
import uuid
from typing import Any

import grpc
from kalcifer.v1 import instance_pb2, instance_pb2_grpc, trigger_pb2, trigger_pb2_grpc
from kalcifer_common.db.models import Flow, FlowVersion
from kalcifer_common.structs import dict_to_struct, struct_to_dict
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.support.rpc import field_violations, reason_of, rpc_error
from tests.support.tenants import Tenant

# Trigger nodes run without a behaviour of their own (reaching one is entering), so these flows complete as soon
# as they start: what is tested here is the API's side of a start, whatever the other node types do.
TWO_TRIGGERS: dict[str, Any] = {
    "nodes": [
        {"id": "entry", "type": "event_entry", "config": {"event_type": "signup"}},
        {"id": "hook", "type": "webhook_entry", "config": {"webhook_path": "signup"}},
    ],
    "edges": [],
}
WITH_AN_ACTION: dict[str, Any] = {
    "nodes": [
        {"id": "entry", "type": "event_entry", "config": {"event_type": "signup"}},
        {"id": "tag", "type": "add_tag", "config": {"tag": "new"}},
    ],
    "edges": [{"source": "entry", "target": "tag"}],
}


def _webhook(path: str) -> dict[str, Any]:
    return {"nodes": [{"id": "hook", "type": "webhook_entry", "config": {"webhook_path": path}}], "edges": []}


async def _flow(
    sessions: async_sessionmaker[AsyncSession],
    tenant: Tenant,
    graph: dict[str, Any],
    *,
    status: str = "active",
    re_entry: str = "never",
) -> str:
    """A flow as FlowService leaves it; `never` lets a participant in once, so a second start is refused."""
    flow_id = uuid.uuid4()
    async with sessions.begin() as session:
        session.add(
            Flow(
                id=flow_id,
                tenant_id=tenant.id,
                name="f",
                status=status,
                re_entry=re_entry,
                active_version_number=None if status == "draft" else 1,
            )
        )
        await session.flush()
        session.add(
            FlowVersion(
                tenant_id=tenant.id,
                flow_id=flow_id,
                version_number=1,
                status="draft" if status == "draft" else "active",
                graph=graph,
            )
        )
    return str(flow_id)


async def test_trigger_flow_starts_an_instance_with_the_callers_context(
    triggers: trigger_pb2_grpc.TriggerServiceStub,
    instances: instance_pb2_grpc.InstanceServiceStub,
    tenant_a: Tenant,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    flow_id = await _flow(sessions, tenant_a, TWO_TRIGGERS)
    started = triggers.TriggerFlow(
        trigger_pb2.TriggerFlowRequest(
            flow_id=flow_id,
            participant_id="ann",
            context=dict_to_struct({"plan": "pro", "seats": 3}),
            entry_node_id="hook",
        ),
        metadata=tenant_a.auth,
    )
    instance = instances.GetInstance(instance_pb2.GetInstanceRequest(id=started.instance_id), metadata=tenant_a.auth)
    assert instance.flow_id == flow_id
    assert instance.participant_id == "ann"
    assert instance.version_number == 1
    assert instance.status == instance_pb2.INSTANCE_STATUS_COMPLETED
    context = struct_to_dict(instance.context)
    assert (context["plan"], context["seats"]) == ("pro", 3)
    assert (context["_instance_id"], context["_participant_id"]) == (started.instance_id, "ann")
    steps = instances.ListExecutionSteps(
        instance_pb2.ListExecutionStepsRequest(instance_id=started.instance_id), metadata=tenant_a.auth
    ).steps
    # Only the entry node asked for ran, not every trigger node.
    assert [(s.node_id, s.status) for s in steps] == [("hook", instance_pb2.STEP_STATUS_COMPLETED)]

    everywhere = triggers.TriggerFlow(
        trigger_pb2.TriggerFlowRequest(flow_id=flow_id, participant_id="ann-2"), metadata=tenant_a.auth
    )
    steps = instances.ListExecutionSteps(
        instance_pb2.ListExecutionStepsRequest(instance_id=everywhere.instance_id), metadata=tenant_a.auth
    ).steps
    assert sorted(s.node_id for s in steps) == ["entry", "hook"]

    again = rpc_error(
        lambda: triggers.TriggerFlow(
            trigger_pb2.TriggerFlowRequest(flow_id=flow_id, participant_id="ann"), metadata=tenant_a.auth
        )
    )
    assert again.code() == grpc.StatusCode.ALREADY_EXISTS
    assert reason_of(again) == "ALREADY_IN_FLOW"


async def test_trigger_flow_request_id_replays_the_first_instance(
    triggers: trigger_pb2_grpc.TriggerServiceStub, tenant_a: Tenant, sessions: async_sessionmaker[AsyncSession]
) -> None:
    flow_id = await _flow(sessions, tenant_a, TWO_TRIGGERS)
    request = trigger_pb2.TriggerFlowRequest(flow_id=flow_id, participant_id="ben", request_id="start-ben")
    first = triggers.TriggerFlow(request, metadata=tenant_a.auth)
    assert triggers.TriggerFlow(request, metadata=tenant_a.auth).instance_id == first.instance_id


async def test_the_engines_refusals_reach_the_caller(
    triggers: trigger_pb2_grpc.TriggerServiceStub,
    tenant_a: Tenant,
    tenant_b: Tenant,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    active = await _flow(sessions, tenant_a, WITH_AN_ACTION)
    draft = await _flow(sessions, tenant_a, TWO_TRIGGERS, status="draft")
    paused = await _flow(sessions, tenant_a, TWO_TRIGGERS, status="paused")

    def start(tenant: Tenant, flow_id: str, entry_node_id: str = "") -> grpc.RpcError:
        request = trigger_pb2.TriggerFlowRequest(flow_id=flow_id, participant_id="cat", entry_node_id=entry_node_id)
        return rpc_error(functools.partial(triggers.TriggerFlow, request, metadata=tenant.auth))

    for flow_id in (draft, paused):
        error = start(tenant_a, flow_id)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert reason_of(error) == "FLOW_NOT_ACTIVE"
    assert start(tenant_a, str(uuid.uuid4())).code() == grpc.StatusCode.NOT_FOUND
    assert start(tenant_b, active).code() == grpc.StatusCode.NOT_FOUND
    for entry in ("tag", "no_such_node"):
        error = start(tenant_a, active, entry_node_id=entry)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert set(field_violations(error)) == {"entry_node_id"}


async def test_a_webhook_starts_every_active_flow_listening_on_its_path(
    triggers: trigger_pb2_grpc.TriggerServiceStub,
    instances: instance_pb2_grpc.InstanceServiceStub,
    tenant_a: Tenant,
    tenant_b: Tenant,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    path = f"orders/{uuid.uuid4().hex[:8]}/paid"
    listening = {await _flow(sessions, tenant_a, _webhook(path)) for _ in range(2)}
    await _flow(sessions, tenant_a, _webhook(path), status="paused")
    await _flow(sessions, tenant_a, _webhook(path + "/other"))
    await _flow(sessions, tenant_b, _webhook(path))

    request = trigger_pb2.TriggerWebhookRequest(
        webhook_path=path, participant_id="dan", payload=dict_to_struct({"order": 7}), request_id="hook-1"
    )
    started = triggers.TriggerWebhook(request, metadata=tenant_a.auth)
    assert len(started.instance_ids) == 2
    seen = [
        instances.GetInstance(instance_pb2.GetInstanceRequest(id=i), metadata=tenant_a.auth)
        for i in started.instance_ids
    ]
    assert {i.flow_id for i in seen} == listening
    for instance in seen:
        context = struct_to_dict(instance.context)
        assert context["order"] == 7
        assert context["event"] == {"order": 7}

    # A retry with the request_id gets the same instances; without it, the participant is in both flows already.
    assert list(triggers.TriggerWebhook(request, metadata=tenant_a.auth).instance_ids) == list(started.instance_ids)
    fresh = trigger_pb2.TriggerWebhookRequest(webhook_path=path, participant_id="dan")
    assert list(triggers.TriggerWebhook(fresh, metadata=tenant_a.auth).instance_ids) == []
    # Tenant B's only listening flow is its own.
    other = triggers.TriggerWebhook(fresh, metadata=tenant_b.auth)
    assert len(other.instance_ids) == 1
    assert other.instance_ids[0] not in started.instance_ids
