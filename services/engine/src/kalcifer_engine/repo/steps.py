"""Execution steps (`execution_steps`): the journal of what each run did, written with the run's outcome.

`write_run` is the one statement that ends every run: it inserts the run's steps (in the order they ran, so `seq`
follows it), finishes the steps of the waits this run resolved (one row per visit of a node, SPEC 6.3: a wait's
step is WAITING while it waits and is completed in place), inserts its new `waits` rows and updates the
`flow_instances` row, in one round trip on the driver. `cancel_waiting_steps` ends the steps of waits cancelled
because their instance ended, so a finished instance never shows a waiting step.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, cast

from kalcifer_common.db.models import ExecutionStep
from kalcifer_common.statuses import StepStatus
from sqlalchemy import Table, any_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from kalcifer_engine.repo.connection import driver, json_text, uuid_array

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
# the instance row. Data-modifying CTEs always run, whether or not the outer statement reads them.
_WRITE_RUN = f"""
    WITH new_steps AS (
        INSERT INTO execution_steps ({_names(_STEP_COLUMNS)})
        SELECT {_names(_STEP_COLUMNS)}
        FROM jsonb_to_recordset($1::jsonb) AS s({_STEP_COLUMNS}, ord int)
        ORDER BY ord
        RETURNING 1
    ), finished_steps AS (
        UPDATE execution_steps s
        SET status = u.status, input = u.input, output = u.output, error = u.error, end_time = u.end_time
        FROM jsonb_to_recordset($10::jsonb) AS u({_STEP_UPDATE_COLUMNS})
        WHERE s.id = u.id AND s.instance_id = $9
        RETURNING 1
    ), new_waits AS (
        INSERT INTO waits ({_names(_WAIT_ROW_COLUMNS)})
        SELECT {_names(_WAIT_ROW_COLUMNS)} FROM jsonb_to_recordset($2::jsonb) AS w({_WAIT_ROW_COLUMNS})
        RETURNING 1
    )
    UPDATE flow_instances
    SET status = $3, current_nodes = $4::jsonb, context = $5::jsonb, exit_reason = $6, end_time = $7,
        run_revision = run_revision + 1, lease_until = NULL, update_time = $8
    WHERE id = $9
"""  # noqa: S608 - the f-string splices the constant column lists above


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
) -> None:
    """Write a run's new steps, the outcome of the waiting steps it resolved (`finished_steps`: id, status,
    input, output, error, end_time), its new waits and the instance's new state in one statement."""
    await (await driver(conn)).execute(
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
    )


_steps = cast(Table, ExecutionStep.__table__)


async def cancel_waiting_steps(conn: AsyncConnection, instance_ids: Sequence[uuid.UUID], now: datetime) -> None:
    """The WAITING steps of these (ended) instances become CANCELLED with `end_time`: their waits were cancelled."""
    if instance_ids:
        await conn.execute(
            update(_steps)
            .where(
                _steps.c.instance_id == any_(uuid_array(instance_ids)),
                _steps.c.status == StepStatus.WAITING,
            )
            .values(status=StepStatus.CANCELLED, end_time=now)
        )
