"""Scheduled entries on the `flow_triggers` queue: segment members enter the flows that start on their segment.

Every run (an arq cron job, unique across replicas) looks at each active flow whose active version has a
`segment_entry` trigger, evaluates the segment's rules (`kalcifer_common.segments`, the one implementation the
API and engine use too) over the tenant's customers, and starts an instance through `EngineService.StartInstance`
for each member who is not in the flow: not live in it, or, when the flow's re-entry policy is `never`, never
entered at all. The StartInstance request id names the flow, the node, the participant and how many instances
they had, so two replicas or a retried run start the same entry once. The engine's unique live-instance index
stays the final guard (ALREADY_EXISTS is taken as "already in").
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import grpc
from kalcifer.engine.v1 import engine_pb2, engine_pb2_grpc
from kalcifer_common import segments
from kalcifer_common.logging import get_logger
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

_log = get_logger(__name__)

_PAGE = 500
_MAX_STARTS_PER_RUN = 10_000

_ENTRY_FLOWS = text(
    """
    SELECT f.id AS flow_id, f.tenant_id, f.re_entry, v.graph
    FROM flows f JOIN flow_versions v ON v.flow_id = f.id AND v.version_number = f.active_version_number
    WHERE f.status = 'active' AND v.graph::text LIKE '%segment_entry%'
    """
)

_SEGMENT = text("SELECT match, rules FROM segments WHERE id = :id AND tenant_id = :tenant")

# Customers after `after` (keyset on id) with how many instances of this flow they ever had and whether one is live.
_CANDIDATES = text(
    """
    SELECT c.id, c.external_id, c.attributes, c.tags, c.preferences, c.timezone, c.email, c.phone,
        (SELECT count(*) FROM flow_instances i
         WHERE i.tenant_id = c.tenant_id AND i.flow_id = :flow AND i.participant_id = c.external_id) AS entered,
        EXISTS (SELECT 1 FROM flow_instances i
         WHERE i.tenant_id = c.tenant_id AND i.flow_id = :flow AND i.participant_id = c.external_id
           AND i.status IN ('running', 'waiting', 'paused')) AS live
    FROM customers c
    WHERE c.tenant_id = :tenant AND c.id > :after
    ORDER BY c.id
    LIMIT :page
    """
)


@dataclass(frozen=True, slots=True)
class _EntryPoint:
    tenant_id: uuid.UUID
    flow_id: uuid.UUID
    re_entry: str
    node_id: str
    segment_id: str


class ScheduledEntries:
    """Starts segment_entry flows for their segment's members who are not in yet."""

    def __init__(self, db: AsyncEngine, engine: engine_pb2_grpc.EngineServiceAsyncStub) -> None:
        self._db = db
        self._engine = engine

    async def run_once(self) -> int:
        """One pass over every segment_entry flow; returns how many instances were started."""
        started = 0
        for entry in await self._entry_points():
            if started >= _MAX_STARTS_PER_RUN:
                break
            started += await self._enter(entry, _MAX_STARTS_PER_RUN - started)
        if started:
            _log.info("segment entries started", started=started)
        return started

    async def _entry_points(self) -> list[_EntryPoint]:
        async with self._db.connect() as connection:
            rows = (await connection.execute(_ENTRY_FLOWS)).all()
        points = []
        for row in rows:
            for node in (row.graph or {}).get("nodes", []):
                config = node.get("config") or {}
                if node.get("type") == "segment_entry" and isinstance(config.get("segment_id"), str):
                    points.append(
                        _EntryPoint(row.tenant_id, row.flow_id, row.re_entry, str(node.get("id")), config["segment_id"])
                    )
        return points

    async def _enter(self, entry: _EntryPoint, budget: int) -> int:
        try:
            segment_id = uuid.UUID(entry.segment_id)
        except ValueError:
            return 0
        async with self._db.connect() as connection:
            segment = (await connection.execute(_SEGMENT, {"id": segment_id, "tenant": entry.tenant_id})).first()
        if segment is None:
            return 0
        started = 0
        after = uuid.UUID(int=0)
        while started < budget:
            async with self._db.connect() as connection:
                rows = (
                    await connection.execute(
                        _CANDIDATES,
                        {"tenant": entry.tenant_id, "flow": entry.flow_id, "after": after, "page": _PAGE},
                    )
                ).all()
            for row in rows:
                if row.live or (entry.re_entry == "never" and row.entered):
                    continue
                profile = segments.customer_profile(
                    external_id=row.external_id,
                    attributes=row.attributes,
                    tags=row.tags or (),
                    preferences=row.preferences,
                    timezone=row.timezone,
                    email=row.email,
                    phone=row.phone,
                )
                if not segments.matches(segment.rules or [], segment.match, profile):
                    continue
                outcome = await self._start(entry, row.external_id, int(row.entered))
                if outcome == "stop":
                    return started
                started += outcome == "started"
            if len(rows) < _PAGE:
                break
            after = rows[-1].id
        return started

    async def _start(self, entry: _EntryPoint, participant_id: str, entered: int) -> str:
        request = engine_pb2.StartInstanceRequest(
            tenant_id=str(entry.tenant_id),
            flow_id=str(entry.flow_id),
            participant_id=participant_id,
            entry_node_id=entry.node_id,
            request_id=f"segment_entry:{entry.flow_id}:{entry.node_id}:{participant_id}:{entered}",
        )
        try:
            await self._engine.StartInstance(request)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.ALREADY_EXISTS:
                return "already_in"
            _log.warning(
                "segment entry not started", flow_id=str(entry.flow_id), code=error.code().name, details=error.details()
            )
            return "stop"
        return "started"
