"""What the EventService tests share: building IngestEvent requests and counting the events stored."""

from __future__ import annotations

import uuid

from kalcifer.v1 import event_pb2
from kalcifer_common.db.models import Event
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker


async def stored_events(sessions: async_sessionmaker[AsyncSession], tenant_id: uuid.UUID, participant_id: str) -> int:
    """How many events of the participant the tenant has stored."""
    async with sessions() as session:
        count = await session.scalar(
            select(func.count()).where(Event.tenant_id == tenant_id, Event.participant_id == participant_id)
        )
    return int(count or 0)


def event_request(
    participant_id: str = "alice", event_type: str = "purchase", **fields: object
) -> event_pb2.IngestEventRequest:
    """An IngestEventRequest (other fields as keywords)."""
    return event_pb2.IngestEventRequest(participant_id=participant_id, event_type=event_type, **fields)  # type: ignore[arg-type]
