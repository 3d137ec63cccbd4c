"""Execution steps (`execution_steps`): the journal of what each run did, written with the run's outcome.

`write_run` is the one statement that ends every run: it inserts the run's steps (in the order they ran, so `seq`
follows it), finishes the steps of the waits this run resolved (one row per visit of a node, SPEC 6.3: a wait's
step is WAITING while it waits and is completed in place), inserts its new `waits` rows and updates the
`flow_instances` row, in one round trip on the driver. It answers what the analytics counters need and only the
database knows: the resolved steps as they were, and which of the run's nodes the instance had visited before.
The steps of waits cancelled because their instance ended are ended by `voiding.void_pending`, so a finished
instance never shows a waiting step.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from kalcifer_common.db.models import ExecutionStep
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from kalcifer_engine.repo.connection import driver, json_text

_STEP_COLUMNS = (
    "id uuid, tenant_id uuid, instance_id uuid, node_id text, node_type text, version_number int, status text, "
    "input jsonb, output jsonb, error text, attempt int, start_time timestamptz, end_time timestamptz"
)
# What a resolved wait's step gets: its outcome, in place.
_STEP_UPDATE_COLUMNS = "id uuid, status text, input jsonb, output jsonb, error text, end_time timestamptz"
_WAIT_ROW_COLUMNS = (
    "id uuid, tenant_id uuid, instance_id uuid, node_id text, kind text, status text, fire_time timestamptz, "
    "event_type text, event_filter text, participant_id text, branch_path jsonb, create_time timestamptz"
)


def _names(columns: str) -> str:
    return ", ".join(column.split()[0] for column in columns.split(", "))


# One statement, one round trip: the run's steps (in the order they ran, so `seq` follows it), its new waits and
# the instance row. Data-modifying CTEs always run, whether or not the outer statement reads them; every part of
# the statement sees the rows as they were before it, so `resolved` and `visited` read the steps before this write.
_WRITE_RUN = f"""
    WITH finished AS (
        SELECT * FROM jsonb_to_recordset($10::jsonb) AS u({_STEP_UPDATE_COLUMNS})
    ), resolved AS (
        SELECT s.id, s.node_id, s.node_type, s.version_number, s.start_time, s.status
        FROM execution_steps s JOIN finished u ON u.id = s.id
        WHERE s.instance_id = $9
    ), visited AS (
        SELECT DISTINCT node_id FROM execution_steps WHERE instance_id = $9 AND node_id = ANY($11::text[])
    ), new_steps AS (
        INSERT INTO execution_steps ({_names(_STEP_COLUMNS)})
        SELECT {_names(_STEP_COLUMNS)}
        FROM jsonb_to_recordset($1::jsonb) AS s({_STEP_COLUMNS}, ord int)
        ORDER BY ord
        RETURNING 1
    ), finished_steps AS (
        UPDATE execution_steps s
        SET status = u.status, input = u.input, output = u.output, error = u.error, end_time = u.end_time
        FROM finished u
        WHERE s.id = u.id AND s.instance_id = $9
        RETURNING 1
    ), new_waits AS (
        INSERT INTO waits ({_names(_WAIT_ROW_COLUMNS)})
        SELECT {_names(_WAIT_ROW_COLUMNS)} FROM jsonb_to_recordset($2::jsonb) AS w({_WAIT_ROW_COLUMNS})
        RETURNING 1
    ), instance AS (
        UPDATE flow_instances
        SET status = $3, current_nodes = $4::jsonb, context = $5::jsonb, exit_reason = $6, end_time = $7,
            run_revision = run_revision + 1, lease_until = NULL, update_time = $8
        WHERE id = $9
        RETURNING 1
    )
    SELECT id, node_id, node_type, version_number, start_time, status FROM resolved
    UNION ALL
    SELECT NULL, node_id, NULL, NULL, NULL, NULL FROM visited
"""  # noqa: S608 - the f-string splices the constant column lists above


@dataclass(frozen=True)
class ResolvedStep:
    """A waiting step a run finished in place, as it was before: where it ran, when it started, its status."""

    node_id: str
    node_type: str
    version_number: int
    start_time: datetime
    status: str


@dataclass
class RunWritten:
    """What `write_run` found before writing: the steps it finished (by id), and which of the nodes of the run's
    new steps the instance had a step at already."""

    resolved: dict[uuid.UUID, ResolvedStep] = field(default_factory=dict)
    visited_before: set[str] = field(default_factory=set)


async def write_run(
    conn: AsyncConnection,
    instance_id: uuid.UUID,
    *,
    steps: Sequence[Mapping[str, Any]],
    finished_steps: Sequence[Mapping[str, Any]] = (),
    new_waits: Sequence[Mapping[str, Any]],
    status: str,
    current_nodes: list[str],
    context: dict[str, Any],
    exit_reason: str | None,
    now: datetime,
    finished: bool,
) -> RunWritten:
    """Write a run's new steps, the outcome of the waiting steps it resolved (`finished_steps`: id, status,
    input, output, error, end_time), its new waits and the instance's new state in one statement."""
    rows = await (await driver(conn)).fetch(
        _WRITE_RUN,
        json_text([{**step, "ord": n} for n, step in enumerate(steps)]),
        json_text(list(new_waits)),
        status,
        json_text(current_nodes),
        json_text(context),
        exit_reason,
        now if finished else None,
        now,
        instance_id,
        json_text(list(finished_steps)),
        list(dict.fromkeys(str(step["node_id"]) for step in steps)),
    )
    written = RunWritten()
    for row in rows:
        if row["id"] is None:
            written.visited_before.add(row["node_id"])
        else:
            written.resolved[row["id"]] = ResolvedStep(
                row["node_id"], row["node_type"], row["version_number"], row["start_time"], row["status"]
            )
    return written


_steps = cast(Table, ExecutionStep.__table__)
