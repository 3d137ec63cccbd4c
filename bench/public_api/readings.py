"""What the benchmark reads off the running suite rather than from answers: the engine's resident memory, the
database's size, and when each timer was due and when its resume was recorded.

Timers are read after the run from the rows the engine wrote: `waits.fire_time` (when the timer was due) and the
`end_time` of the wait's own step, which the resume's run stamps (the engine's clock, inside the transaction that
commits the resumed step). So a lateness here runs from the due time to the resumed step's run, short of the commit
itself by the rest of that transaction (the server does not keep commit times unless `track_commit_timestamp` is
on; when it is, the commit time of the instance row's last write is reported too).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

_PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes(pid: int) -> int:
    """Resident memory (RSS) of a process and all its descendants, from /proc."""
    total = 0
    for member in _with_descendants(pid):
        try:
            fields = Path(f"/proc/{member}/statm").read_text().split()
        except FileNotFoundError:
            continue
        total += int(fields[1]) * _PAGE
    return total


def _with_descendants(pid: int) -> list[int]:
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                pending += [int(child) for child in (task / "children").read_text().split()]
            except FileNotFoundError:
                continue
    return found


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def table_bytes(database_url: str, tables: list[str] | None = None) -> dict[str, int]:
    """pg_total_relation_size (heap, indexes, TOAST) of every table of the public schema, or of `tables`."""
    connection = await asyncpg.connect(_dsn(database_url))
    try:
        rows = await connection.fetch(
            "SELECT relname, pg_total_relation_size(relid) AS size FROM pg_stat_user_tables "
            "WHERE schemaname = 'public' AND ($1::text[] IS NULL OR relname = ANY($1::text[]))",
            tables,
        )
    finally:
        await connection.close()
    return {row["relname"]: int(row["size"]) for row in rows}


async def instances_by_status(database_url: str, tenant_id: uuid.UUID) -> dict[str, int]:
    """The tenant's instances, counted by status."""
    connection = await asyncpg.connect(_dsn(database_url))
    try:
        rows = await connection.fetch(
            "SELECT status, count(*) AS n FROM flow_instances WHERE tenant_id = $1 GROUP BY status", tenant_id
        )
    finally:
        await connection.close()
    return {row["status"]: int(row["n"]) for row in rows}


async def pending_timers(database_url: str, tenant_id: uuid.UUID, flow_ids: list[uuid.UUID]) -> int:
    """Timer waits of these flows not fired yet."""
    connection = await asyncpg.connect(_dsn(database_url))
    try:
        count: int = await connection.fetchval(
            "SELECT count(*) FROM waits w JOIN flow_instances i ON i.id = w.instance_id "
            "WHERE w.tenant_id = $1 AND i.flow_id = ANY($2::uuid[]) AND w.kind = 'timer' AND w.status = 'pending'",
            tenant_id,
            flow_ids,
        )
    finally:
        await connection.close()
    return count


async def unrouted_events(database_url: str, tenant_id: uuid.UUID) -> int:
    """The tenant's stored events not routed yet (calls a client gave up on are still routed: stored is owed)."""
    connection = await asyncpg.connect(_dsn(database_url))
    try:
        count: int = await connection.fetchval(
            "SELECT count(*) FROM events WHERE tenant_id = $1 AND routed_time IS NULL", tenant_id
        )
    finally:
        await connection.close()
    return count


@dataclass
class TimerOutcomes:
    """Per timer: lateness (ms) from its due time to its resumed step; and the timers that do not count."""

    lateness_ms: list[float] = field(default_factory=list)
    # lateness measured to the commit of the instance's last write (only when track_commit_timestamp is on)
    commit_lateness_ms: list[float] = field(default_factory=list)
    # waits written after they were due: the start, not the timer, was late; left out of the lateness
    armed_late: int = 0
    # instances of the schedule without a timer wait, or whose wait never fired
    missing: int = 0
    unfired: int = 0


_TIMER_ROWS = """
    SELECT w.fire_time, w.create_time, w.status,
           extract(epoch FROM s.end_time - w.fire_time) * 1000 AS lateness_ms,
           CASE WHEN $3 THEN extract(epoch FROM pg_xact_commit_timestamp(i.xmin) - w.fire_time) * 1000 END
               AS commit_lateness_ms
    FROM flow_instances i
    JOIN waits w ON w.instance_id = i.id AND w.kind = 'timer'
    LEFT JOIN execution_steps s ON s.instance_id = i.id AND s.node_id = w.node_id AND s.status = 'completed'
    WHERE i.tenant_id = $1 AND i.flow_id = ANY($2::uuid[])
"""


async def timer_outcomes(
    database_url: str, tenant_id: uuid.UUID, flow_ids: list[uuid.UUID], expected: int
) -> TimerOutcomes:
    """Read every timer of these flows (`expected` of them were started)."""
    connection = await asyncpg.connect(_dsn(database_url))
    try:
        commit_times = await connection.fetchval("SELECT current_setting('track_commit_timestamp') = 'on'")
        rows = await connection.fetch(_TIMER_ROWS, tenant_id, flow_ids, commit_times)
    finally:
        await connection.close()
    outcomes = TimerOutcomes(missing=max(0, expected - len(rows)))
    for row in rows:
        if row["create_time"] > row["fire_time"]:
            outcomes.armed_late += 1
        elif row["status"] != "fired" or row["lateness_ms"] is None:
            outcomes.unfired += 1
        else:
            outcomes.lateness_ms.append(float(row["lateness_ms"]))
            if row["commit_lateness_ms"] is not None:
                outcomes.commit_lateness_ms.append(float(row["commit_lateness_ms"]))
    return outcomes


async def waiting_participants(database_url: str, tenant_id: uuid.UUID, flow_id: uuid.UUID, limit: int) -> list[str]:
    """Participants whose instance of the flow is waiting (at most `limit`)."""
    connection = await asyncpg.connect(_dsn(database_url))
    try:
        rows = await connection.fetch(
            "SELECT participant_id FROM flow_instances WHERE tenant_id = $1 AND flow_id = $2 AND status = 'waiting' "
            "ORDER BY enter_time LIMIT $3",
            tenant_id,
            flow_id,
            limit,
        )
    finally:
        await connection.close()
    return [row["participant_id"] for row in rows]
