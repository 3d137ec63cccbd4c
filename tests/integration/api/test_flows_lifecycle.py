"""repo.flow_lifecycle steps on the real database, with graphs validated and instances carried by the real engine
process, as FlowService and JourneyService use them: the engine is asked before and after a transaction, never in it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kalcifer_api.engine_client import EngineClient
from kalcifer_api.repo import flow_lifecycle
from kalcifer_common.db.models import Flow, FlowInstance, FlowVersion, Tenant, Wait
from kalcifer_common.errors import EtagMismatch, FailedPrecondition, InvalidArgument, NotFound
from kalcifer_common.settings import ApiSettings
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.support.eventually import eventually
from tests.support.processes import Suite


@pytest.fixture
async def engine(suite: Suite) -> AsyncIterator[EngineClient]:
    client = EngineClient(
        ApiSettings(engine_addr=suite.address("engine"), kalcifer_internal_token=suite.internal_token)
    )
    yield client
    await client.close()


GRAPH: dict[str, Any] = {
    "nodes": [{"id": "start", "type": "event_entry", "config": {"event_type": "signup"}}],
    "edges": [],
}


BROKEN: dict[str, Any] = {
    "nodes": [{"id": "start", "type": "event_entry", "config": {"event_type": "signup"}}, {"id": "x", "type": "nope"}],
    "edges": [{"source": "start", "target": "x"}],
}


async def _flow(
    sessions: async_sessionmaker[AsyncSession],
    *,
    status: str = "draft",
    versions: tuple[str, ...] = ("draft",),
    graph: dict[str, Any] = GRAPH,
) -> tuple[uuid.UUID, uuid.UUID]:
    async with sessions.begin() as session:
        tenant = Tenant(id=uuid.uuid4(), name="lifecycle")
        session.add(tenant)
        await session.flush()
        flow = Flow(id=uuid.uuid4(), tenant_id=tenant.id, name="f", status=status)
        session.add(flow)
        await session.flush()
        for number, version_status in enumerate(versions, start=1):
            session.add(
                FlowVersion(
                    tenant_id=tenant.id, flow_id=flow.id, version_number=number, status=version_status, graph=graph
                )
            )
        return tenant.id, flow.id


async def _instance(
    sessions: async_sessionmaker[AsyncSession], tenant_id: uuid.UUID, flow_id: uuid.UUID, status: str
) -> uuid.UUID:
    async with sessions.begin() as session:
        instance = FlowInstance(
            id=uuid.uuid4(),
            tenant_id=tenant_id,
            flow_id=flow_id,
            version_number=1,
            participant_id=str(uuid.uuid4()),
            status=status,
        )
        session.add(instance)
        await session.flush()
        session.add(
            Wait(
                tenant_id=tenant_id,
                instance_id=instance.id,
                node_id="w",
                kind="event",
                event_type="x",
                participant_id=instance.participant_id,
            )
        )
        return instance.id


async def test_activate_publishes_the_newest_draft_the_engine_validated(
    sessions: async_sessionmaker[AsyncSession], engine: EngineClient
) -> None:
    tenant_id, flow_id = await _flow(sessions, versions=("draft", "draft"))
    async with sessions() as session:
        _, version = await flow_lifecycle.draft_to_activate(session, tenant_id, flow_id, lock=False)
    await engine.require_valid_graph(tenant_id, version.graph)
    async with sessions.begin() as session:
        await flow_lifecycle.activate_flow(session, tenant_id, flow_id, validated_version=version.version_number)
    async with sessions() as session:
        flow = await session.get_one(Flow, flow_id)
        rows = await session.execute(
            select(FlowVersion.version_number, FlowVersion.status).where(FlowVersion.flow_id == flow_id)
        )
        statuses = {number: status for number, status in rows}
    assert (flow.status, flow.active_version_number, statuses) == ("active", 2, {1: "draft", 2: "active"})


async def test_activate_refuses_a_draft_newer_than_the_one_validated(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    tenant_id, flow_id = await _flow(sessions, versions=("draft", "draft"))
    with pytest.raises(EtagMismatch):
        async with sessions.begin() as session:
            await flow_lifecycle.activate_flow(session, tenant_id, flow_id, validated_version=1)
    async with sessions() as session:
        assert (await session.get_one(Flow, flow_id)).status == "draft"


async def test_the_engine_names_every_violation_of_an_invalid_graph(engine: EngineClient) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await engine.require_valid_graph(uuid.uuid4(), BROKEN)
    assert [v.field for v in raised.value.violations] == ["nodes[1].type"]
    assert raised.value.violations[0].description == 'node "x" has unknown type "nope"'


@pytest.mark.parametrize(
    ("status", "versions", "reason"),
    [("draft", (), "NO_DRAFT_VERSION"), ("active", ("active",), "INVALID_TRANSITION")],
)
async def test_activate_preconditions(
    sessions: async_sessionmaker[AsyncSession], status: str, versions: tuple[str, ...], reason: str
) -> None:
    tenant_id, flow_id = await _flow(sessions, status=status, versions=versions)
    for lock in (False, True):
        with pytest.raises(FailedPrecondition) as raised:
            async with sessions.begin() as session:
                await flow_lifecycle.draft_to_activate(session, tenant_id, flow_id, lock=lock)
        assert raised.value.reason == reason


async def test_other_tenant_is_not_found(sessions: async_sessionmaker[AsyncSession]) -> None:
    _, flow_id = await _flow(sessions, status="active", versions=("active",))
    with pytest.raises(NotFound):
        async with sessions.begin() as session:
            await flow_lifecycle.pause_flow(session, uuid.uuid4(), flow_id)


async def test_pause_resume_archive_move_the_flow_and_the_engine_carries_its_instances(
    sessions: async_sessionmaker[AsyncSession], engine: EngineClient
) -> None:
    tenant_id, flow_id = await _flow(sessions, status="active", versions=("active",))
    waiting = await _instance(sessions, tenant_id, flow_id, "waiting")
    running = await _instance(sessions, tenant_id, flow_id, "running")

    async def state() -> tuple[str, str, str, list[str], list[int]]:
        async with sessions() as session:
            flow = await session.get_one(Flow, flow_id, populate_existing=True)
            a = await session.get_one(FlowInstance, waiting, populate_existing=True)
            b = await session.get_one(FlowInstance, running, populate_existing=True)
            waits = list(
                (await session.scalars(select(Wait.status).where(Wait.instance_id.in_((waiting, running))))).all()
            )
            return flow.status, a.status, b.status, sorted(waits), [a.run_revision, b.run_revision]

    async def move(step: Any, status: str) -> None:
        async with sessions.begin() as session:
            await step(session, tenant_id, flow_id)
        assert (await state())[0] == status, "the flow's status commits on its own"
        await engine.carry_to_instances(tenant_id, flow_id, status)

    async def reaches(expected: tuple[str, str, str, list[str], list[int]]) -> None:
        # The engine carries the status at once, or (a call cut off by a loaded machine, which is only logged) by
        # its recovery pass: either way the instances end up so.
        await eventually(state, until=lambda seen: seen == expected, within=30, what=f"instances carried to {expected}")

    await move(flow_lifecycle.pause_flow, "paused")
    await reaches(("paused", "paused", "running", ["pending", "pending"], [1, 0]))
    await engine.carry_to_instances(tenant_id, flow_id, "paused")
    assert (await state())[4] == [1, 0], "carrying the same status again changes nothing"
    await move(flow_lifecycle.resume_flow, "active")
    await reaches(("active", "waiting", "running", ["pending", "pending"], [2, 0]))
    await engine.carry_to_instances(tenant_id, flow_id, "paused")
    assert (await state())[1:] == ("waiting", "running", ["pending", "pending"], [2, 0]), "a late pause is ignored"
    await move(flow_lifecycle.archive_flow, "archived")
    await reaches(("archived", "exited", "exited", ["cancelled", "cancelled"], [3, 1]))
    async with sessions() as session:
        exited = await session.get_one(FlowInstance, waiting)
    assert exited.exit_reason == "flow_archived"
    assert exited.end_time is not None
