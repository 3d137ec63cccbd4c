"""`segment_entry`: a participant enters a flow when they become a member of its segment, found from the customers
that changed since the last run, not by evaluating every customer every minute.

For each `segment_entry` node of each active flow's active version (an *entry point*) the scheduler keeps, in its
own tables (migration 0010):
- `segment_entry_cursors`: the segment (and its revision) the members were evaluated against, and how far the
  tenant's customers have been read, in (update_time, id) order;
- `segment_entry_members`: the customers who were members when last read, with a `join_id` per join.

A run reads, through `ix_customers_tenant_id_update_time_id`, only the customers after that position, evaluates
each with `kalcifer_common.segments` (the one implementation the API and the engine use too), and reconciles:
- not a member -> member: a membership row is inserted (a new `join_id`) and the participant enters;
- member -> not a member: the row is deleted, so joining again later is a new join and enters again;
- member -> member, or never a member: nothing. Staying a member never starts the flow again, and customers that
  did not change are not read at all.

Evaluating everyone. With no cursor (the flow became active, or its version has a new `segment_entry` node), or
when the node now names another segment or the segment's definition changed (its revision moved), the position
goes back to the beginning and the next runs read every customer once, in the same order and pages: whoever is a
member then and has no membership row enters (a flow's activation enters the segment's current members once; a
definition change enters those it newly includes), rows of customers who are no longer members are deleted. A flow
that is paused keeps its cursor: when it is active again, the customers who changed meanwhile are read then.

Late commits. `customers.update_time` is when the writing transaction started (the API's `now()`, the engine's
run clock), not when it committed, so a row can appear behind the position already read. The stored position
therefore never passes `now - overlap` (`SEGMENT_ENTRY_OVERLAP_SECONDS`): customers changed within the overlap are
read again by the next runs, which the membership rows make harmless, and a transaction that writes a customer
must commit within the overlap to be seen. A customer deleted by the API takes their membership rows with them
(ON DELETE CASCADE).

Entering. A join's StartInstance is owed until the engine answers it (`start_pending`), so a run cut off or
refused (engine unreachable, flow paused in between) leaves it for the next run, which asks first. The request id
is `segment_entry:<flow>:<join_id>`: a retried join replays the engine's answer, a new join is a new entry. The
re-entry policy decides: `after_exit` (the engine answers ALREADY_EXISTS while a live instance is there, and that
join is spent), `always` (another concurrent instance), `never` (the entry ledger `flow_entries`, never pruned,
is checked here first and by the engine again).

Bounds and concurrency. A run reads at most `max_customers_read` customers and starts at most its start budget,
in pages; the next run goes on from where it stopped. One run follows segments at a time across replicas (a
transaction-scoped advisory lock, whose transaction stays open and idle for the run; a run that finds it taken
skips), and every write is idempotent anyway.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from kalcifer.engine.v1 import engine_pb2_grpc
from kalcifer_common import segments
from kalcifer_common.logging import get_logger
from sqlalchemy import Row, Text, Uuid, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncEngine

from kalcifer_scheduler.entries.engine_starts import StartOutcome, start_instance

_log = get_logger(__name__)

_PAGE = 500
# pg_try_advisory_xact_lock key of a run following segments ("kalcsegm" in ASCII).
SEGMENT_ENTRY_LOCK_KEY = int.from_bytes(b"kalcsegm", "big")
# The largest uuid: a position at (t, _LAST_ID) has read every customer changed at or before t.
_LAST_ID = uuid.UUID(int=(1 << 128) - 1)

_LOCK = text("SELECT pg_try_advisory_xact_lock(:key)")

_ENTRY_FLOWS = text(
    """
    SELECT f.id AS flow_id, f.tenant_id, f.re_entry, v.graph
    FROM flows f JOIN flow_versions v ON v.flow_id = f.id AND v.version_number = f.active_version_number
    WHERE f.status = 'active' AND v.graph::text LIKE '%segment_entry%'
    ORDER BY f.id
    """
)

# Cursors (and with them the members) of active flows whose active version no longer has that segment_entry node.
_FORGET_REMOVED_NODES = text(
    """
    DELETE FROM segment_entry_cursors c USING flows f
    WHERE f.id = c.flow_id AND f.status = 'active' AND NOT EXISTS (
        SELECT 1 FROM flow_versions v, jsonb_array_elements(v.graph -> 'nodes') AS n(node)
        WHERE v.flow_id = f.id AND v.version_number = f.active_version_number
          AND n.node ->> 'type' = 'segment_entry' AND n.node ->> 'id' = c.node_id)
    """
)

# The segment, the entry point's cursor if any, and the database's clock (what the overlap is measured against).
_SEGMENT_AND_CURSOR = text(
    """
    SELECT s.match, s.rules, s.revision, c.segment_id AS cursor_segment_id, c.segment_revision AS cursor_revision,
        c.read_update_time, c.read_customer_id, clock_timestamp() AS now
    FROM segments s LEFT JOIN segment_entry_cursors c ON c.flow_id = :flow AND c.node_id = :node
    WHERE s.id = :segment AND s.tenant_id = :tenant
    """
)

# Evaluate everyone again: (re)start the cursor at the beginning, against this segment and revision.
_RESTART = text(
    """
    INSERT INTO segment_entry_cursors (flow_id, node_id, tenant_id, segment_id, segment_revision)
    VALUES (:flow, :node, :tenant, :segment, :revision)
    ON CONFLICT (flow_id, node_id) DO UPDATE SET
        tenant_id = EXCLUDED.tenant_id, segment_id = EXCLUDED.segment_id, segment_revision = EXCLUDED.segment_revision,
        read_update_time = NULL, read_customer_id = NULL, update_time = now()
    """
)

# The next page of the tenant's customers after a position, each with whether they were a member when last read
# (public for the test that shows what it examines).
CHANGED_CUSTOMERS = text(
    """
    SELECT c.id, c.external_id, c.attributes, c.tags, c.preferences, c.timezone, c.email, c.phone, c.update_time,
        EXISTS (SELECT 1 FROM segment_entry_members m
                WHERE m.flow_id = :flow AND m.node_id = :node AND m.customer_id = c.id) AS was_member
    FROM customers c
    WHERE c.tenant_id = :tenant AND (c.update_time, c.id) > (:after_time, :after_id)
    ORDER BY c.update_time, c.id
    LIMIT :page
    """
)

# Customers have no update_time before this: the position "nothing read yet" in queries.
_BEGINNING = datetime.fromisoformat("0001-01-01T00:00:00+00:00")

_JOIN = text(
    """
    INSERT INTO segment_entry_members (flow_id, node_id, customer_id, tenant_id, participant_id)
    SELECT CAST(:flow AS uuid), CAST(:node AS text), j.customer_id, CAST(:tenant AS uuid), j.participant_id
    FROM unnest(:customers, :participants) AS j(customer_id, participant_id)
    ON CONFLICT (flow_id, node_id, customer_id) DO NOTHING
    """
).bindparams(bindparam("customers", type_=ARRAY(Uuid())), bindparam("participants", type_=ARRAY(Text())))

_LEAVE = text(
    "DELETE FROM segment_entry_members WHERE flow_id = :flow AND node_id = :node AND customer_id = ANY(:customers)"
).bindparams(bindparam("customers", type_=ARRAY(Uuid())))

# Only forward: the position read up to never moves back (a restart, above, is the one way back).
_ADVANCE = text(
    """
    UPDATE segment_entry_cursors SET read_update_time = :read_time, read_customer_id = :read_id, update_time = now()
    WHERE flow_id = :flow AND node_id = :node
      AND (read_update_time IS NULL OR (read_update_time, read_customer_id) < (:read_time, :read_id))
    """
)

# Joins whose StartInstance is still owed, oldest first, with whether the participant ever entered the flow.
_PENDING_JOINS = text(
    """
    SELECT m.customer_id, m.participant_id, m.join_id,
        EXISTS (SELECT 1 FROM flow_entries e WHERE e.flow_id = m.flow_id AND e.participant_id = m.participant_id)
            AS ever_entered
    FROM segment_entry_members m
    WHERE m.flow_id = :flow AND m.node_id = :node AND m.start_pending
    ORDER BY m.join_time, m.customer_id
    LIMIT :limit
    """
)

_ANSWERED = text(
    """
    UPDATE segment_entry_members m SET start_pending = false
    FROM unnest(:customers, :joins) AS a(customer_id, join_id)
    WHERE m.flow_id = :flow AND m.node_id = :node AND m.customer_id = a.customer_id AND m.join_id = a.join_id
    """
).bindparams(bindparam("customers", type_=ARRAY(Uuid())), bindparam("joins", type_=ARRAY(Uuid())))


@dataclass(frozen=True, slots=True)
class _EntryPoint:
    """One `segment_entry` node of an active flow's active version: members of `segment_id` enter there."""

    tenant_id: uuid.UUID
    flow_id: uuid.UUID
    node_id: str
    segment_id: uuid.UUID
    re_entry: str

    @property
    def keys(self) -> dict[str, Any]:
        """The statement parameters naming this entry point."""
        return {"flow": self.flow_id, "node": self.node_id}


