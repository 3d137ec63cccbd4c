"""Ingested events in PostgreSQL, deduplicated by the tenant's request_id through the database's unique index.

Deduplication is `INSERT .. ON CONFLICT (tenant_id, request_id) DO NOTHING` rather than a read-then-write, so two
racing calls with the same request_id store one row: the second blocks on the index until the first commits and
then reads the first one's row.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

from kalcifer_common.db.models import Event
from kalcifer_common.db.session import dump_json
from kalcifer_common.errors import FieldViolation, InvalidArgument
from sqlalchemy import Table, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from kalcifer_api.domain.events import NewEvent, StoredEvent, same_event
from kalcifer_api.repo.scoped import TenantScopedRepository

_events = cast(Table, Event.__table__)
_INSERT = (
    insert(_events)
    .on_conflict_do_nothing(index_elements=[_events.c.tenant_id, _events.c.request_id])
    .returning(_events.c.id)
)
# One event (IngestEvent, the hot path): the same insert as one autocommit statement sent straight to the driver.
# Through a session it cost the API as much CPU again as the driver's own work (py-spy, 2026-11-30).
_INSERT_ONE = """
    INSERT INTO events (id, tenant_id, participant_id, event_type, data, occurred_at, request_id)
    VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7)
    ON CONFLICT (tenant_id, request_id) DO NOTHING
    RETURNING id
"""


class EventRepository(TenantScopedRepository):
    """The calling tenant's events."""

    async def _inserted_alone(self, row: dict[str, Any]) -> bool:
        """Insert one event in a statement of its own (it commits alone); False when its request_id is stored
        already (nothing written)."""
        bind: AsyncEngine = self._sessions.kw["bind"]
        async with bind.connect() as conn:
            raw = await conn.get_raw_connection()
            driver: Any = raw.driver_connection
            try:
                inserted = await driver.fetchval(
                    _INSERT_ONE,
                    row["id"],
                    row["tenant_id"],
                    row["participant_id"],
                    row["event_type"],
                    dump_json(row["data"]),
                    row["occurred_at"],
                    row["request_id"],
                )
            except BaseException:
                # SQLAlchemy did not see the statement fail: a connection the driver found broken (or a call
                # cancelled mid-statement) must not go back into the pool.
                await conn.invalidate()
                raise
        return inserted is not None

    async def store(self, events: Sequence[NewEvent], *, field_prefix: str = "") -> list[StoredEvent]:
        """Store a batch in one transaction and return, per event and in order, the row it maps to.

        An event whose request_id is already stored (by an earlier call or earlier in this batch) maps to that row
        and is marked deduplicated; reusing a request_id for a different event is INVALID_ARGUMENT (nothing is
        stored then). `field_prefix` is formatted with the event's `index` to name it in violations
        ("events[{index}].").
        """
        tenant_id = self.tenant_id
        now = datetime.now(UTC)
        rows: list[dict[str, Any]] = [
            {
                "id": uuid.uuid4(),
                "tenant_id": tenant_id,
                "participant_id": event.participant_id,
                "event_type": event.event_type,
                "data": event.data,
                "occurred_at": event.occurred_at or now,
                "request_id": event.request_id,
            }
            for event in events
        ]
        if len(rows) == 1 and await self._inserted_alone(rows[0]):
            (event,), (row,) = events, rows
            return [_stored_new(event, row)]
        # A batch is stored whole or not at all; a single event whose request_id was stored before is read back.
        async with self._sessions.begin() as session:
            inserted = set(
                (
                    # Parameters apart from the statement: its compiled form is cached (a `.values(rows)` would be
                    # compiled again on every call); several rows go out as one multi-row INSERT all the same.
                    await session.execute(_INSERT, rows)
                )
                .scalars()
                .all()
            )
            by_request_id: dict[str, StoredEvent] = {}
            missing = {str(row["request_id"]) for row in rows if row["id"] not in inserted}
            if missing:
                existing = await session.execute(
                    select(
                        _events.c.id,
                        _events.c.participant_id,
                        _events.c.event_type,
                        _events.c.data,
                        _events.c.occurred_at,
                        _events.c.request_id,
                        _events.c.routed_time,
                    ).where(_events.c.tenant_id == tenant_id, _events.c.request_id.in_(missing))
                )
                for found in existing:
                    by_request_id[found.request_id] = StoredEvent(
                        id=found.id,
                        participant_id=found.participant_id,
                        event_type=found.event_type,
                        data=found.data,
                        occurred_at=found.occurred_at,
                        deduplicated=True,
                        routed=found.routed_time is not None,
                    )
            results: list[StoredEvent] = []
            violations: list[FieldViolation] = []
            for index, (event, row) in enumerate(zip(events, rows, strict=True)):
                if row["id"] in inserted:
                    results.append(_stored_new(event, row))
                    continue
                stored = by_request_id[str(event.request_id)]
                if not same_event(stored, event):
                    prefix = field_prefix.format(index=index)
                    violations.append(FieldViolation(f"{prefix}request_id", "was already used for a different event"))
                results.append(stored)
            if violations:
                # Raising inside the transaction rolls the whole batch back: nothing of a refused batch is stored.
                raise InvalidArgument(violations)
            return results


def _stored_new(event: NewEvent, row: dict[str, Any]) -> StoredEvent:
    """The event as stored now (not deduplicated, not routed yet)."""
    return StoredEvent(
        id=row["id"],
        participant_id=event.participant_id,
        event_type=event.event_type,
        data=event.data,
        occurred_at=row["occurred_at"],
        deduplicated=False,
        routed=False,
    )
