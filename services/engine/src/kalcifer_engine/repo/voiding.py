"""Voiding what ended instances still wait on: their pending waits become CANCELLED and their WAITING steps
CANCELLED with `end_time` (a finished instance never shows a waiting step), in one round trip on the driver."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from kalcifer_common.statuses import StepStatus, WaitStatus
from sqlalchemy.ext.asyncio import AsyncConnection

from kalcifer_engine.domain.tallies import StepFacts
from kalcifer_engine.repo.connection import driver

_VOID = f"""
    WITH voided_waits AS (
        UPDATE waits SET status = '{WaitStatus.CANCELLED}', resolved_time = $2
        WHERE instance_id = ANY($1::uuid[]) AND status = '{WaitStatus.PENDING}'
        RETURNING id, fire_time
    ), voided_steps AS (
        UPDATE execution_steps SET status = '{StepStatus.CANCELLED}', end_time = $2
        WHERE instance_id = ANY($1::uuid[]) AND status = '{StepStatus.WAITING}'
        RETURNING node_id, node_type, version_number, start_time
    )
    SELECT id AS wait_id, fire_time, NULL::text AS node_id, NULL::text AS node_type, NULL::int AS version_number,
           NULL::timestamptz AS start_time
    FROM voided_waits WHERE fire_time IS NOT NULL
    UNION ALL
    SELECT NULL, NULL, node_id, node_type, version_number, start_time FROM voided_steps
"""  # noqa: S608 - the f-string splices constant statuses


@dataclass(frozen=True)
class Voided:
    """What voiding ended: the timers to disarm (wait id, fire time) and the steps as they are now (for the
    counters; all were WAITING)."""

    timers: list[tuple[uuid.UUID, datetime]]
    steps: list[StepFacts]


async def void_pending(conn: AsyncConnection, instance_ids: Sequence[uuid.UUID], now: datetime) -> Voided:
    """Cancel the pending waits and the waiting steps of these (ended) instances."""
    if not instance_ids:
        return Voided([], [])
    rows = await (await driver(conn)).fetch(_VOID, list(instance_ids), now)
    return Voided(
        timers=[(row["wait_id"], row["fire_time"]) for row in rows if row["wait_id"] is not None],
        steps=[
            StepFacts(
                row["node_id"],
                row["node_type"],
                row["version_number"],
                row["start_time"],
                StepStatus.CANCELLED,
                None,
                now,
            )
            for row in rows
            if row["wait_id"] is None
        ],
    )
