"""Shared set-up of the marketing-layer API tests (journeys, customers, segments) on the real `suite`; their stubs
and tenants are fixtures (conftest.py)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from kalcifer.v1 import customer_pb2_grpc, journey_pb2_grpc, segment_pb2_grpc
from kalcifer_common.db.models import Flow, FlowVersion, Template
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

# event_entry -> send_email -> exit: valid for the engine's ValidateGraph once the tenant has the "welcome" email
# template (`seed_flow` writes it).
VALID_GRAPH: dict[str, Any] = {
    "nodes": [
        {"id": "entry", "type": "event_entry", "config": {"event_type": "signup"}},
        {"id": "mail", "type": "send_email", "config": {"template_id": "welcome"}},
        {"id": "done", "type": "exit", "config": {}},
    ],
    "edges": [
        {"id": "entry-mail", "source": "entry", "target": "mail"},
        {"id": "mail-done", "source": "mail", "target": "done"},
    ],
}
# A send_email node with nothing before it and a dangling edge: the engine refuses it.
BROKEN_GRAPH: dict[str, Any] = {
    "nodes": [{"id": "mail", "type": "send_email", "config": {}}],
    "edges": [{"id": "mail-nowhere", "source": "mail", "target": "nowhere"}],
}


@dataclass(frozen=True)
class Stubs:
    """The stubs of the three marketing services on one channel."""

    journeys: journey_pb2_grpc.JourneyServiceStub
    customers: customer_pb2_grpc.CustomerServiceStub
    segments: segment_pb2_grpc.SegmentServiceStub


async def seed_flow(
    sessions: async_sessionmaker[AsyncSession],
    tenant_id: uuid.UUID,
    *,
    status: str = "draft",
    graph: dict[str, Any] | None = None,
    with_draft_version: bool = True,
) -> uuid.UUID:
    """A flow of the tenant written straight to the database (FlowService is another helper's), with a DRAFT
    version 1 holding `graph` (the valid one by default); an active or paused flow gets an ACTIVE version 1. The
    tenant gets the "welcome" email template VALID_GRAPH sends, unless it has one."""
    flow_id = uuid.uuid4()
    async with sessions.begin() as session:
        await session.execute(
            insert(Template)
            .values(tenant_id=tenant_id, id="welcome", channel="email", subject="Welcome", body="Hello")
            .on_conflict_do_nothing()
        )
        published = status in ("active", "paused", "archived")
        session.add(
            Flow(
                id=flow_id,
                tenant_id=tenant_id,
                name="journey flow",
                status=status,
                active_version_number=1 if published else None,
            )
        )
        await session.flush()
        if with_draft_version or published:
            session.add(
                FlowVersion(
                    tenant_id=tenant_id,
                    flow_id=flow_id,
                    version_number=1,
                    status="active" if published else "draft",
                    graph=VALID_GRAPH if graph is None else graph,
                )
            )
    return flow_id


async def flow_status(sessions: async_sessionmaker[AsyncSession], flow_id: uuid.UUID) -> str:
    """The flow's status as stored."""
    async with sessions() as session:
        flow = await session.get(Flow, flow_id)
        assert flow is not None
        return flow.status
