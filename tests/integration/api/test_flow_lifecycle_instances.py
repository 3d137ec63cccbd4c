"""PauseFlow, ResumeFlow and ArchiveFlow through the public API move a flow's real instances exactly as the
engine's Pause/Resume/ExitFlowInstances do: every change bumps `run_revision`, and archiving cancels the waits and
disarms their timers in the scheduler."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from kalcifer.v1 import flow_pb2, flow_pb2_grpc, trigger_pb2, trigger_pb2_grpc
from kalcifer_common.db.models import FlowInstance, Wait
from kalcifer_common.structs import dict_to_struct
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.support.eventually import eventually
from tests.support.processes import Suite
from tests.support.tenants import Tenant

TIMERS_KEY = "kalcifer:timers"  # the scheduler's armed timers (default REDIS_KEY_PREFIX)


@pytest.fixture
async def timers(suite: Suite) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(suite.redis_url)
    yield client
    await client.aclose()


def _node(node_id: str, node_type: str, **config: object) -> flow_pb2.GraphNode:
    return flow_pb2.GraphNode(id=node_id, type=node_type, config=dict_to_struct(config))


async def _state(sessions: async_sessionmaker[AsyncSession], instance_id: uuid.UUID) -> tuple[str, int, list[str]]:
    async with sessions() as session:
        row = await session.get_one(FlowInstance, instance_id, populate_existing=True)
        waits = (await session.scalars(select(Wait.status).where(Wait.instance_id == instance_id))).all()
    return row.status, row.run_revision, list(waits)


async def test_lifecycle_through_the_api_bumps_run_revision_and_disarms_timers(
    flows: flow_pb2_grpc.FlowServiceStub,
    triggers: trigger_pb2_grpc.TriggerServiceStub,
    tenant: Tenant,
    sessions: async_sessionmaker[AsyncSession],
    timers: aioredis.Redis,
) -> None:
    auth = tenant.auth
    graph = flow_pb2.FlowGraph(
        nodes=[_node("signup", "event_entry", event_type="signup"), _node("pause", "wait", duration="45s")],
        edges=[flow_pb2.GraphEdge(source="signup", target="pause")],
    )
    flow = flows.CreateFlow(flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name="carried"), graph=graph), metadata=auth)
    flows.ActivateFlow(flow_pb2.ActivateFlowRequest(id=flow.id), metadata=auth)
    started = triggers.TriggerFlow(trigger_pb2.TriggerFlowRequest(flow_id=flow.id, participant_id="ann"), metadata=auth)
    instance_id = uuid.UUID(started.instance_id)
    status, revision, waits = await _state(sessions, instance_id)
    assert (status, waits) == ("waiting", ["pending"])
    async with sessions() as session:
        wait_id = str(await session.scalar(select(Wait.id).where(Wait.instance_id == instance_id)))
    await eventually(lambda: timers.zscore(TIMERS_KEY, wait_id), until=lambda s: s is not None, what="timer armed")

    flows.PauseFlow(flow_pb2.PauseFlowRequest(id=flow.id), metadata=auth)
    assert await _state(sessions, instance_id) == ("paused", revision + 1, ["pending"])
    assert await timers.zscore(TIMERS_KEY, wait_id) is not None, "a paused instance keeps its timer (held on fire)"

    flows.ResumeFlow(flow_pb2.ResumeFlowRequest(id=flow.id), metadata=auth)
    assert await _state(sessions, instance_id) == ("waiting", revision + 2, ["pending"])

    flows.ArchiveFlow(flow_pb2.ArchiveFlowRequest(id=flow.id), metadata=auth)
    assert await _state(sessions, instance_id) == ("exited", revision + 3, ["cancelled"])
    await eventually(lambda: timers.zscore(TIMERS_KEY, wait_id), until=lambda s: s is None, what="timer disarmed")