@dataclass(frozen=True, slots=True)
class FollowedSegments:
    """What one run of `SegmentEntries` did."""

    started: int
    customers_read: int


@dataclass
class _Budget:
    """What is left of a run's bounds."""

    starts: int
    reads: int


class SegmentEntries:
    """Follows the segment of every `segment_entry` node and enters the customers who join it."""

    def __init__(
        self,
        db: AsyncEngine,
        engine: engine_pb2_grpc.EngineServiceAsyncStub,
        *,
        overlap: timedelta,
        max_customers_read: int,
        lock_db: AsyncEngine | None = None,
    ) -> None:
        self._db = db
        # The run-long lock holds a transaction (and its connection) open for the whole run: on a pool of its own,
        # so the run's work (and the sweeps) never wait behind it; with one pool of one connection, the run would
        # wait for itself until the pool timed out.
        self._lock_db = lock_db or db
        self._engine = engine
        self._overlap = overlap
        self._max_customers_read = max_customers_read

    async def run_once(self, *, max_starts: int) -> FollowedSegments:
        """One pass over every entry point (none if another run holds the lock), within `max_starts` starts and
        `max_customers_read` customers read."""
        budget = _Budget(starts=max_starts, reads=self._max_customers_read)
        async with self._lock_db.begin() as lock:
            if not (await lock.execute(_LOCK, {"key": SEGMENT_ENTRY_LOCK_KEY})).scalar_one():
                _log.info("segment entries skipped: another run holds the lock")
                return FollowedSegments(0, 0)
            points = await self._entry_points()
            # Fair shares first: each tenant gets an equal part of the run's bounds, split among its entry points,
            # so a tenant with a huge segment (or many flows) cannot starve the others; whatever the shares left
            # then goes, in order, to whoever still has work.
            tenants: dict[uuid.UUID, list[_EntryPoint]] = {}
            for point in points:
                tenants.setdefault(point.tenant_id, []).append(point)
            unfinished: list[_EntryPoint] = []
            for own in tenants.values():
                for point in own:
                    parts = len(tenants) * len(own)
                    share = _Budget(
                        starts=max(1, max_starts // parts), reads=max(_PAGE, self._max_customers_read // parts)
                    )
                    if not await self._follow_within(point, budget, share):
                        unfinished.append(point)
            for point in unfinished:
                if budget.starts <= 0 or budget.reads <= 0:
                    break
                await self._follow(point, budget)
        return FollowedSegments(max_starts - budget.starts, self._max_customers_read - budget.reads)

    async def _follow_within(self, point: _EntryPoint, budget: _Budget, share: _Budget) -> bool:
        """`_follow` bounded by `share` as well as by what is left of the run's `budget`; False when the share ran
        out first (the point may have more to do)."""
        part = _Budget(starts=min(share.starts, budget.starts), reads=min(share.reads, budget.reads))
        if part.starts <= 0 or part.reads <= 0:
            return False
        before = _Budget(part.starts, part.reads)
        await self._follow(point, part)
        budget.starts -= before.starts - part.starts
        budget.reads -= before.reads - part.reads
        return part.starts > 0 and part.reads > 0

    async def _entry_points(self) -> list[_EntryPoint]:
        async with self._db.begin() as connection:
            await connection.execute(_FORGET_REMOVED_NODES)
            rows = (await connection.execute(_ENTRY_FLOWS)).all()
        points = []
        for row in rows:
            for node in (row.graph or {}).get("nodes", []):
                config = node.get("config") or {}
                if node.get("type") != "segment_entry":
                    continue
                try:
                    segment_id = uuid.UUID(str(config.get("segment_id")))
                except ValueError:
                    continue  # no segment can have that id
                points.append(_EntryPoint(row.tenant_id, row.flow_id, str(node.get("id")), segment_id, row.re_entry))
        return points

    async def _follow(self, point: _EntryPoint, budget: _Budget) -> None:
        """Enter the joins still owed, then read the customers changed since the cursor's position, page by page,
        entering whoever joined; stops at the budget or when the engine refuses."""
        if not await self._start_pending(point, budget):
            return
        async with self._db.connect() as connection:
            found = (
                await connection.execute(
                    _SEGMENT_AND_CURSOR, {**point.keys, "segment": point.segment_id, "tenant": point.tenant_id}
                )
            ).first()
        if found is None:
            return  # the segment is gone: the members stay as they were until it names one again
        position: tuple[datetime, uuid.UUID] | None = None
        if found.cursor_segment_id is None or (found.cursor_segment_id, found.cursor_revision) != (
            point.segment_id,
            found.revision,
        ):
            async with self._db.begin() as connection:
                await connection.execute(
                    _RESTART,
                    {**point.keys, "tenant": point.tenant_id, "segment": point.segment_id, "revision": found.revision},
                )
        elif found.read_update_time is not None:
            position = (found.read_update_time, found.read_customer_id)
        # Everything at or before this was committed when read (see "Late commits").
        settled = (found.now - self._overlap, _LAST_ID)
        while budget.reads > 0 and budget.starts > 0:
            after = position or (_BEGINNING, uuid.UUID(int=0))
            page = min(_PAGE, budget.reads)
            async with self._db.connect() as connection:
                rows = (
                    await connection.execute(
                        CHANGED_CUSTOMERS,
                        {
                            **point.keys,
                            "tenant": point.tenant_id,
                            "after_time": after[0],
                            "after_id": after[1],
                            "page": page,
                        },
                    )
                ).all()
            budget.reads -= len(rows)
            complete = len(rows) < page
            if rows:
                position = (rows[-1].update_time, rows[-1].id)
            # A short page has read everything committed so far: the cursor may move to `settled`. After a full
            # page it moves to the last customer read, never past `settled` (those after it are read again).
            safe = settled if complete or position is None else min(position, settled)
            joined = await self._reconcile(point, found.match, found.rules or [], rows, safe)
            if joined and not await self._start_pending(point, budget):
                return
            if complete:
                return

    async def _reconcile(
        self,
        point: _EntryPoint,
        match: str,
        rules: list[Any],
        rows: Sequence[Row[Any]],
        safe: tuple[datetime, uuid.UUID],
    ) -> bool:
        """In one transaction: insert the rows of customers who joined, delete those of customers who left, and
        move the cursor to `safe`; returns whether anyone joined."""
        joined: list[Row[Any]] = []
        left: list[uuid.UUID] = []
        for row in rows:
            member = segments.matches(rules, match, _profile(row))
            if member and not row.was_member:
                joined.append(row)
            elif row.was_member and not member:
                left.append(row.id)
        async with self._db.begin() as connection:
            if joined:
                await connection.execute(
                    _JOIN,
                    {
                        **point.keys,
                        "tenant": point.tenant_id,
                        "customers": [row.id for row in joined],
                        "participants": [row.external_id for row in joined],
                    },
                )
            if left:
                await connection.execute(_LEAVE, {**point.keys, "customers": left})
            await connection.execute(_ADVANCE, {**point.keys, "read_time": safe[0], "read_id": safe[1]})
        return bool(joined)

    async def _start_pending(self, point: _EntryPoint, budget: _Budget) -> bool:
        """Ask the engine to start every join still owed, oldest first, within the budget; False when it refused
        (the rest stay owed for the next run)."""
        while budget.starts > 0:
            async with self._db.connect() as connection:
                pending = (
                    await connection.execute(_PENDING_JOINS, {**point.keys, "limit": min(_PAGE, budget.starts)})
                ).all()
            if not pending:
                return True
            answered, refused = await self._enter(point, pending, budget)
            if answered:
                await self._mark_answered(point, answered)
            if refused:
                return False
        return True

    async def _enter(
        self, point: _EntryPoint, pending: Sequence[Row[Any]], budget: _Budget
    ) -> tuple[list[Row[Any]], bool]:
        """StartInstance for each pending join; returns the joins answered and whether the engine refused one."""
        answered: list[Row[Any]] = []
        for join in pending:
            if not (point.re_entry == "never" and join.ever_entered):
                outcome = await start_instance(
                    self._engine,
                    tenant_id=point.tenant_id,
                    flow_id=point.flow_id,
                    participant_id=join.participant_id,
                    entry_node_id=point.node_id,
                    request_id=f"segment_entry:{point.flow_id}:{join.join_id}",
                )
                if outcome == StartOutcome.FAILED:
                    return answered, True
                if outcome == StartOutcome.STARTED:
                    budget.starts -= 1
            answered.append(join)
        return answered, False

    async def _mark_answered(self, point: _EntryPoint, joins: Sequence[Row[Any]]) -> None:
        async with self._db.begin() as connection:
            await connection.execute(
                _ANSWERED,
                {
                    **point.keys,
                    "customers": [join.customer_id for join in joins],
                    "joins": [join.join_id for join in joins],
                },
            )


def _profile(row: Row[Any]) -> dict[str, Any]:
    return segments.customer_profile(
        external_id=row.external_id,
        attributes=row.attributes,
        tags=row.tags or (),
        preferences=row.preferences,
        timezone=row.timezone,
        email=row.email,
        phone=row.phone,
    )
